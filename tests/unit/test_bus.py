"""Bus semantics of synchronous sends: results, subscribers, header propagation, metadata validation, limits.

Sending a command or publishing an event opens a transaction on the tenant's database, so those tests
carry a ``django_db`` mark; queries and every error raised before dispatch need no database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings

from ecotone_django import (
    CommandBus,
    EventBus,
    Metadata,
    QueryBus,
    asynchronous,
    command_bus,
    command_handler,
    event_bus,
    event_handler,
    query_bus,
    query_handler,
)
from ecotone_django.clock import now
from ecotone_django.dispatch import current_envelope
from ecotone_django.exceptions import (
    InvalidMetadataError,
    MessageTooLargeError,
    MissingTenantError,
    NoHandlerError,
)
from ecotone_django.messages import CAUSATION_ID, CORRELATION_ID, TIMESTAMP, Envelope
from ecotone_django.models import OutboxMessage
from ecotone_django.tenancy import current_tenant
from ecotone_django.testing import registry_of, use_registry
from tests.testapp.models import Record

TENANT = {"tenant": "acme"}  # an unmapped tenant: its data lives on the default connection
WITHOUT_TENANCY = {
    "CHANNELS": {"db": {"BACKEND": "ecotone_django.channels.DatabaseChannel"}},
    "DEFAULT_CHANNEL": "db",
}

calls: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    calls.clear()


# --- messages and handlers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Add:
    a: int
    b: int


@command_handler
def add(command: Add) -> int:
    calls.append(("add", command))
    return command.a + command.b


@dataclass(frozen=True)
class Price:
    sku: str


@query_handler
def price(query: Price) -> dict[str, Any]:
    return {"sku": query.sku, "amount": 12, "tenant": current_tenant()}


@dataclass(frozen=True)
class Shipped:
    order_id: str


@dataclass(frozen=True)
class ExpressShipped(Shipped):
    pass


@dataclass(frozen=True)
class Unheard:
    pass


@event_handler
def on_shipped(event: Shipped) -> None:
    calls.append(("on_shipped", event))


@event_handler
def on_express(event: ExpressShipped) -> None:
    calls.append(("on_express", event))


class Listeners:
    @event_handler
    def also_on_shipped(self, event: Shipped) -> None:
        calls.append(("also_on_shipped", event))


@dataclass(frozen=True)
class Fail:
    name: str


@command_handler
def fail_after_writing(command: Fail) -> None:
    Record.objects.create(name=command.name, handler="fail_after_writing")
    raise RuntimeError("handler failed")


@dataclass(frozen=True)
class Blob:
    data: str


@asynchronous("db")
@command_handler
def store_blob(command: Blob) -> None:
    calls.append(("store_blob", command))


@dataclass(frozen=True)
class BlobEvent:
    data: str


@asynchronous("db")
@event_handler
def on_blob(event: BlobEvent) -> None:
    calls.append(("on_blob", event))


@command_handler
def sync_blob(command: BlobEvent) -> int:
    return len(command.data)


# Propagation: Outer → (command) Middle → (event) Leaf, and Outer → (query) Lookup.


@dataclass(frozen=True)
class Outer:
    pass


@dataclass(frozen=True)
class Middle:
    pass


@dataclass(frozen=True)
class Leaf:
    pass


@dataclass(frozen=True)
class Lookup:
    pass


envelopes: dict[str, Envelope] = {}
tenants: dict[str, str | None] = {}


def _seen(name: str) -> None:
    envelope = current_envelope()
    assert envelope is not None
    envelopes[name] = envelope
    tenants[name] = current_tenant()


@command_handler
def outer(command: Outer, bus: CommandBus, queries: QueryBus) -> str:
    _seen("outer")
    bus.send(Middle())
    return str(queries.send(Lookup()))


@command_handler
def middle(command: Middle, events: EventBus) -> None:
    _seen("middle")
    events.publish(Leaf())


@event_handler
def leaf(event: Leaf, meta: Metadata) -> None:
    _seen("leaf")


@query_handler
def lookup(query: Lookup) -> str:
    _seen("lookup")
    return "found"


ALL = registry_of(
    add,
    price,
    on_shipped,
    on_express,
    Listeners,
    fail_after_writing,
    store_blob,
    on_blob,
    sync_blob,
    outer,
    middle,
    leaf,
    lookup,
)


@pytest.fixture(autouse=True)
def _registry() -> Any:
    with use_registry(ALL) as registry:
        yield registry


# --- results ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_command_returns_its_handlers_value() -> None:
    assert command_bus.send(Add(2, 3), metadata=TENANT) == 5
    assert calls == [("add", Add(2, 3))]


def test_a_query_returns_the_answer_in_the_tenant_context() -> None:
    assert query_bus.send(Price("sku-1"), metadata={"tenant": "big_corp"}) == {
        "sku": "sku-1",
        "amount": 12,
        "tenant": "big_corp",
    }
    assert current_tenant() is None, "the tenant context ends with the send"


@pytest.mark.django_db
def test_a_synchronous_command_runs_in_a_transaction_that_its_failure_rolls_back() -> None:
    with pytest.raises(RuntimeError, match="handler failed"):
        command_bus.send(Fail("rolled-back"), metadata=TENANT)
    assert not Record.objects.using("default").filter(name="rolled-back").exists()


@pytest.mark.django_db
def test_an_event_reaches_every_subscriber_including_those_of_base_classes() -> None:
    assert event_bus.publish(Shipped("o-1"), metadata=TENANT) is None
    assert sorted(name for name, _ in calls) == ["also_on_shipped", "on_shipped"]

    calls.clear()
    event_bus.publish(ExpressShipped("o-2"), metadata=TENANT)
    assert [name for name, _ in calls] == ["on_express", "on_shipped", "also_on_shipped"]
    assert all(event == ExpressShipped("o-2") for _, event in calls)


def test_an_event_without_subscribers_is_not_an_error() -> None:
    assert event_bus.publish(Unheard(), metadata=TENANT) is None


def test_a_command_or_query_without_handler_is_an_error() -> None:
    with pytest.raises(NoHandlerError, match=r"no command handler is registered for tests\.unit\.test_bus\.Unheard"):
        command_bus.send(Unheard(), metadata=TENANT)
    with pytest.raises(NoHandlerError, match=r"no query handler is registered for tests\.unit\.test_bus\.Add"):
        query_bus.send(Add(1, 1), metadata=TENANT)
    with pytest.raises(NoHandlerError, match=r"messaging\.py in an installed app, or listed in .*HANDLER_MODULES"):
        command_bus.send(Unheard(), metadata=TENANT)  # where handlers are looked for
    with pytest.raises(NoHandlerError, match="no command handler"):
        command_bus.send(Shipped("o"), metadata=TENANT)  # events have subscribers, not command handlers


# --- header propagation -------------------------------------------------------------------------------------


@pytest.mark.django_db(databases=["default", "big_corp"])
def test_nested_sends_carry_the_tenant_correlation_and_causation() -> None:
    envelopes.clear()
    tenants.clear()

    assert command_bus.send(Outer(), metadata={"tenant": "big_corp", "source": "web"}) == "found"

    root, mid, leaf_, query = envelopes["outer"], envelopes["middle"], envelopes["leaf"], envelopes["lookup"]
    assert tenants == {"outer": "big_corp", "middle": "big_corp", "leaf": "big_corp", "lookup": "big_corp"}
    assert root.headers["source"] == "web"
    assert root.headers[CORRELATION_ID] == root.id, "a first message starts its own correlation"
    assert CAUSATION_ID not in root.headers
    for child, parent in ((mid, root), (leaf_, mid), (query, root)):
        assert child.headers["tenant"] == "big_corp"
        assert child.headers[CORRELATION_ID] == root.id
        assert child.headers[CAUSATION_ID] == parent.id
        assert child.id != parent.id
    assert len({root.id, mid.id, leaf_.id, query.id}) == 4
    assert current_envelope() is None and current_tenant() is None


@pytest.mark.django_db
def test_a_given_correlation_id_is_kept_and_propagated() -> None:
    envelopes.clear()
    command_bus.send(Outer(), metadata={**TENANT, CORRELATION_ID: "req-42"})
    assert {name: e.headers[CORRELATION_ID] for name, e in envelopes.items()} == dict.fromkeys(
        ("outer", "middle", "leaf", "lookup"), "req-42"
    )


def test_envelope_headers_carry_an_aware_timestamp() -> None:
    envelopes.clear()
    query_bus.send(Lookup(), metadata=TENANT)
    stamp = datetime.fromisoformat(envelopes["lookup"].headers[TIMESTAMP])
    assert stamp.tzinfo is not None
    assert abs(stamp - now()) < timedelta(seconds=60)


# --- metadata validation (raised before any handler runs or any row is written) ----------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"delay": -1}, "'delay' must not be negative"),
        ({"delay": timedelta(seconds=-5)}, "'delay' must not be negative"),
        ({"delay": timedelta(days=3661)}, "'delay' of 3661 days, 0:00:00 is more than 3660 days"),
        ({"delay": 11 * 365 * 86400}, "is more than 3660 days"),
        ({"delay": "60"}, "'delay' must be a timedelta or seconds, got '60'"),
        ({"delay": True}, "'delay' must be a timedelta or seconds, got True"),
        ({"deliver_at": datetime(2030, 1, 1)}, "'deliver_at' must be timezone-aware"),
        ({"deliver_at": "2030-01-01T00:00:00Z"}, "'deliver_at' must be a datetime, got str"),
        ({"deliver_at": datetime(2099, 1, 1, tzinfo=UTC)}, "'deliver_at' 2099-01-01T00:00:00\\+00:00 is more than"),
        ({"delay": 5, "deliver_at": datetime(2030, 1, 1, tzinfo=UTC)}, "give either 'delay' or 'deliver_at', not both"),
        ({5: "x"}, "metadata keys are header names \\(str\\), got 5"),
    ],
    ids=[
        "negative seconds",
        "negative timedelta",
        "over ten years",
        "eleven years in seconds",
        "delay as str",
        "delay as bool",
        "naive deliver_at",
        "deliver_at as str",
        "deliver_at in 2099",
        "both",
        "non-str key",
    ],
)
def test_invalid_delivery_metadata_is_rejected_before_dispatch(metadata: dict[Any, Any], message: str) -> None:
    for send in (
        lambda: command_bus.send(Add(1, 2), metadata={**TENANT, **metadata}),
        lambda: command_bus.send(Blob("x"), metadata={**TENANT, **metadata}),
        lambda: event_bus.publish(Shipped("o"), metadata={**TENANT, **metadata}),
    ):
        with pytest.raises(InvalidMetadataError, match=message):
            send()
    assert calls == []


@override_settings(ECOTONE={})
def test_a_delayed_send_to_a_synchronous_handler_needs_a_channel() -> None:
    with pytest.raises(InvalidMetadataError, match=r"test_bus\.add is synchronous; a delayed message needs"):
        command_bus.send(Add(1, 2), metadata={"delay": 30})
    assert calls == []


@pytest.mark.django_db
def test_delay_and_deliver_at_hold_a_synchronous_handlers_copy_on_the_default_channel() -> None:
    before = now()
    assert command_bus.send(Add(1, 2), metadata={**TENANT, "delay": timedelta(minutes=5)}) is None
    deliver_at = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    assert command_bus.send(Add(3, 4), metadata={**TENANT, "deliver_at": deliver_at}) is None

    assert calls == [], "a delayed message is not handled at send time"
    rows = list(OutboxMessage.objects.using("default").order_by("id"))
    assert [(r.channel, r.handler, r.tenant) for r in rows] == [("db", "tests.unit.test_bus.add", "acme")] * 2
    assert before + timedelta(minutes=5) <= rows[0].available_at <= now() + timedelta(minutes=5)
    assert rows[1].available_at == deliver_at
    assert "delay" not in Envelope.decode(rows[0].body).headers, "delivery metadata is not a header"


# --- tenancy ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metadata", [None, {}, {"tenant": ""}, {"tenant": None}, {"other": "x"}])
def test_a_missing_tenant_is_an_error_naming_the_header(metadata: dict[str, Any] | None) -> None:
    with pytest.raises(MissingTenantError) as caught:
        command_bus.send(Add(1, 2), metadata=metadata)
    assert "tests.unit.test_bus.Add was sent without the 'tenant' header" in str(caught.value)
    assert "metadata={'tenant': ...}" in str(caught.value)
    with pytest.raises(MissingTenantError):
        event_bus.publish(Shipped("o"), metadata=metadata)
    with pytest.raises(MissingTenantError):
        query_bus.send(Price("x"), metadata=metadata)
    assert calls == []


def test_a_tenant_header_in_another_case_is_named_in_the_error() -> None:
    with pytest.raises(MissingTenantError) as caught:
        command_bus.send(Add(1, 2), metadata={"Tenant": "acme"})
    assert "without the 'tenant' header (metadata has 'Tenant': header names are case-sensitive)" in str(caught.value)
    assert calls == []


@override_settings(ECOTONE={"TENANCY": {"HEADER": "organisation"}})
def test_the_missing_tenant_error_names_the_configured_header() -> None:
    with pytest.raises(MissingTenantError, match="without the 'organisation' header"):
        query_bus.send(Price("x"), metadata={"tenant": "acme"})
    assert query_bus.send(Price("x"), metadata={"organisation": "acme"})["tenant"] == "acme"


@override_settings(ECOTONE={})
def test_without_tenancy_no_tenant_is_needed() -> None:
    assert query_bus.send(Price("x")) == {"sku": "x", "amount": 12, "tenant": None}


# --- size limit ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(ECOTONE={**WITHOUT_TENANCY, "MAX_MESSAGE_BYTES": 600})
def test_an_asynchronous_message_over_the_size_limit_is_refused_and_nothing_is_written() -> None:
    with pytest.raises(MessageTooLargeError) as caught:
        command_bus.send(Blob("x" * 1000))
    assert "tests.unit.test_bus.Blob encodes to" in str(caught.value)
    assert "ECOTONE['MAX_MESSAGE_BYTES'] is 600" in str(caught.value)
    with pytest.raises(MessageTooLargeError, match=r"tests\.unit\.test_bus\.BlobEvent encodes to"):
        event_bus.publish(BlobEvent("x" * 1000))
    assert not OutboxMessage.objects.exists()

    assert command_bus.send(Blob("small")) is None
    event_bus.publish(BlobEvent("small"))
    assert list(OutboxMessage.objects.order_by("id").values_list("handler", flat=True)) == [
        "tests.unit.test_bus.store_blob",
        "tests.unit.test_bus.on_blob",
    ]
    assert calls == []
    # The limit is about the wire: a synchronous handler takes the large message.
    assert command_bus.send(BlobEvent("x" * 1000)) == 1000
