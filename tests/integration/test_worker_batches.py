"""Inside a database-channel batch: the claim across channels and the per-message savepoint.

Both are shortcuts taken for speed (see BENCHMARKS.md) that must not change what happens:

* the database consumer (``DatabaseConsumer.receive``) serves the channels of a worker in turns, batch
  by batch, each claim one index-friendly query: a channel with a backlog cannot hold back the others.
* ``message_block`` (``ecotone_django.transactions``, with Django's internals in use) makes a message's
  savepoint only before its first statement and leaves a successful one for the batch to release (round
  trips saved per message); otherwise it behaves as ``atomic()``: a failure undoes only that message's
  work and drops its ``on_commit`` callbacks, and outside a batch it is a transaction of its own. The
  batch releases them all before it deletes its rows, so that the DELETE runs in the top transaction
  (PostgreSQL leaves the index entries of rows a subtransaction deleted for every later claim to wade
  through until VACUUM).

Runs on every engine.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import DatabaseError, IntegrityError, connections, transaction
from django.test.utils import CaptureQueriesContext

from ecotone_django.clock import now
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import InboxEntry, OutboxMessage
from ecotone_django.storage import inbox as inbox_module
from ecotone_django.transactions import message_block as _message_block
from ecotone_django.worker import Worker
from tests.testapp.messaging import AlwaysFails, RecordAsync
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=["default"], transaction=True)


def queue(
    name: str, channel: str, available_at: datetime, message: type = RecordAsync, handler: str = "record_async"
) -> Envelope:
    envelope = Envelope(message_name(message), {"name": name}, {"tenant": "free_tier"})
    OutboxMessage.objects.using("default").create(
        message_id=envelope.id,
        channel=channel,
        handler=f"tests.testapp.messaging.{handler}",
        message_type=envelope.type,
        tenant="free_tier",
        body=envelope.encode(),
        available_at=available_at,
        created_at=now(),
    )
    return envelope


def test_a_batch_records_its_inbox_rows_at_once_and_isolates_failures_and_duplicates() -> None:
    start = now() - timedelta(minutes=1)
    queue("a", "db", start)
    seen = queue("seen-before", "db", start + timedelta(seconds=1))
    queue("fails", "db", start + timedelta(seconds=2), AlwaysFails, "always_fails")
    queue("b", "db", start + timedelta(seconds=3))
    InboxEntry.objects.using("default").create(
        key=seen.id, handler="tests.testapp.messaging.record_async", handled_at=now()
    )
    worker = Worker(["db"], relay=False)
    with CaptureQueriesContext(connections["default"]) as queries:
        assert worker.consume_database_batch("default") == 4

    assert names() == ["a", "b"]
    assert (worker.stats.handled, worker.stats.duplicates, worker.stats.retried) == (2, 1, 1)
    inbox = InboxEntry.objects.using("default")
    assert inbox.filter(handler="tests.testapp.messaging.record_async").count() == 3  # a, b and the earlier one
    assert not inbox.filter(handler="tests.testapp.messaging.always_fails").exists()  # undone with its failure
    [retry] = OutboxMessage.objects.using("default").all()
    assert (retry.handler, retry.attempts) == ("tests.testapp.messaging.always_fails", 1)
    inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].upper().startswith("INSERT INTO") and "ecotone_inbox" in q["sql"]
    ]
    if inbox_module.supports_record_many("default"):
        assert len(inserts) == 1, inserts  # the whole batch's inbox rows in one statement
    else:
        assert len(inserts) > 1, inserts  # a statement per message (MariaDB)


def test_channels_take_turns_so_that_a_backlog_cannot_hold_back_another_channel() -> None:
    worker = Worker(["db", "db_other"], relay=False)
    worker.claim_size = size = 5
    old = now() - timedelta(hours=1)
    backlog = [f"backlog-{i:02}" for i in range(size * 3)]
    for i, name in enumerate(reversed(backlog)):  # inserted newest first: the order comes from available_at
        queue(name, "db", old + timedelta(seconds=len(backlog) - i))
    queue("other", "db_other", now() - timedelta(seconds=1))  # newer than every backlog row
    queue("later", "db_other", now() + timedelta(hours=1))
    queue("elsewhere", "db_shared_not_consumed", old)

    assert worker.consume_database_batch("default") == size
    assert names() == backlog[:size]  # the channel's earliest rows
    assert worker.consume_database_batch("default") == 1  # db_other's turn, though its row is the newest
    assert "other" in names()
    assert worker.consume_database_batch("default") == size  # db's turn again
    assert worker.consume_database_batch("default") == size  # db_other has nothing due: db goes on
    assert worker.consume_database_batch("default") == 0
    assert names() == sorted([*backlog, "other"])
    assert sorted(OutboxMessage.objects.using("default").values_list("channel", flat=True)) == [
        "db_other",
        "db_shared_not_consumed",
    ]


class Boom(Exception):
    pass


def names() -> list[str]:
    return sorted(Record.objects.using("default").values_list("name", flat=True))


def message(name: str, ran: list[str], *, fail: bool = False, write: bool = True) -> None:
    """One message of a batch: maybe a row, an on_commit callback, then maybe a failure."""
    try:
        with _message_block("default"):
            if write:
                Record.objects.using("default").create(name=name)
            transaction.on_commit(lambda: ran.append(name), using="default")
            if fail:
                raise Boom(name)
    except Boom:
        pass


def test_a_message_that_sends_no_statement_costs_no_savepoint() -> None:
    ran: list[str] = []
    with CaptureQueriesContext(connections["default"]) as queries, transaction.atomic(using="default"):
        message("quiet", ran, write=False)
        message("quiet-failed", ran, write=False, fail=True)  # its callback goes, with nothing to roll back
        message("writes", ran)
        assert not connections["default"].needs_rollback
    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 1, statements
    assert names() == ["writes"]
    assert ran == ["quiet", "writes"]


def test_a_failure_inside_an_inner_block_without_savepoint_leaves_the_batch_usable() -> None:
    with transaction.atomic(using="default"):
        with pytest.raises(Boom), _message_block("default"):
            Record.objects.using("default").create(name="undone")
            with transaction.atomic(using="default", savepoint=False):
                raise Boom("inner")
        assert not connections["default"].needs_rollback
        message("kept", [])
    assert names() == ["kept"]


def test_a_failed_message_undoes_only_its_own_work_and_callbacks() -> None:
    ran: list[str] = []
    with CaptureQueriesContext(connections["default"]) as queries, transaction.atomic(using="default"):
        message("first", ran)
        message("second", ran, fail=True)
        message("third", ran)
        message("fourth", ran, fail=True)  # after a kept savepoint, the rollback still stops at its own
        assert names() == ["first", "third"]
        assert ran == []  # nothing runs before the batch commits
    assert names() == ["first", "third"]
    assert ran == ["first", "third"]
    statements = [q["sql"].upper() for q in queries.captured_queries]
    assert sum(s.startswith("SAVEPOINT") for s in statements) == 4
    assert sum(s.startswith("ROLLBACK TO SAVEPOINT") for s in statements) == 2
    assert sum(s.startswith("RELEASE SAVEPOINT") for s in statements) == 2  # only after the rollbacks


def test_on_postgresql_a_savepoint_goes_out_with_the_first_statement_and_still_undoes_a_failure() -> None:
    if connections["default"].vendor != "postgresql":
        pytest.skip("one query for two statements: psycopg 3 with client-side binding, on PostgreSQL")
    ran: list[str] = []
    with CaptureQueriesContext(connections["default"]) as queries, transaction.atomic(using="default"):
        message("first", ran)
        with pytest.raises(DatabaseError), _message_block("default"):  # fails in the server, after the savepoint
            Record.objects.using("default").create(name="undone")
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        # The first statement itself fails.
        with pytest.raises(DatabaseError), _message_block("default"), connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
        message("second", ran)
    assert names() == ["first", "second"]
    assert ran == ["first", "second"]
    statements = [q["sql"].upper() for q in queries.captured_queries]
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert len(savepoints) == 4, statements
    assert all(";" in s for s in savepoints), "each SAVEPOINT rides in front of its block's first statement"


def _savepoints_open(statements: list[str], upto: int) -> list[str]:
    """The savepoints open before statement ``upto`` (SAVEPOINT pushes; RELEASE and ROLLBACK TO unwind)."""
    stack: list[str] = []
    # A SAVEPOINT may go out in one query with the statement after it (PostgreSQL): "SAVEPOINT s; INSERT …".
    parts = [part.strip() for sql in statements[:upto] for part in sql.split(";") if part.strip()]
    for sql in parts:
        words = sql.split()
        name = words[-1].strip('"`[]') if words else ""
        if sql.startswith("SAVEPOINT"):
            stack.append(name)
        elif sql.startswith("RELEASE SAVEPOINT") and name in stack:
            del stack[stack.index(name) :]
        elif sql.startswith("ROLLBACK TO SAVEPOINT") and name in stack:
            del stack[stack.index(name) + 1 :]
    return stack


def test_the_batch_deletes_its_rows_in_the_top_transaction() -> None:
    start = now() - timedelta(minutes=1)
    for i in range(3):
        queue(f"m{i}", "db", start + timedelta(seconds=i))
    with CaptureQueriesContext(connections["default"]) as queries:
        assert Worker(["db"], relay=False).consume_database_batch("default") == 3
    statements = [q["sql"].strip().upper() for q in queries.captured_queries]
    deletes = [i for i, sql in enumerate(statements) if sql.startswith("DELETE") and "ECOTONE_OUTBOX" in sql]
    assert deletes, statements
    assert all(_savepoints_open(statements, i) == [] for i in deletes), statements
    assert names() == ["m0", "m1", "m2"]


def test_a_rolled_back_batch_keeps_nothing() -> None:
    ran: list[str] = []
    with pytest.raises(Boom), transaction.atomic(using="default"):
        message("first", ran)
        raise Boom("the batch")
    assert names() == []
    assert ran == []


def test_nested_atomic_blocks_inside_a_message_still_work() -> None:
    with transaction.atomic(using="default"):
        with _message_block("default"):
            Record.objects.using("default").create(name="outer")
            with pytest.raises(IntegrityError), transaction.atomic(using="default"):
                Record.objects.using("default").create(pk=Record.objects.using("default").get().pk, name="dup")
            Record.objects.using("default").create(name="after")
        assert not connections["default"].needs_rollback
    assert names() == ["after", "outer"]


def test_outside_a_batch_it_is_a_transaction_of_its_own() -> None:
    ran: list[str] = []
    message("alone", ran)
    message("failed", ran, fail=True)
    assert names() == ["alone"]
    assert ran == ["alone"]
    assert not connections["default"].in_atomic_block
