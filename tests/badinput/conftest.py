"""The catalogue uses the integration suite's fixtures: real databases, real brokers, real worker processes."""

from tests.integration.broker_fixtures import rabbit_queue
from tests.integration.conftest import _database_service, worker

__all__ = ["_database_service", "rabbit_queue", "worker"]
