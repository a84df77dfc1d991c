"""The check project's handler: asynchronous on the dynamic channel."""

from __future__ import annotations

from dataclasses import dataclass

from ecotone_django import asynchronous, command_handler


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str


@asynchronous("orders")
@command_handler
def place_order(command: PlaceOrder) -> None:
    return None
