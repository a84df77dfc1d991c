"""``consume_channel --stop-when-empty``: the worker exits 0 only once nothing due is left.

"Empty" means: no due row in any database the worker serves (claimed by another consumer or not), checked
after every consumer thread has finished its batch, and checked again to close the race with commits that
land meanwhile; on a broker channel, no message ready in the queue, none held by this worker, and no outbox
row waiting for the relay. Delayed rows that are not yet due do not count.

Each test sends its messages the way an application does (one transaction per message, with a business row)
and counts from the databases that every message sent was handled exactly once.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import close_old_connections, connections, transaction

from ecotone_django import command_bus
from ecotone_django.clock import now
from ecotone_django.models import OutboxMessage
from ecotone_django.tenancy import alias_for, tenant_context
from tests.helpers.processes import wait_for
from tests.integration.broker_fixtures import rabbit_queue
from tests.integration.conftest import ALL_DATABASES, WorkerFactory
from tests.testapp.messaging import RecordAsync, RecordOnRabbit
from tests.testapp.models import Record

__all__ = ["rabbit_queue"]

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

TENANTS = ("big_corp", "enterprise_x", "free_tier")  # one per database: two dedicated, one on "default"
MESSAGES = 5_000
DELAYED = 12
EXIT_TIMEOUT = 240.0

_FINAL = re.compile(r"stopped: queue empty \(handled (\d+), due (\d+), delayed (\d+)\)")


def _needs_skip_locked() -> None:
    if settings.ENGINE == "sqlite":
        pytest.skip("SQLite serialises writers: consumers never skip each other's rows")


def place_order(name: str, tenant: str, message: object) -> None:
    """What a view does: a business row and the message, in one transaction on the tenant's database."""
    with tenant_context(tenant), transaction.atomic(using=alias_for(tenant)):
        Record.objects.create(name=name, handler="order", tenant=tenant)
        command_bus.send(message, metadata={"tenant": tenant})


def send_delayed(count: int) -> None:
    for i in range(count):
        tenant = TENANTS[i % len(TENANTS)]
        command_bus.send(RecordAsync(f"later-{i}"), metadata={"tenant": tenant, "delay": timedelta(hours=1)})


def handled(handler: str) -> dict[str, int]:
    """How many times each message name was handled by ``handler``, over every database."""
    seen: dict[str, int] = {}
    for alias in ALL_DATABASES:
        for name in Record.objects.using(alias).filter(handler=handler).values_list("name", flat=True):
            seen[name] = seen.get(name, 0) + 1
    return seen


def handled_count(handler: str) -> int:
    return sum(Record.objects.using(alias).filter(handler=handler).count() for alias in ALL_DATABASES)


def due_rows() -> int:
    moment = now()
    return sum(OutboxMessage.objects.using(alias).filter(available_at__lte=moment).count() for alias in ALL_DATABASES)


def final_line(output: str) -> tuple[int, int, int]:
    found = _FINAL.findall(output)
    assert found, f"no 'stopped: queue empty (…)' line\n--- output ---\n{output[-4000:]}"
    handled_count, due, delayed = found[-1]
    return int(handled_count), int(due), int(delayed)


def assert_each_handled_once(handler: str, names: list[str]) -> None:
    seen = handled(handler)
    lost = [name for name in names if name not in seen]
    doubled = {name: n for name, n in seen.items() if n > 1}
    assert not lost, f"{len(lost)} message(s) never handled, e.g. {lost[:5]}"
    assert not doubled, f"{len(doubled)} message(s) handled more than once, e.g. {list(doubled.items())[:5]}"
    assert len(seen) == len(names)


@contextmanager
def held_row(alias: str, name: str) -> Iterator[threading.Event]:
    """Lock the queue row of message ``name`` in ``alias`` from another connection until the event is set.

    The row stands for one that another consumer has claimed and is still handling: it is due, so a worker
    told to stop when empty must wait for it rather than take the queue for empty.
    """
    locked, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic(using=alias):
                rows = OutboxMessage.objects.using(alias).select_for_update().filter(body__contains=f'"{name}"')
                assert len(rows) == 1, f"expected one queue row of {name!r} in {alias!r}, found {len(rows)}"
                locked.set()
                release.wait(EXIT_TIMEOUT)
        except BaseException as exc:
            errors.append(exc)
            locked.set()
        finally:
            close_old_connections()
            connections.close_all()

    thread = threading.Thread(target=hold, name="held-row")
    thread.start()
    locked.wait(30)
    try:
        assert not errors, errors
        yield release
    finally:
        release.set()
        thread.join(30)


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_a_backlog_is_drained_completely_before_the_worker_exits(worker: WorkerFactory, concurrency: int) -> None:
    """The report: 5,000 messages committed one per transaction, drained with --stop-when-empty."""
    _needs_skip_locked()
    names = [f"m{i:05}" for i in range(MESSAGES)]
    for i, name in enumerate(names):
        place_order(name, TENANTS[i % len(TENANTS)], RecordAsync(name))
    send_delayed(DELAYED)

    proc = worker("db", "--no-relay", "--stop-when-empty", "--concurrency", str(concurrency), ready=False)
    assert proc.wait(EXIT_TIMEOUT) == 0, proc.output_tail()

    assert_each_handled_once("record_async", names)
    assert due_rows() == 0
    assert final_line(proc.output()) == (MESSAGES, 0, DELAYED)
    assert sum(OutboxMessage.objects.using(alias).count() for alias in ALL_DATABASES) == DELAYED


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_messages_sent_while_the_worker_drains_are_all_handled(worker: WorkerFactory, concurrency: int) -> None:
    """A row another consumer holds is still due: the worker waits for it, and meanwhile more messages arrive.

    The held row keeps the queue from ever being empty until every message has been sent, so a worker that
    exits before handling all of them exited while messages were due.
    """
    _needs_skip_locked()
    place_order("gate", "free_tier", RecordAsync("gate"))
    send_delayed(DELAYED)
    names = [f"s{i:05}" for i in range(MESSAGES)]
    with held_row("default", "gate") as release:
        proc = worker("db", "--no-relay", "--stop-when-empty", "--concurrency", str(concurrency))
        for i, name in enumerate(names):
            place_order(name, TENANTS[i % len(TENANTS)], RecordAsync(name))
        assert proc.is_running(), f"the worker exited while a due row was held\n{proc.output_tail()}"
        wait_for(lambda: handled_count("record_async") >= MESSAGES, timeout=EXIT_TIMEOUT, message="the messages sent")
        assert proc.is_running(), f"the worker exited while a due row was held\n{proc.output_tail()}"
        release.set()

    assert proc.wait(EXIT_TIMEOUT) == 0, proc.output_tail()
    assert_each_handled_once("record_async", [*names, "gate"])
    assert due_rows() == 0
    assert final_line(proc.output()) == (MESSAGES + 1, 0, DELAYED)


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_broker_channel_exits_only_once_queue_and_outbox_are_empty(
    worker: WorkerFactory, rabbit_queue: str, concurrency: int
) -> None:
    """RabbitMQ: messages go out after commit while the worker drains; an outbox row not yet relayed counts.

    The held row is a due outbox row that another relay holds: the worker must not take the queue for empty
    while it waits, and it exits once its own relay has published the row and the message was handled.
    """
    gate_due = now() + timedelta(seconds=1)
    command_bus.send(RecordOnRabbit("gate"), metadata={"tenant": "free_tier", "deliver_at": gate_due})
    names = [f"r{i:05}" for i in range(MESSAGES)]
    with held_row("default", "gate") as release:
        wait_for(lambda: now() > gate_due, message="the gate row to fall due")
        proc = worker("rabbit", "--stop-when-empty", "--concurrency", str(concurrency))
        for i, name in enumerate(names):
            place_order(name, TENANTS[i % len(TENANTS)], RecordOnRabbit(name))
        wait_for(
            lambda: handled_count("record_on_rabbit") >= MESSAGES, timeout=EXIT_TIMEOUT, message="the messages sent"
        )
        assert proc.is_running(), f"the worker exited while a due outbox row was held\n{proc.output_tail()}"
        release.set()

    assert proc.wait(EXIT_TIMEOUT) == 0, proc.output_tail()
    assert_each_handled_once("record_on_rabbit", [*names, "gate"])
    assert sum(OutboxMessage.objects.using(alias).count() for alias in ALL_DATABASES) == 0
    assert final_line(proc.output())[:2] == (MESSAGES + 1, 0)
