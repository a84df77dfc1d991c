"""A handler whose second parameter has no annotation: nothing says what to inject into it."""

from __future__ import annotations

from dataclasses import dataclass

from ecotone_django import command_handler


@dataclass(frozen=True)
class ShipOrder:
    order_id: str


@command_handler
def ship_order(command: ShipOrder, carrier) -> None:  # type: ignore[no-untyped-def]
    return None
