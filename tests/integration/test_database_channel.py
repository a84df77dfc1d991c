"""The DatabaseChannel with real ``manage.py consume_channel`` processes on the three test databases.

Messages wait in the ``ecotone_outbox`` table of their tenant's database; a worker claims a due row,
runs the handler and deletes the row in one transaction. These tests prove that with real processes:
rollback and commit, SIGKILL mid-handler, two competing consumers, graceful SIGTERM, bad rows,
duplicates, the exit options, tenant placement of every row, and retries ending in a dead letter.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ecotone_django import command_bus, event_bus
from ecotone_django.clock import now
from ecotone_django.conf import get_config
from ecotone_django.messages import Envelope, message_name, uuid7
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage
from ecotone_django.tenancy import alias_for, current_tenant
from ecotone_django.worker import Worker
from tests.helpers.processes import wait_for
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, stats_of
from tests.testapp.messaging import Happened, RecordAsync, Slow
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

MAX_ATTEMPTS: int = get_config().retry.max_attempts  # 3 in tests.settings, with no backoff
RECORD_ASYNC = "tests.testapp.messaging.record_async"
HEALTHY = "tests.testapp.messaging.Subscribers.healthy"
FAILING = "tests.testapp.messaging.Subscribers.failing"
#: One tenant per database: two dedicated ones and a free-tier tenant on the shared ``default``.
TENANT_OF = {"big_corp": "big_corp", "enterprise_x": "enterprise_x", "default": "free_tier"}


def count(model: Any, **filters: Any) -> int:
    """Rows of ``model`` matching ``filters`` over every database."""
    return sum(model.objects.using(alias).filter(**filters).count() for alias in ALL_DATABASES)


def outbox_empty() -> bool:
    return count(OutboxMessage) == 0


def send_async(name: str, tenant: str) -> None:
    command_bus.send(RecordAsync(name), metadata={"tenant": tenant})


def slow_message(tmp_path: Path, name: str) -> tuple[Slow, Path, Path]:
    started, release = tmp_path / f"{name}.started", tmp_path / f"{name}.release"
    return Slow(name, str(started), str(release)), started, release


def outbox_row(alias: str, body: str, handler: str, *, tenant: str = "", message_type: str = "") -> OutboxMessage:
    """Insert a queue row by hand, as a buggy producer or a bad migration might leave it."""
    moment = now()
    return OutboxMessage.objects.using(alias).create(
        message_id=str(uuid7()),
        channel="db",
        handler=handler,
        message_type=message_type,
        tenant=tenant,
        body=body,
        available_at=moment,
        created_at=moment,
    )


# -- atomic outbox --------------------------------------------------------------------------------


def test_rolled_back_send_leaves_no_message_and_a_committed_one_is_handled(worker: WorkerFactory) -> None:
    with pytest.raises(RuntimeError, match="abort"), transaction.atomic(using="big_corp"):
        send_async("rolled-back", "big_corp")
        assert OutboxMessage.objects.using("big_corp").count() == 1  # written in the transaction...
        raise RuntimeError("abort")
    assert outbox_empty()  # ...and gone with it

    with transaction.atomic(using="big_corp"):
        send_async("committed", "big_corp")
    proc = worker("db", "--no-relay")

    wait_for(lambda: Record.objects.using("big_corp").filter(name="committed").exists(), message="committed handled")
    wait_for(outbox_empty, message="outbox drained")
    assert proc.stop() == 0
    # The queue is FIFO per database: had the rolled-back message existed, it would have run first.
    assert count(Record, name="rolled-back") == 0
    assert stats_of(proc.output())["handled"] == 1


# -- crash semantics ------------------------------------------------------------------------------


def test_worker_killed_mid_handler_leaves_the_message_to_the_next_worker_and_the_effect_once(
    worker: WorkerFactory, tmp_path: Path
) -> None:
    message, started, release = slow_message(tmp_path, "X")
    command_bus.send(message, metadata={"tenant": "enterprise_x"})

    first = worker("db", "--no-relay")
    wait_for(started.exists, message="the first worker to be inside the handler")
    assert first.kill9() == -9
    started.unlink()

    # The killed transaction rolled back: no effect, no inbox row, the message still queued.
    assert count(Record, name="X") == 0
    assert count(InboxEntry) == 0
    assert OutboxMessage.objects.using("enterprise_x").count() == 1

    second = worker("db", "--no-relay")
    wait_for(
        lambda: started.exists() and started.read_text() == str(second.pid),
        message="the second worker to run the handler again",
    )
    release.touch()
    wait_for(outbox_empty, message="the message to commit")
    assert second.stop() == 0

    assert [(r.tenant, r.handler) for r in Record.objects.using("enterprise_x").filter(name="X")] == [
        ("enterprise_x", "slow")
    ]
    assert count(Record, name="X") == 1
    assert InboxEntry.objects.using("enterprise_x").count() == 1
    assert stats_of(second.output()) == {
        "handled": 1,
        "duplicates": 0,
        "retried": 0,
        "dead": 0,
        "relayed": 0,
    }


def test_two_consumers_handle_every_message_of_every_database_exactly_once(worker: WorkerFactory) -> None:
    consumers = [worker("db", "--no-relay"), worker("db", "--no-relay")]
    plan = {f"m{i:03}": list(TENANT_OF.values())[i % 3] for i in range(300)}
    with ExitStack() as stack:  # commit each database's 100 messages at once, with both consumers waiting
        for alias in ALL_DATABASES:
            stack.enter_context(transaction.atomic(using=alias))
        for name, tenant in plan.items():
            send_async(name, tenant)

    wait_for(lambda: count(Record) >= 300 and outbox_empty(), timeout=60, message="300 messages handled")
    assert [proc.stop() for proc in consumers] == [0, 0]
    stats = [stats_of(proc.output()) for proc in consumers]

    for alias in ALL_DATABASES:
        rows = list(Record.objects.using(alias).values_list("name", "tenant"))
        assert sorted(rows) == sorted((n, t) for n, t in plan.items() if alias_for(t) == alias), alias
        assert len(rows) == 100
    assert count(Record) == 300
    assert count(InboxEntry) == 300
    assert sum(s["handled"] for s in stats) == 300
    assert [s["duplicates"] for s in stats] == [0, 0]  # no row was ever claimed twice
    print(f"\n[two consumers] {django_settings.ENGINE}: handled {[s['handled'] for s in stats]}")


def test_a_second_consumer_skips_the_row_the_first_one_holds(worker: WorkerFactory, tmp_path: Path) -> None:
    if django_settings.ENGINE == "sqlite":
        pytest.skip("SQLite has no row locks: a writer holds the whole database until it commits")
    first_message, first_started, first_release = slow_message(tmp_path, "first")
    second_message, second_started, second_release = slow_message(tmp_path, "second")
    consumers = [worker("db", "--no-relay"), worker("db", "--no-relay")]
    command_bus.send(first_message, metadata={"tenant": "big_corp"})
    wait_for(first_started.exists, message="a worker inside the first handler")
    command_bus.send(second_message, metadata={"tenant": "big_corp"})  # queued behind a locked row

    # Both are inside a handler at once, in one database: the second claim skipped the locked row.
    pids = {str(proc.pid) for proc in consumers}
    wait_for(
        lambda: second_started.exists() and {first_started.read_text(), second_started.read_text()} == pids,
        message="the other worker inside the second handler",
    )
    first_release.touch()
    second_release.touch()
    wait_for(outbox_empty, message="both messages committed")
    assert [proc.stop() for proc in consumers] == [0, 0]
    assert sorted(Record.objects.using("big_corp").values_list("name", flat=True)) == ["first", "second"]


# -- graceful shutdown ----------------------------------------------------------------------------


def test_sigterm_finishes_the_message_in_hand_then_exits_zero(worker: WorkerFactory, tmp_path: Path) -> None:
    message, started, release = slow_message(tmp_path, "graceful")
    proc = worker("db", "--no-relay", env={"ECOTONE_LOG_LEVEL": "WARNING"})  # it logs that it got SIGTERM
    command_bus.send(message, metadata={"tenant": "big_corp"})
    wait_for(started.exists, message="the worker to be inside the handler")

    proc.terminate()
    wait_for(lambda: "received SIGTERM" in proc.output(), message="the worker to acknowledge SIGTERM")
    assert proc.is_running(), proc.output_tail()
    assert count(Record, name="graceful") == 0  # not committed yet: the handler still runs

    release.touch()
    assert proc.wait(30) == 0, proc.output_tail()
    assert [r.tenant for r in Record.objects.using("big_corp").filter(name="graceful")] == ["big_corp"]
    assert outbox_empty()
    assert stats_of(proc.output())["handled"] == 1


# -- bad input ------------------------------------------------------------------------------------


def test_corrupt_rows_become_dead_letters_in_their_database_and_the_worker_keeps_going(
    worker: WorkerFactory,
) -> None:
    record_type = message_name(RecordAsync)
    unknown = Envelope(record_type, {"name": "lost"}, {"tenant": "big_corp"})
    misfit = Envelope(record_type, {"name": 42, "colour": "red"}, {"tenant": "free_tier"})
    outbox_row("enterprise_x", "{not json", RECORD_ASYNC, tenant="enterprise_x")
    outbox_row("big_corp", unknown.encode(), "tests.testapp.messaging.no_such_handler", tenant="big_corp")
    outbox_row("default", misfit.encode(), RECORD_ASYNC, tenant="free_tier", message_type=record_type)

    proc = worker("db", "--no-relay")
    wait_for(lambda: count(DeadLetter) == 3 and outbox_empty(), message="three dead letters")

    undecodable = DeadLetter.objects.using("enterprise_x").get()
    assert undecodable.reason.startswith("undecodable message"), undecodable.reason
    assert (undecodable.body, undecodable.handler, undecodable.channel) == ("{not json", RECORD_ASYNC, "db")

    no_handler = DeadLetter.objects.using("big_corp").get()
    assert "no_such_handler" in no_handler.reason and "no handler" in no_handler.reason, no_handler.reason
    assert (no_handler.message_id, no_handler.tenant, no_handler.exception_type) == (
        unknown.id,
        "big_corp",
        "NoHandlerError",
    )

    does_not_fit = DeadLetter.objects.using("default").get()
    assert "cannot convert" in does_not_fit.reason and "RecordAsync" in does_not_fit.reason, does_not_fit.reason
    assert (does_not_fit.message_id, does_not_fit.tenant, does_not_fit.handler) == (
        misfit.id,
        "free_tier",
        RECORD_ASYNC,
    )
    assert Envelope.decode(does_not_fit.body) == misfit  # the envelope is kept whole for a replay

    assert proc.is_running(), proc.output_tail()
    send_async("good", "enterprise_x")
    wait_for(lambda: Record.objects.using("enterprise_x").filter(name="good").exists(), message="the good message")
    assert count(Record) == 1
    assert proc.stop() == 0
    assert stats_of(proc.output()) == {
        "handled": 1,
        "duplicates": 0,
        "retried": 0,
        "dead": 3,
        "relayed": 0,
    }


def test_one_message_delivered_twice_is_handled_once(worker: WorkerFactory) -> None:
    send_async("twice", "big_corp")
    original = OutboxMessage.objects.using("big_corp").get()
    outbox_row("big_corp", original.body, original.handler, tenant="big_corp", message_type=original.message_type)

    proc = worker("db", "--no-relay", "--stop-when-empty", ready=False)
    assert proc.wait(30) == 0, proc.output_tail()

    assert stats_of(proc.output())["handled"] == 1
    assert stats_of(proc.output())["duplicates"] == 1
    assert count(Record, name="twice") == 1
    assert list(InboxEntry.objects.using("big_corp").values_list("key", "handler")) == [
        (original.message_id, RECORD_ASYNC)
    ]
    assert outbox_empty()


# -- exit options ---------------------------------------------------------------------------------


def test_stop_when_empty_exits_zero_once_no_message_is_due(worker: WorkerFactory) -> None:
    for i, tenant in enumerate(TENANT_OF.values()):
        send_async(f"due-{i}", tenant)
    command_bus.send(RecordAsync("later"), metadata={"tenant": "big_corp", "delay": timedelta(hours=1)})

    proc = worker("db", "--no-relay", "--stop-when-empty", ready=False)
    assert proc.wait(30) == 0, proc.output_tail()

    assert stats_of(proc.output())["handled"] == 3
    assert count(Record) == 3 and count(Record, name="later") == 0
    assert [r.message_type for r in OutboxMessage.objects.using("big_corp").all()] == [message_name(RecordAsync)]
    assert count(OutboxMessage) == 1  # the delayed message waits for its time; the worker did not


def test_limit_exits_after_that_many_messages(worker: WorkerFactory) -> None:
    for i in range(6):
        send_async(f"n{i}", list(TENANT_OF.values())[i % 3])

    proc = worker("db", "--no-relay", "--limit", "4", ready=False)
    assert proc.wait(30) == 0, proc.output_tail()

    assert stats_of(proc.output())["handled"] == 4
    assert count(Record) == 4
    assert count(OutboxMessage) == 2


# -- retries and dead letters ---------------------------------------------------------------------


def test_failing_subscriber_is_retried_then_dead_lettered_without_rerunning_the_healthy_one(
    worker: WorkerFactory,
) -> None:
    event_bus.publish(Happened("evt"), metadata={"tenant": "big_corp"})
    published = {row.handler: row.message_id for row in OutboxMessage.objects.using("big_corp").all()}
    assert set(published) == {HEALTHY, FAILING}  # one copy per asynchronous subscriber

    proc = worker("db", "--no-relay", "--stop-when-empty", ready=False)
    assert proc.wait(30) == 0, proc.output_tail()

    # The healthy copy ran once; the failing one ran MAX_ATTEMPTS times (every failure rolled back).
    assert stats_of(proc.output()) == {
        "handled": 1,
        "duplicates": 0,
        "retried": MAX_ATTEMPTS - 1,
        "dead": 1,
        "relayed": 0,
    }
    assert [r.handler for r in Record.objects.using("big_corp").filter(name="evt").order_by("handler")] == [
        "healthy",
        "inline",
    ]
    assert list(InboxEntry.objects.using("big_corp").values_list("handler", flat=True)) == [HEALTHY]
    letter = DeadLetter.objects.using("big_corp").get()
    assert (letter.handler, letter.attempts, letter.tenant, letter.message_id) == (
        FAILING,
        MAX_ATTEMPTS,
        "big_corp",
        published[FAILING],
    )
    assert letter.reason.startswith(f"failed {MAX_ATTEMPTS} time(s): RuntimeError"), letter.reason
    assert letter.exception_type == "RuntimeError"
    assert "Traceback (most recent call last)" in letter.traceback
    assert "subscriber always fails for evt" in letter.traceback
    assert count(DeadLetter) == 1 and outbox_empty()


# -- every row in its tenant's database (property) ------------------------------------------------

tenants = st.one_of(
    st.sampled_from(["big_corp", "enterprise_x"]),
    st.from_regex(r"free_[a-z0-9]{1,8}", fullmatch=True),
)
sends = st.lists(st.tuples(tenants, st.sampled_from(["command", "event"])), min_size=1, max_size=8)


def _clear_all() -> None:
    for alias in ALL_DATABASES:
        for model in (Record, OutboxMessage, InboxEntry, DeadLetter):
            model.objects.using(alias).all().delete()


@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sends=sends)
def test_every_row_of_a_tenant_stays_in_its_database(sends: list[tuple[str, str]]) -> None:
    _clear_all()
    for i, (tenant, kind) in enumerate(sends):
        if kind == "command":
            send_async(f"c{i}", tenant)
        else:
            event_bus.publish(Happened(f"e{i}"), metadata={"tenant": tenant})
    queued = {alias: list(OutboxMessage.objects.using(alias).all()) for alias in ALL_DATABASES}
    for alias, rows in queued.items():
        assert {alias_for(row.tenant) for row in rows} <= {alias}
        assert all(Envelope.decode(row.body).headers["tenant"] == row.tenant for row in rows)

    Worker(["db"], stop_when_empty=True, relay=False).run()

    assert current_tenant() is None
    for alias in ALL_DATABASES:
        mine = [(i, tenant, kind) for i, (tenant, kind) in enumerate(sends) if alias_for(tenant) == alias]
        expected_records = {(f"c{i}", "record_async", t) for i, t, k in mine if k == "command"}
        for handler in ("healthy", "inline"):  # the synchronous subscriber ran in the publisher's transaction
            expected_records |= {(f"e{i}", handler, t) for i, t, k in mine if k == "event"}
        assert set(Record.objects.using(alias).values_list("name", "handler", "tenant")) == expected_records
        assert Record.objects.using(alias).count() == len(expected_records)
        assert not OutboxMessage.objects.using(alias).exists()
        handled = {(row.message_id, row.handler) for row in queued[alias] if row.handler != FAILING}
        assert set(InboxEntry.objects.using(alias).values_list("key", "handler")) == handled
        dead = {(row.message_id, row.tenant, FAILING, MAX_ATTEMPTS) for row in queued[alias] if row.handler == FAILING}
        letters = DeadLetter.objects.using(alias).values_list("message_id", "tenant", "handler", "attempts")
        assert set(letters) == dead
        assert DeadLetter.objects.using(alias).count() == len(dead)


# -- throughput (measured, not asserted) ----------------------------------------------------------


def test_throughput_of_one_worker_process(worker: WorkerFactory) -> None:
    total = 2000 if django_settings.ENGINE == "postgres" else 600
    proc = worker("db", "--no-relay")
    with ExitStack() as stack:
        for alias in ALL_DATABASES:
            stack.enter_context(transaction.atomic(using=alias))
        for i in range(total):
            send_async(f"t{i}", list(TENANT_OF.values())[i % 3])
    started = time.monotonic()
    wait_for(outbox_empty, timeout=120, interval=0.02, message=f"{total} messages handled")
    elapsed = time.monotonic() - started
    assert proc.stop() == 0
    assert count(Record) == total
    print(
        f"\n[throughput] one consume_channel db process on {django_settings.ENGINE}: {total} RecordAsync "
        f"over 3 databases in {elapsed:.2f} s = {total / elapsed:.0f} messages/s"
    )
