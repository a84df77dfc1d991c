"""A send that returned survives a PostgreSQL crash: the broker was down, so the row is the message.

An autocommit send publishes first and writes an outbox row only when the broker does not confirm
(``outbox.py``); it returns once that row is committed and flushed. Here the broker is unreachable and
PostgreSQL is crashed (immediate shutdown) the instant ``send()`` returns: the row must be there after
recovery. PostgreSQL only; it runs at the end of the session with the fault suite, as it takes the server
down.
"""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.db import connections

from ecotone_django.models import OutboxMessage
from tests.chaos.faults import _local_cluster, _run, foreign_test_processes
from tests.helpers.processes import spawn_manage, wait_for
from tests.helpers.services import in_ci
from tests.integration.conftest import ALL_DATABASES, worker_env

TENANT = "big_corp"
UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1//"


def _accepts() -> bool:
    connections[TENANT].close()
    try:
        connections[TENANT].ensure_connection()
    except Exception:
        return False
    return True


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_a_send_that_returned_survives_a_postgres_crash(fresh_connections_afterwards):
    if settings.ENGINE != "postgres":
        pytest.skip("crashes the PostgreSQL server")
    if not in_ci() and foreign_test_processes():
        pytest.skip("other test processes use this PostgreSQL server; a crash would fail them")
    name = f"crash-{uuid.uuid4()}"
    sender = spawn_manage(
        "send_then_crash_postgres", name, "--tenant", TENANT, env=worker_env({"RABBITMQ_URL": UNREACHABLE_BROKER})
    )
    try:
        assert sender.wait(60) == 0, sender.output_tail()
        assert "crashed PostgreSQL" in sender.output()
    finally:
        version, cluster = _local_cluster()
        wait_for(lambda: not _accepts(), timeout=30, message="PostgreSQL to go down")
        _run("pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start")
        wait_for(_accepts, timeout=60, interval=0.2, message="PostgreSQL to recover")
    for connection in connections.all(initialized_only=True):
        connection.close()
    assert OutboxMessage.objects.using(TENANT).filter(body__contains=name).count() == 1
