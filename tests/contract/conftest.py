"""The transport contract uses the integration suite's worker processes and service checks."""

from __future__ import annotations

from tests.contract.fixtures import kafka_queue, kafka_server, sqs_queue, sqs_server
from tests.integration.broker_fixtures import rabbit_queue, redis_queue
from tests.integration.conftest import _database_service, worker

__all__ = [
    "_database_service",
    "kafka_queue",
    "kafka_server",
    "rabbit_queue",
    "redis_queue",
    "sqs_queue",
    "sqs_server",
    "worker",
]
