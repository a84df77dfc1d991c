"""A handler on a channel name with a typo (``ordres``)."""

from __future__ import annotations

from dataclasses import dataclass

from ecotone_django import asynchronous, event_handler


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str


@asynchronous("ordres")
@event_handler
def on_order_placed(event: OrderPlaced) -> None:
    return None
