"""``python -m bench.raw_consumer QUEUE``: the latency baseline's consumer — plain kombu, prefetch 1, ack after mark.

Messages are JSON ``{"seq": …, "sent_at": …}``; each is noted with :func:`bench.probe.mark` (``BENCH_LOG``),
like the ecotone handler notes its start, then acked. Exits on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from typing import Any

from kombu import Connection, Queue
from kombu.message import Message

from .config import RABBITMQ_URL
from .probe import mark

_stop = False


def _on_signal(signum: int, frame: Any) -> None:
    global _stop
    _stop = True


def main() -> None:
    queue_name = sys.argv[1]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def on_message(message: Message) -> None:
        data = json.loads(message.body)
        mark(int(data["seq"]), float(data["sent_at"]))
        message.ack()

    queue = Queue(queue_name, durable=True)
    with (
        Connection(RABBITMQ_URL) as conn,
        conn.Consumer([queue], on_message=on_message, prefetch_count=1, accept=["json"]),
    ):
        print("ready", flush=True)
        while not _stop:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)


if __name__ == "__main__":
    main()
