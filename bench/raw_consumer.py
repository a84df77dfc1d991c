"""``python -m bench.raw_consumer QUEUE [--inbox]``: the latency baseline's consumer — plain kombu, prefetch 1.

Messages are JSON ``{"seq": …, "sent_at": …}``; each is noted with :func:`bench.probe.mark` (``BENCH_LOG``),
like the ecotone handler notes its start, then acked. With ``--inbox`` it does first what any consumer
that handles each message once must do: in a transaction on the bench's database, INSERT the message's
inbox row (bare psycopg, a prepared statement); then the mark, COMMIT, ack. Exits on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from typing import Any

import psycopg
from kombu import Connection, Queue
from kombu.message import Message

from .config import DATABASE_NAMES, RABBITMQ_URL, postgres_params
from .probe import mark

RECORD = (
    "INSERT INTO ecotone_inbox (key, handler, handled_at) VALUES (%s, 'bench.raw_consumer', now()) "
    "ON CONFLICT DO NOTHING RETURNING key"
)

_stop = False


def _on_signal(signum: int, frame: Any) -> None:
    global _stop
    _stop = True


def main() -> None:
    queue_name = sys.argv[1]
    inbox = None
    if "--inbox" in sys.argv[2:]:
        inbox = psycopg.connect(**postgres_params(DATABASE_NAMES["default"]))  # type: ignore[arg-type]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def on_message(message: Message) -> None:
        data = json.loads(message.body)
        if inbox is None:
            mark(int(data["seq"]), float(data["sent_at"]))
        else:
            inbox.execute(RECORD, (f"raw-{data['seq']}",), prepare=True)
            mark(int(data["seq"]), float(data["sent_at"]))
            inbox.commit()
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
