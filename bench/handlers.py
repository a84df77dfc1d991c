"""The benchmark's messages and handlers (``ECOTONE["HANDLER_MODULES"]``): each only notes when it ran."""

from __future__ import annotations

from dataclasses import dataclass

from ecotone_django import asynchronous, command_handler

from .probe import mark


@dataclass(frozen=True)
class PingRabbit:
    """Handled on the Celery channel (RabbitMQ)."""

    seq: int
    sent_at: float


@dataclass(frozen=True)
class PingDb:
    """Handled on the database channel (PostgreSQL, SKIP LOCKED)."""

    seq: int
    sent_at: float


@dataclass(frozen=True)
class PingOrders:
    """Handled on ``bench_orders``: routed per tenant (dynamic layout) or one shared queue (single layout)."""

    seq: int
    sent_at: float


@asynchronous("bench_rabbit")
@command_handler
def on_rabbit(command: PingRabbit) -> None:
    mark(command.seq, command.sent_at)


@asynchronous("bench_db")
@command_handler
def on_db(command: PingDb) -> None:
    mark(command.seq, command.sent_at)


@asynchronous("bench_orders")
@command_handler
def on_orders(command: PingOrders) -> None:
    mark(command.seq, command.sent_at)
