"""Celery apps the test channels publish through (RabbitMQ and Redis)."""

from __future__ import annotations

from celery import Celery
from django.conf import settings


def _app(name: str, url: str) -> Celery:
    app = Celery(name)
    app.conf.update(
        broker_url=url,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        broker_connection_retry_on_startup=True,
    )
    return app


rabbit_app = _app("ecotone_tests_rabbit", settings.CELERY_BROKER_URL)
redis_app = _app("ecotone_tests_redis", settings.REDIS_BROKER_URL)
