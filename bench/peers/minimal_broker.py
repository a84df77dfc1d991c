"""The yardstick of the broker family: the least a deduplicating transactional path does, in bare code.

Not a peer and not a product: no framework, no retries, no relay for a row a crash leaves behind (so it
skips the crash phase). It measures what the database and broker round trips alone cost on this machine
for the promise our CeleryChannel keeps, so that our p99 is judged against physics, not only against
tools that keep no such promise (dramatiq and Celery write nothing before their publish and record
nothing before their handler).

- **Request** (inside the request's ``atomic()``): INSERT an outbox row on Django's connection; on commit,
  publish the message (persistent, with a publisher confirm) and DELETE the row, as a relay must.
- **Worker** (``python -m bench.peers.minimal_broker``): plain kombu, prefetch ``PREFETCH``; per message, in
  one transaction: INSERT the inbox row (``ON CONFLICT DO NOTHING``), the handler start, the Shipment
  row; COMMIT; ack.
"""

from __future__ import annotations

import json
import time
from functools import partial

#: Created by the producer before its first request (and by the worker, idempotently).
TABLES = (
    "CREATE TABLE IF NOT EXISTS minimal_outbox (id bigserial PRIMARY KEY, body text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS minimal_inbox (key text PRIMARY KEY)",
)
RECORD = "INSERT INTO minimal_inbox (key) VALUES (%s) ON CONFLICT DO NOTHING RETURNING key"
SHIP = "INSERT INTO bench_shop_shipment (order_id, handled_at) VALUES (%s, %s)"


class Enqueuer:
    """The request side: an outbox row in the request's transaction, publish and delete after commit."""

    def __init__(self) -> None:
        from django.db import connection
        from kombu import Connection

        from .config import RABBITMQ_URL, current

        with connection.cursor() as cursor:
            for statement in TABLES:
                cursor.execute(statement)
        self.queue = current().queue
        self.broker = Connection(RABBITMQ_URL, transport_options={"confirm_publish": True})
        self.producer = self.broker.Producer(auto_declare=False)

    def __call__(self, order_id: int) -> None:
        from django.db import connection, transaction

        body = json.dumps({"order_id": order_id})
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO minimal_outbox (body) VALUES (%s) RETURNING id", [body])
            (row_id,) = cursor.fetchone()
        transaction.on_commit(partial(self._publish, row_id, body))

    def _publish(self, row_id: int, body: str) -> None:
        from django.db import connection

        self.producer.publish(
            body, exchange="", routing_key=self.queue, content_type="application/json", delivery_mode=2, retry=False
        )  # returns once the broker confirmed it
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM minimal_outbox WHERE id = %s", [row_id])


def main() -> None:
    import psycopg
    from kombu.message import Message

    from ..config import postgres_params
    from ..raw_consumer import consume
    from .config import current
    from .tools import PREFETCH

    tool = current()
    db = psycopg.connect(**postgres_params(tool.database))  # type: ignore[arg-type]
    for statement in TABLES:
        db.execute(statement)
    db.commit()

    def on_message(message: Message) -> None:
        order_id = int(json.loads(message.body)["order_id"])
        if db.execute(RECORD, (f"order-{order_id}",), prepare=True).fetchone() is not None:
            db.execute(SHIP, (order_id, time.time()), prepare=True)  # the handler: its start, its row
        db.commit()
        message.ack()

    consume(tool.queue, on_message, PREFETCH, "minimal worker ready")


if __name__ == "__main__":
    main()
