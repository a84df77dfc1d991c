"""Our side of the comparison (``ECOTONE["HANDLER_MODULES"]``): the same handler on each channel kind."""

from __future__ import annotations

from dataclasses import dataclass

from ecotone_django import asynchronous, command_bus, command_handler

from .work import ship


@dataclass(frozen=True)
class ShipByDatabase:
    order_id: int


@dataclass(frozen=True)
class ShipByRabbit:
    order_id: int


@asynchronous("peer_db")
@command_handler
def ship_by_database(command: ShipByDatabase) -> None:
    ship(command.order_id)


@asynchronous("peer_rabbit")
@command_handler
def ship_by_rabbit(command: ShipByRabbit) -> None:
    ship(command.order_id)


def enqueue_database(order_id: int) -> None:
    command_bus.send(ShipByDatabase(order_id=order_id))


def enqueue_rabbit(order_id: int) -> None:
    command_bus.send(ShipByRabbit(order_id=order_id))
