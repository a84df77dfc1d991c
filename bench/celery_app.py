"""The Celery app: the broker of the bench's Celery channels, and the bare no-op task of the baseline.

``celery -A bench.celery_app worker --pool solo -Q <bare queue>`` runs :func:`noop` — Celery's own
worker with ``acks_late``, doing what the bench handlers do (:func:`bench.probe.mark`) and nothing else.
It needs no Django.
"""

from __future__ import annotations

from celery import Celery

from .config import RABBITMQ_URL
from .probe import mark

app = Celery("ecotone_bench")
app.conf.update(
    broker_url=RABBITMQ_URL,
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    worker_enable_remote_control=False,  # no pidbox queue: another Celery worker on this host may hold it
    broker_connection_retry_on_startup=True,
)

NOOP = "bench.noop"


@app.task(name=NOOP, acks_late=True, ignore_result=True)
def noop(seq: int, sent_at: float) -> None:
    mark(seq, sent_at)
