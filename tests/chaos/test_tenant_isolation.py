"""Tenant isolation as a property: random tenants, commands, events and sagas through a real worker process.

One ``consume_channel`` process runs for the whole test; every hypothesis example sends its messages, waits
until the worker has handled them, and checks where every row landed: business rows (``Record``), inbox,
outbox (the sagas' delayed timeouts wait there), dead letters (a subscriber that always fails) and saga state
must each sit in the database of the tenant they belong to — dedicated tenants in their own database, every
other tenant (near misses like ``BIG_CORP`` or ``big_corp `` and arbitrary unicode names included) in the
shared one — and nowhere else.

Runs on every engine. Under ``ECOTONE_TEST_DB=postgres`` sagas of ``big_corp`` travel through RabbitMQ (the
``orders`` dynamic channel); elsewhere saga actions avoid that tenant, since the broker tests run only there.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from ecotone_django import command_bus, event_bus
from ecotone_django.clock import now
from ecotone_django.messages import Envelope
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage, SagaHistory, SagaState
from ecotone_django.signals import message_sent
from ecotone_django.tenancy import alias_for
from tests.helpers.processes import wait_for
from tests.integration.conftest import ALL_DATABASES, WorkerFactory
from tests.sagaapp.messages import PlaceOrder
from tests.testapp.messaging import Chain, Happened, RecordAsync
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

RECORD_ASYNC = "tests.testapp.messaging.record_async"
HEALTHY = "tests.testapp.messaging.Subscribers.healthy"
FAILING = "tests.testapp.messaging.Subscribers.failing"
PLACE_ORDER = "tests.sagaapp.messaging.place_order"
SAGA_START = "tests.sagaapp.messaging.OrderSaga.start"
SAGA_TIMEOUT = "tests.sagaapp.messaging.OrderSaga.payment_timeout"
SAGA_TYPE = "tests.sagaapp.messaging.OrderSaga"
WITH_BROKER = settings.ENGINE == "postgres"

dedicated = st.sampled_from(["big_corp", "enterprise_x"])
near_misses = st.sampled_from(["BIG_CORP", "big_corp ", " enterprise_x", "enterprise-x", "default", "big_corp\t"])
anyone = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
tenants = st.one_of(dedicated, near_misses, anyone, st.integers(min_value=0, max_value=10**9))
KINDS = ("command", "event", "chain", "saga")
actions = st.lists(st.tuples(tenants, st.sampled_from(KINDS)), min_size=1, max_size=8)


@dataclass
class Expected:
    """What one database must hold after an example (message ids of async handlers from message_sent)."""

    records: set[tuple[str, str, str]] = field(default_factory=set)  # (name, handler, tenant)
    inbox: set[tuple[str, str]] = field(default_factory=set)  # (message id, handler) known in this process
    inbox_counts: Counter[str] = field(default_factory=Counter)  # handler -> rows (ids minted in the worker)
    dead: set[tuple[str, str, str]] = field(default_factory=set)  # (message id, handler, tenant)
    sagas: set[tuple[str, str]] = field(default_factory=set)  # (order id, tenant)


def _clear() -> None:
    for alias in ALL_DATABASES:
        for model in (Record, InboxEntry, DeadLetter, SagaHistory, SagaState, OutboxMessage):
            model.objects.using(alias).all().delete()


def _done(expected: dict[str, Expected]) -> bool:
    for alias in ALL_DATABASES:
        want = expected[alias]
        if Record.objects.using(alias).count() < len(want.records):
            return False
        if DeadLetter.objects.using(alias).count() < len(want.dead):
            return False
        if SagaState.objects.using(alias).count() < len(want.sagas):
            return False
        if OutboxMessage.objects.using(alias).filter(available_at__lte=now()).exists():
            return False  # something is still due: handled yet, or retried
    return True


@pytest.fixture
def isolation_worker(request: pytest.FixtureRequest, worker: WorkerFactory) -> None:
    """One worker for the whole test: the database channels, plus RabbitMQ in the PostgreSQL run."""
    if WITH_BROKER:
        request.getfixturevalue("rabbit_queue")
        worker("db", "orders")
    else:
        worker("db", "--no-relay")


@hypothesis_settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=actions)
def test_every_row_lands_in_its_tenants_database(isolation_worker: None, actions: list[tuple[Any, str]]) -> None:
    _clear()
    sent: list[tuple[str, Any, Envelope]] = []

    def observer(sender: Any, message: Any, envelope: Envelope, **kwargs: Any) -> None:
        sent.append((sender, message, envelope))

    message_sent.connect(observer)
    expected: dict[str, Expected] = defaultdict(Expected)
    try:
        for i, (tenant, kind) in enumerate(actions):
            if kind == "saga" and tenant == "big_corp" and not WITH_BROKER:
                kind = "command"  # big_corp's sagas ride RabbitMQ, tested in the PostgreSQL run
            name, text = f"n{i}", str(tenant)
            want = expected[alias_for(text)]
            first = len(sent)
            if kind == "command":
                command_bus.send(RecordAsync(name), metadata={"tenant": tenant})
                want.records.add((name, "record_async", text))
                want.inbox.add((sent[first][2].id, RECORD_ASYNC))
            elif kind == "event":
                event_bus.publish(Happened(name), metadata={"tenant": tenant})
                want.records |= {(name, "healthy", text), (name, "inline", text)}
                want.inbox.add((sent[first][2].id, HEALTHY))
                want.dead.add((sent[first][2].id, FAILING, text))
            elif kind == "chain":  # synchronous; its child is sent by the handler and inherits the tenant
                command_bus.send(Chain(name), metadata={"tenant": tenant})
                child = next(e for k, m, e in sent[first:] if isinstance(m, RecordAsync))
                assert child.headers["tenant"] == tenant
                want.records |= {(name, "chain", text), (name + ".child", "record_async", text)}
                want.inbox.add((child.id, RECORD_ASYNC))
            else:
                command_bus.send(PlaceOrder(f"order-{i}", Decimal("9.99")), metadata={"tenant": tenant})
                want.inbox.add((sent[first][2].id, PLACE_ORDER))
                want.inbox_counts[SAGA_START] += 1  # OrderPlaced is published in the worker
                want.sagas.add((f"order-{i}", text))
    finally:
        message_sent.disconnect(observer)

    wait_for(lambda: _done(expected), timeout=60, message="the worker to handle every message")

    for alias in ALL_DATABASES:
        want = expected[alias]
        records = list(Record.objects.using(alias).values_list("name", "handler", "tenant"))
        assert set(records) == want.records and len(records) == len(want.records), alias
        assert all(alias_for(tenant) == alias for _, _, tenant in records)

        inbox = list(InboxEntry.objects.using(alias).values_list("key", "handler"))
        assert want.inbox <= set(inbox), (alias, want.inbox - set(inbox))
        others = set().union(*(expected[a].inbox for a in ALL_DATABASES if a != alias))
        assert not others & set(inbox), (alias, others & set(inbox))
        counts = Counter(handler for _, handler in inbox)
        for handler, number in want.inbox_counts.items():
            assert counts[handler] == number, (alias, handler, counts[handler], number)
        assert len(inbox) == len(want.inbox) + sum(want.inbox_counts.values()), alias

        letters = DeadLetter.objects.using(alias).values_list("message_id", "handler", "tenant")
        assert set(letters) == want.dead and len(letters) == len(want.dead), alias

        sagas = SagaState.objects.using(alias).values_list("saga_type", "saga_id", "tenant")
        assert {(saga_id, tenant) for _, saga_id, tenant in sagas} == want.sagas, alias
        assert {saga_type for saga_type, _, _ in sagas} <= {SAGA_TYPE}

        # Left in the outbox: exactly the sagas' payment timeouts, each for a tenant of this database.
        queued = list(OutboxMessage.objects.using(alias).all())
        assert sorted(row.handler for row in queued) == [SAGA_TIMEOUT] * len(want.sagas), alias
        for row in queued:
            assert alias_for(row.tenant) == alias and str(Envelope.decode(row.body).headers["tenant"]) == row.tenant
