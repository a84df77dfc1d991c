"""The claim lease: rows a stopped worker claimed go to another worker, and every effect happens once.

Real processes on PostgreSQL or MariaDB: worker A claims a batch and is frozen with SIGSTOP in the middle
of it (its first handler blocks until released, so the batch is certainly open). Worker B handles every
row of that batch once the lease has run out, while A is still stopped. Then A resumes: its transaction
was ended by the database, so nothing of its batch commits, and it goes on working.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext

from ecotone_django import command_bus
from ecotone_django.channels.database import DatabaseConsumer
from ecotone_django.messages import Envelope
from ecotone_django.models import InboxEntry, OutboxMessage
from tests.helpers.processes import wait_for
from tests.integration.conftest import ALL_DATABASES, WorkerFactory
from tests.testapp.messaging import RecordAsync, Slow
from tests.testapp.models import Record

pytestmark = [pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)]

LEASE = 2.0
BATCH = 30
RECORD_ASYNC = "tests.testapp.messaging.record_async"


def state(pid: int) -> str:
    """The process state letter of ``pid`` (``T``: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_stopped_workers_claim_goes_to_another_worker_after_the_lease_and_counts_once(
    worker: WorkerFactory, tmp_path: Path
) -> None:
    if settings.ENGINE == "sqlite":
        pytest.skip("SQLite serialises writers: no row claims, no lease")
    started, release = tmp_path / "slow.started", tmp_path / "slow.release"
    with transaction.atomic(using="big_corp"):
        command_bus.send(Slow("lease-slow", str(started), str(release)), metadata={"tenant": "big_corp"})
        for i in range(BATCH):
            command_bus.send(RecordAsync(f"lease-{i:02}"), metadata={"tenant": "big_corp"})
    env = {"ECOTONE_TEST_CLAIM_LEASE": str(LEASE)}
    a = worker("db", "--no-relay", env=env)
    wait_for(started.exists, message="worker A to be in the middle of its batch")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: state(a.pid) == "T", message="worker A stopped")
        release.touch()  # whoever runs the slow handler next returns at once
        stopped_at = time.monotonic()
        b = worker("db", "--no-relay", env=env)

        def all_handled() -> bool:
            return Record.objects.using("big_corp").filter(name__startswith="lease-").count() == BATCH + 1

        wait_for(all_handled, timeout=LEASE + 30, message="worker B to handle worker A's claimed rows")
        taken_over = time.monotonic() - stopped_at
        assert state(a.pid) == "T", "worker A resumed before worker B took over"
        assert taken_over >= LEASE * 0.9, f"rows taken over after {taken_over:.2f} s, before the {LEASE} s lease"
        print(f"worker A's claim handled by worker B {taken_over:.2f} s after A stopped (lease {LEASE} s)")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_for(lambda: "polling 'big_corp' failed" in a.output(), message="worker A to notice its claim ended")
    with transaction.atomic(using="big_corp"):
        command_bus.send(RecordAsync("lease-after"), metadata={"tenant": "big_corp"})
    wait_for(
        lambda: Record.objects.using("big_corp").filter(name="lease-after").exists(),
        message="the workers to go on after A resumed",
    )
    assert a.is_running(), a.output_tail()
    assert a.stop() == 0 and b.stop() == 0, a.output_tail() + b.output_tail()

    counts = dict(
        Record.objects.using("big_corp")
        .filter(name__startswith="lease-")
        .values("name")
        .annotate(n=Count("id"))
        .values_list("name", "n")
    )
    assert len(counts) == BATCH + 2, sorted(counts)
    assert set(counts.values()) == {1}, {name: n for name, n in counts.items() if n != 1}
    assert InboxEntry.objects.using("big_corp").count() == BATCH + 2
    assert not OutboxMessage.objects.using("big_corp").exists()


def _lease_ms(alias: str) -> str:
    """The claim lease now in force on ``alias``: PostgreSQL in milliseconds, MariaDB in seconds."""
    with connections[alias].cursor() as cursor:
        if connections[alias].vendor == "postgresql":
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'idle_in_transaction_session_timeout'")
        else:
            cursor.execute("SELECT @@SESSION.idle_transaction_timeout")
        return str(cursor.fetchone()[0])


def test_the_claim_itself_holds_the_lease_on_postgresql_for_its_transaction_only() -> None:
    if settings.ENGINE == "sqlite":
        pytest.skip("SQLite serialises writers: no row claims, no lease")
    with transaction.atomic(using="big_corp"):
        command_bus.send(RecordAsync("lease-claim"), metadata={"tenant": "big_corp"})
    consumer = DatabaseConsumer(["db_other", "db"])
    consumer.lease = 7.5
    postgres = connections["big_corp"].vendor == "postgresql"
    before = _lease_ms("big_corp")
    with transaction.atomic(using="big_corp"):
        with CaptureQueriesContext(connections["big_corp"]) as queries:
            [delivery] = consumer.receive("big_corp", 10)
        assert (delivery.handler_id, delivery.channel, delivery.attempts) == (RECORD_ASYNC, "db", 0)
        assert Envelope.decode(delivery.body).payload == {"name": "lease-claim"}
        statements = [q["sql"] for q in queries.captured_queries]
        if postgres:  # one statement per channel looked at (db_other had nothing), each carrying the lease
            assert len(statements) == 2 and all("set_config" in sql for sql in statements), statements
            assert _lease_ms("big_corp") == "7500"
        else:  # MariaDB: the session's idle-transaction timeout, set before the claim
            assert "idle_transaction_timeout" in statements[0] and len(statements) == 3, statements
            assert _lease_ms("big_corp") == "8"
    if postgres:
        assert _lease_ms("big_corp") == before, "the lease outlived the claiming transaction"
