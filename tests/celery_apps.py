"""Celery apps the test channels publish through (RabbitMQ, Redis, SQS on moto, Kafka on Tansu)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from django.conf import settings


def _app(name: str, url: str, **conf: Any) -> Celery:
    app = Celery(name)
    app.conf.update(
        broker_url=url,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        broker_connection_retry_on_startup=True,
        **conf,
    )
    return app


rabbit_app = _app("ecotone_tests_rabbit", settings.CELERY_BROKER_URL)
# A message a killed consumer held comes back after the visibility timeout (kombu's default: an hour);
# the transport contract's redelivery test waits for it, so it is short here and swept on every idle poll.
redis_app = _app(
    "ecotone_tests_redis",
    settings.REDIS_BROKER_URL,
    broker_transport_options={"visibility_timeout": 5, "unacked_restore_throttle": 1},
)
# SQS and Kafka have no broadcast for Celery's remote control (pidbox): it is off.
sqs_app = _app(
    "ecotone_tests_sqs",
    settings.SQS_BROKER_URL,
    worker_enable_remote_control=False,
    broker_transport_options={
        "region": "us-east-1",
        "is_secure": False,
        "wait_time_seconds": 1,  # long polling, short enough for a quick SIGTERM
        "visibility_timeout": 5,  # a killed worker's message comes back within seconds
    },
)
kafka_app = _app(
    "ecotone_tests_kafka",
    settings.KAFKA_BROKER_URL,
    worker_enable_remote_control=False,
    broker_transport_options={
        "wait_time_seconds": 1,
        # A killed consumer leaves its group (and its partition to the next consumer) within seconds.
        "kafka_consumer_config": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000},
        # A record the broker does not confirm within 3 s fails (librdkafka's default waits 5 minutes).
        "kafka_producer_config": {"message.timeout.ms": 3000},
    },
)
