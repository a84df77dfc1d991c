"""Tenant placement: every effect and every message of a tenant lands in that tenant's database.

Runs on the engine ECOTONE_TEST_DB picks, against the three aliases of tests.settings: ``big_corp`` and
``enterprise_x`` have dedicated databases, every other tenant shares ``default``.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from django.db import connections

from ecotone_django import command_bus, command_handler, event_bus
from ecotone_django.exceptions import MissingTenantError
from ecotone_django.messages import Envelope
from ecotone_django.models import InboxEntry, OutboxMessage
from ecotone_django.tenancy import alias_for, current_tenant, tenant_context
from ecotone_django.testing import registry_of, use_registry
from ecotone_django.worker import Worker
from tests.integration.conftest import ALL_DATABASES
from tests.testapp.messaging import Chain, Happened, RecordAsync, RecordSync, record_sync
from tests.testapp.models import Record

PLACEMENT = [("big_corp", "big_corp"), ("enterprise_x", "enterprise_x"), ("free_tier_42", "default")]


def records_by_alias(name: str) -> dict[str, list[Record]]:
    return {alias: list(Record.objects.using(alias).filter(name=name)) for alias in ALL_DATABASES}


@pytest.mark.django_db(databases=ALL_DATABASES)
@pytest.mark.parametrize(("tenant", "alias"), PLACEMENT)
def test_synchronous_handler_writes_to_the_tenants_database_only(tenant: str, alias: str) -> None:
    pk = command_bus.send(RecordSync("placed"), metadata={"tenant": tenant})

    found = records_by_alias("placed")
    assert [(r.pk, r.tenant, r.handler) for r in found[alias]] == [(pk, tenant, "record_sync")]
    assert {a: rows for a, rows in found.items() if a != alias} == {a: [] for a in ALL_DATABASES if a != alias}
    assert current_tenant() is None


@pytest.mark.django_db(databases=ALL_DATABASES)
@pytest.mark.parametrize(("tenant", "alias"), PLACEMENT)
def test_asynchronous_send_stores_its_message_in_the_tenants_outbox(tenant: str, alias: str) -> None:
    assert command_bus.send(RecordAsync("queued"), metadata={"tenant": tenant}) is None

    rows = {a: list(OutboxMessage.objects.using(a).all()) for a in ALL_DATABASES}
    assert [(r.tenant, r.channel, r.handler) for r in rows[alias]] == [
        (tenant, "db", "tests.testapp.messaging.record_async")
    ]
    assert Envelope.decode(rows[alias][0].body).headers["tenant"] == tenant
    assert sum(len(v) for a, v in rows.items() if a != alias) == 0


@pytest.mark.django_db(databases=ALL_DATABASES)
@pytest.mark.parametrize("metadata", [None, {}, {"tenant": ""}, {"tenant": None}, {"customer": "big_corp"}])
def test_missing_tenant_fails_naming_the_header_and_writes_nothing(metadata: dict[str, object] | None) -> None:
    with pytest.raises(MissingTenantError, match="'tenant' header"):
        command_bus.send(RecordSync("orphan"), metadata=metadata)
    with pytest.raises(MissingTenantError, match="'tenant' header"):
        command_bus.send(RecordAsync("orphan"), metadata=metadata)
    with pytest.raises(MissingTenantError, match="'tenant' header"):
        event_bus.publish(Happened("orphan"), metadata=metadata)

    for alias in ALL_DATABASES:
        assert not Record.objects.using(alias).exists(), alias
        assert not OutboxMessage.objects.using(alias).exists(), alias


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_concurrent_sends_with_random_tenants_land_in_their_tenants_databases() -> None:
    rng = random.Random(20240611)
    tenants = ["big_corp", "enterprise_x", "free_a", "free_b", "free_c", "acme"]
    plan = [(f"msg-{i}", rng.choice(tenants)) for i in range(1000)]
    start = threading.Barrier(8)

    def send_share(share: list[tuple[str, str]]) -> int:
        try:
            start.wait()
            for name, tenant in share:
                command_bus.send(RecordSync(name), metadata={"tenant": tenant})
                assert current_tenant() is None
            return len(share)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=8) as pool:
        sent = sum(pool.map(send_share, [plan[i::8] for i in range(8)]))
    assert sent == 1000

    expected = Counter(alias_for(tenant) for _, tenant in plan)
    assert set(expected) == set(ALL_DATABASES)  # the seed reaches every database
    for alias in ALL_DATABASES:
        rows = list(Record.objects.using(alias).values_list("name", "tenant"))
        assert len(rows) == expected[alias], alias
        assert {alias_for(tenant) for _, tenant in rows} == {alias}
        assert {name: tenant for name, tenant in rows} == {n: t for n, t in plan if alias_for(t) == alias}


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_a_handlers_outgoing_message_inherits_the_tenant() -> None:
    command_bus.send(Chain("parent"), metadata={"tenant": "enterprise_x"})

    assert [r.tenant for r in Record.objects.using("enterprise_x").filter(name="parent")] == ["enterprise_x"]
    child = OutboxMessage.objects.using("enterprise_x").get()
    assert (child.message_type, child.tenant) == ("tests.testapp.messaging.RecordAsync", "enterprise_x")
    headers = Envelope.decode(child.body).headers
    assert headers["tenant"] == "enterprise_x"
    # The parent was the first message: it is both the cause and the correlation of the child.
    assert headers["correlation_id"] == headers["causation_id"] != child.message_id
    for alias in ("default", "big_corp"):
        assert not OutboxMessage.objects.using(alias).exists()
        assert not Record.objects.using(alias).exists()

    Worker(["db"], stop_when_empty=True, relay=False).run()

    handled = Record.objects.using("enterprise_x").get(name="parent.child")
    assert (handled.handler, handled.tenant) == ("record_async", "enterprise_x")
    assert list(InboxEntry.objects.using("enterprise_x").values_list("key", flat=True)) == [child.message_id]
    assert not OutboxMessage.objects.using("enterprise_x").exists()


# -- a handler that fails, declared here (not in testapp) and used through a test registry ----------


@dataclass(frozen=True)
class Explode:
    name: str


seen_tenants: list[str | None] = []


@command_handler
def explode(command: Explode) -> None:
    seen_tenants.append(current_tenant())
    Record.objects.create(name=command.name, handler="explode", tenant=current_tenant() or "")
    raise ValueError(f"explode {command.name}")


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_tenant_context_is_reset_after_a_handler_raises() -> None:
    seen_tenants.clear()
    with use_registry(registry_of(explode, record_sync)):
        with pytest.raises(ValueError, match="explode boom"):
            command_bus.send(Explode("boom"), metadata={"tenant": "big_corp"})
        assert current_tenant() is None

        with tenant_context("enterprise_x"):
            with pytest.raises(ValueError, match="explode nested"):
                command_bus.send(Explode("nested"), metadata={"tenant": "big_corp"})
            assert current_tenant() == "enterprise_x"
        assert current_tenant() is None

        # The next message of another tenant goes to its own database, not the failed one's.
        command_bus.send(RecordSync("after"), metadata={"tenant": "free_tier"})

    assert seen_tenants == ["big_corp", "big_corp"]
    assert [r.tenant for r in Record.objects.using("default").filter(name="after")] == ["free_tier"]
    for alias in ALL_DATABASES:  # the failing handlers' writes rolled back with their transactions
        assert not Record.objects.using(alias).filter(handler="explode").exists(), alias
    assert not Record.objects.using("big_corp").exists()
