"""Handler fixtures for the spine's unit tests: a small "application" module scanned with ``Registry.from_modules``.

Nothing here is registered globally; tests build registries from this module (or pick objects out of it)
and install them with ``use_registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from ecotone_django import (
    CommandBus,
    EventBus,
    Header,
    Metadata,
    QueryBus,
    asynchronous,
    command_handler,
    deduplicated,
    delayed,
    event_handler,
    internal_handler,
    query_handler,
)
from ecotone_django.messages import Envelope

# A handler imported from another module must not be registered as if it were declared here.
from tests.testapp.messaging import record_sync  # noqa: F401


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


@dataclass(frozen=True)
class PremiumOrderPlaced(OrderPlaced):
    """A subclass: subscribers of OrderPlaced receive it too (MRO lookup)."""


@dataclass(frozen=True)
class GetOrder:
    order_id: str


@dataclass(frozen=True)
class Verify:
    order_id: str


@command_handler
def place_order(
    command: PlaceOrder, bus: CommandBus, events: EventBus, queries: QueryBus, meta: Metadata
) -> tuple[str, CommandBus, EventBus, QueryBus, dict[str, object]]:
    return command.order_id, bus, events, queries, dict(meta)


@query_handler
def get_order(query: GetOrder, tenant: Annotated[str, Header("tenant")], limit: int = 10) -> str:
    return f"{query.order_id}@{tenant}/{limit}"


@command_handler(output_channel="verify")
def start_pipeline(command: Verify) -> Verify:
    return command


@internal_handler("verify", output_channel="ship")
def verify_step(message: Verify) -> Verify:
    return message


@asynchronous("orders")
class OrderService:
    """Every handler of this class runs on "orders" unless it names its own channel."""

    @event_handler
    def on_placed(self, event: OrderPlaced) -> None:
        return None

    @asynchronous("premium")
    @event_handler
    def on_premium(self, event: PremiumOrderPlaced) -> None:
        return None

    @delayed(timedelta(minutes=30))
    @event_handler(identifier_mapping={"order_id": "payload.order_id"})
    @classmethod
    def reminder(cls, event: OrderPlaced) -> None:
        return None

    @staticmethod
    @deduplicated("order_id")
    @event_handler
    def audit(event: OrderPlaced) -> None:
        return None

    def not_a_handler(self, event: OrderPlaced) -> None:
        return None


def not_a_handler(event: OrderPlaced) -> None:
    return None


# --- DynamicChannel resolvers (dotted paths in OPTIONS["resolver"]) ------------------------------------------


def by_priority(envelope: Envelope) -> str:
    """Route by the ``priority`` header: "high" → fast lane, anything else → slow lane."""
    return "fast" if envelope.headers.get("priority") == "high" else "slow"
