"""Celery as a Django team runs it: ``transaction.on_commit(lambda: task.delay(...))``, ``acks_late``.

``celery -A bench.peers.celery_peer worker --pool solo -Q <queue>`` (one process). The task runs the
shared handler body through the Django ORM, so the worker sets Django up first.
"""

from __future__ import annotations

import os
from functools import partial

import django
from celery import Celery
from django.db import transaction

from .config import RABBITMQ_URL, current

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")
django.setup()

from .work import ship  # noqa: E402 - needs the app registry

QUEUE = current().queue
#: Celery's prefetch window for this load (with concurrency 1 the window equals the multiplier).
PREFETCH_MULTIPLIER = int(os.environ.get("ECOTONE_BENCH_CELERY_PREFETCH", "32"))

app = Celery("ecotone_bench_peers")
app.conf.update(
    broker_url=RABBITMQ_URL,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,  # no pidbox queue: another worker on this host may hold it
    broker_connection_retry_on_startup=True,
)

# Celery's Django fix-up closes the database connection before and after every task unless told to
# reuse it: a new connection per task would measure PostgreSQL's connection set-up, not Celery.
app.conf.CELERY_DB_REUSE_MAX = 100_000


@app.task(name="bench.peers.ship", acks_late=True, ignore_result=True)
def ship_order(order_id: int) -> None:
    ship(order_id)


def enqueue(order_id: int) -> None:
    transaction.on_commit(partial(ship_order.delay, order_id))
