"""One tenant database down while the others are up (PostgreSQL, a real worker process).

The tenant database ``enterprise_x`` refuses connections for a while (``ALTER DATABASE … ALLOW_CONNECTIONS
false`` and its sessions terminated). A worker serving every tenant keeps handling the other tenants'
messages at the rate it had before the outage; ``enterprise_x``'s messages wait in its database, are
neither lost nor dead-lettered, and are handled once, after it is back.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count

from ecotone_django import command_bus
from ecotone_django.channels import channels
from ecotone_django.clock import now
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import DeadLetter, OutboxMessage
from tests.helpers.processes import wait_for
from tests.integration.broker_fixtures import rabbit_queue
from tests.integration.conftest import ALL_DATABASES, WorkerFactory
from tests.testapp.messaging import RecordAsync, RecordOnRabbit
from tests.testapp.models import Record

__all__ = ["rabbit_queue"]

pytestmark = [pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)]

DOWN = "enterprise_x"
OTHERS = {"acme": "default", "big_corp": "big_corp"}  # tenant → its database
PER_TENANT = 400
WAITING = 20


@contextlib.contextmanager
def database_down(alias: str) -> Iterator[None]:
    """``alias`` refuses new connections and loses its sessions for the block; back afterwards, whatever happens."""
    name = connections[alias].settings_dict["NAME"]
    connections[alias].close()
    with connections["default"].cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
    try:
        yield
    finally:
        with connections["default"].cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def handled(prefix: str) -> int:
    return sum(Record.objects.using(alias).filter(name__startswith=prefix).count() for alias in OTHERS.values())


def rate_of_the_others(prefix: str) -> float:
    """PER_TENANT messages for each other tenant, all due at one instant: messages per second from the first
    handled to the last (the worker's rate, not the sender's).

    Not from the instant they fall due: the worker finds them at its next poll, anywhere up to its poll
    interval (0.5 s) later, about as long as handling them all takes, so that measure swung by 2x.
    """
    due = now() + timedelta(seconds=5)
    for tenant, alias in OTHERS.items():
        with transaction.atomic(using=alias):
            for i in range(PER_TENANT):
                command_bus.send(
                    RecordAsync(f"{prefix}-{tenant}-{i:04}"), metadata={"tenant": tenant, "deliver_at": due}
                )
    assert now() < due, "sending took longer than the head start"
    total = PER_TENANT * len(OTHERS)
    wait_for(lambda: handled(prefix) >= total, timeout=120, interval=0.05, message=f"{total} {prefix} messages")
    stamps = sorted(
        moment
        for alias in OTHERS.values()
        for moment in Record.objects.using(alias).filter(name__startswith=prefix).values_list("created_at", flat=True)
    )
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]).total_seconds()


def each_once(alias: str, prefix: str) -> dict[str, int]:
    rows = Record.objects.using(alias).filter(name__startswith=prefix).values("name").annotate(n=Count("id"))
    return {row["name"]: row["n"] for row in rows}


def test_the_other_tenants_are_served_at_full_speed_while_one_tenant_database_is_down(worker: WorkerFactory) -> None:
    if settings.ENGINE != "postgres":
        pytest.skip("the outage is made with ALTER DATABASE … ALLOW_CONNECTIONS (PostgreSQL)")
    proc = worker("db", "--no-relay", env={"ECOTONE_TEST_POLL_INTERVAL": "0.5"})  # the default poll interval
    rate_of_the_others("warmup")
    before = rate_of_the_others("before")

    due = now().timestamp() + 2.0
    with transaction.atomic(using=DOWN):  # due once the database is down: they must wait there
        for i in range(WAITING):
            command_bus.send(RecordAsync(f"waiting-{i:02}"), metadata={"tenant": DOWN, "delay": 2.0})
    with database_down(DOWN):
        during = rate_of_the_others("during")
        while now().timestamp() < due + 1.0:  # the waiting messages are due, and the worker polls their database
            assert proc.is_running(), proc.output_tail()
            time.sleep(0.1)
        assert "polling 'enterprise_x' failed" in proc.output(), proc.output_tail()
        assert not DeadLetter.objects.using("default").exists()
        assert not DeadLetter.objects.using("big_corp").exists()
    wait_for(lambda: len(each_once(DOWN, "waiting-")) == WAITING, timeout=60, message="the waiting messages")
    after = rate_of_the_others("after")
    print(
        f"other tenants' throughput: before {before:.0f} msg/s, during the outage {during:.0f} msg/s "
        f"({during / before:.0%}), after {after:.0f} msg/s"
    )
    assert proc.is_running(), proc.output_tail()
    assert set(each_once(DOWN, "waiting-").values()) == {1}
    for alias in ALL_DATABASES:
        assert not DeadLetter.objects.using(alias).exists(), alias
    for prefix in ("before", "during", "after"):
        for alias in OTHERS.values():
            counts = each_once(alias, prefix)
            assert len(counts) == PER_TENANT and set(counts.values()) == {1}, (prefix, alias)
    # Before the backoff the whole loop paused at every failed poll: 27 % of the rate before the outage. The rate
    # itself is reported above and in the benchmarks; the bound only tells the two behaviours apart on a busy machine.
    assert during >= 0.5 * before, f"the other tenants slowed down: {during:.0f} msg/s during vs {before:.0f} before"


def publish(prefix: str, tenant: str, count: int) -> None:
    """``count`` RecordOnRabbit messages for ``tenant`` straight onto the queue (as the relay would publish them)."""
    moment = now()
    rows = []
    for i in range(count):
        envelope = Envelope(message_name(RecordOnRabbit), {"name": f"{prefix}-{tenant}-{i:04}"}, {"tenant": tenant})
        rows.append(
            OutboxMessage(
                message_id=envelope.id,
                channel="rabbit",
                handler="tests.testapp.messaging.record_on_rabbit",
                message_type=envelope.type,
                tenant=tenant,
                body=envelope.encode(),
                available_at=moment,
                created_at=moment,
            )
        )
    for first in range(0, count, 200):
        channels["rabbit"].publish(rows[first : first + 200])  # type: ignore[attr-defined]


def rabbit_rate_of_the_others(prefix: str) -> float:
    started = time.monotonic()
    for tenant in OTHERS:
        publish(prefix, tenant, PER_TENANT)
    total = PER_TENANT * len(OTHERS)
    wait_for(lambda: handled(prefix) >= total, timeout=180, interval=0.05, message=f"{total} {prefix} messages")
    return total / (time.monotonic() - started)


def test_on_rabbitmq_the_down_tenants_messages_wait_and_the_others_go_on(worker: WorkerFactory, rabbit_queue) -> None:
    proc = worker("rabbit", "--no-relay", env={"ECOTONE_TEST_POLL_INTERVAL": "0.5"})  # the default poll interval
    rabbit_rate_of_the_others("warmup")
    before = rabbit_rate_of_the_others("before")
    with database_down(DOWN):
        publish("waiting", DOWN, WAITING)  # on the queue while their database is down
        during = rabbit_rate_of_the_others("during")
        assert not DeadLetter.objects.using("default").exists()
        assert not DeadLetter.objects.using("big_corp").exists()
    wait_for(lambda: len(each_once(DOWN, "waiting-")) == WAITING, timeout=60, message="the waiting messages")
    print(
        f"RabbitMQ, other tenants' throughput: before {before:.0f} msg/s, during the outage {during:.0f} msg/s "
        f"({during / before:.0%})"
    )
    assert proc.is_running(), proc.output_tail()
    assert set(each_once(DOWN, "waiting-").values()) == {1}
    for alias in ALL_DATABASES:
        assert not DeadLetter.objects.using(alias).exists(), alias
    # Before parking, the down tenant's requeued deliveries blocked the queue's head: the others made no progress at
    # all (the wait above timed out). The bound tells that apart from a slower machine, not one rate from another.
    assert during >= 0.25 * before, f"the other tenants slowed down: {during:.0f} msg/s during vs {before:.0f} before"
