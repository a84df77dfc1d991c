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
from collections.abc import Callable
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


def consume(queue_name: str, on_message: Callable[[Message], None], prefetch: int, ready: str) -> None:
    """Hand every delivery of ``queue_name`` to ``on_message`` (plain kombu) until SIGTERM or SIGINT.

    Prints ``ready`` once the consumer is subscribed. Also the consume loop of the peer comparison's
    yardstick (:mod:`bench.peers.minimal_broker`).
    """
    stop = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with (
        Connection(RABBITMQ_URL) as conn,
        conn.Consumer(
            [Queue(queue_name, durable=True)], on_message=on_message, prefetch_count=prefetch, accept=["json"]
        ),
    ):
        print(ready, flush=True)
        while not stop:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)


def main() -> None:
    queue_name = sys.argv[1]
    inbox = None
    if "--inbox" in sys.argv[2:]:
        inbox = psycopg.connect(**postgres_params(DATABASE_NAMES["default"]))  # type: ignore[arg-type]

    def on_message(message: Message) -> None:
        data = json.loads(message.body)
        if inbox is None:
            mark(int(data["seq"]), float(data["sent_at"]))
        else:
            inbox.execute(RECORD, (f"raw-{data['seq']}",), prepare=True)
            mark(int(data["seq"]), float(data["sent_at"]))
            inbox.commit()
        message.ack()

    consume(queue_name, on_message, 1, "ready")


if __name__ == "__main__":
    main()
