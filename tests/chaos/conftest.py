"""The fault suite uses the integration suite's fixtures: real databases, real brokers, real worker processes.

The bounded chaos test restarts the PostgreSQL and RabbitMQ servers, so it runs last in its session, and the
connections this process holds are closed after it (they died with the server; Django opens new ones lazily).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.integration.broker_fixtures import rabbit_queue
from tests.integration.conftest import _database_service, worker

__all__ = ["_database_service", "fresh_connections_afterwards", "rabbit_queue", "worker"]

CHAOS_TESTS = ("tests/chaos/test_send_durability.py::", "tests/chaos/test_chaos.py::")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the server-restarting tests to the end of the session, after every test that needs the servers."""
    chaos = [item for item in items if item.nodeid.startswith(CHAOS_TESTS)]
    if chaos:
        items[:] = [item for item in items if not item.nodeid.startswith(CHAOS_TESTS)] + chaos


@pytest.fixture
def fresh_connections_afterwards() -> Iterator[None]:
    yield
    from django.db import connections

    from ecotone_django.channels import channels

    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            connection.close()
    channels.reset()  # publishing connections to the restarted broker
