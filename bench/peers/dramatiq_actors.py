"""dramatiq with django_dramatiq on RabbitMQ: ``manage.py rundramatiq --processes 1 --threads 1``.

dramatiq acknowledges a message after its actor returns. A send inside a transaction would reach the
worker before the order commits, so the request sends on commit, as Celery's users do.
"""

from __future__ import annotations

from functools import partial

import dramatiq
from django.db import transaction

from .config import current
from .work import ship

QUEUE = current().queue


@dramatiq.actor(actor_name="bench_peers_ship", queue_name=QUEUE)
def ship_order(order_id: int) -> None:
    ship(order_id)


def enqueue(order_id: int) -> None:
    transaction.on_commit(partial(ship_order.send, order_id))
