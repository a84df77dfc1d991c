"""Handlers the integration tests drive through real databases, brokers and worker processes."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from ecotone_django import (
    CommandBus,
    EventBus,
    Header,
    Metadata,
    asynchronous,
    command_handler,
    deduplicated,
    event_handler,
    query_handler,
)
from ecotone_django.tenancy import current_tenant

from .models import Record


def _record(name: str, handler: str) -> Record:
    return Record.objects.create(name=name, handler=handler, tenant=current_tenant() or "")


@dataclass(frozen=True)
class RecordSync:
    name: str


@dataclass(frozen=True)
class RecordAsync:
    name: str


@dataclass(frozen=True)
class RecordOnRabbit:
    name: str


@dataclass(frozen=True)
class RecordOnRedis:
    name: str


@dataclass(frozen=True)
class RecordOnOrders:
    name: str


@dataclass(frozen=True)
class CountRecords:
    name: str


@dataclass(frozen=True)
class Slow:
    """Records, then blocks until ``release_file`` exists (a test kills the worker meanwhile)."""

    name: str
    started_file: str
    release_file: str


@dataclass(frozen=True)
class Happened:
    name: str


@dataclass(frozen=True)
class Chain:
    """Handled synchronously; sends RecordAsync with the same name (header propagation)."""

    name: str


@dataclass(frozen=True)
class Keyed:
    order_id: str
    name: str


@command_handler
def record_sync(command: RecordSync, metadata: Metadata) -> int:
    return _record(command.name, "record_sync").pk


@asynchronous("db")
@command_handler
def record_async(command: RecordAsync, tenant: Annotated[str, Header("tenant")]) -> None:
    _record(command.name, "record_async")


@command_handler
@asynchronous("rabbit")
def record_on_rabbit(command: RecordOnRabbit) -> None:
    _record(command.name, "record_on_rabbit")


@asynchronous("redis")
@command_handler
def record_on_redis(command: RecordOnRedis) -> None:
    _record(command.name, "record_on_redis")


@asynchronous("orders")
@command_handler
def record_on_orders(command: RecordOnOrders) -> None:
    _record(command.name, "record_on_orders")


@query_handler
def count_records(query: CountRecords) -> int:
    return Record.objects.filter(name=query.name).count()


@asynchronous("db")
@command_handler
def slow(command: Slow) -> None:
    _block(command.name, "slow", command.started_file, command.release_file)


def _block(name: str, handler: str, started_file: str, release_file: str) -> None:
    _record(name, handler)
    Path(started_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(release_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@dataclass(frozen=True)
class SlowOnRabbit:
    name: str
    started_file: str
    release_file: str


@asynchronous("rabbit")
@command_handler
def slow_on_rabbit(command: SlowOnRabbit) -> None:
    _block(command.name, "slow_on_rabbit", command.started_file, command.release_file)


@command_handler
def chain(command: Chain, bus: CommandBus, events: EventBus) -> None:
    _record(command.name, "chain")
    bus.send(RecordAsync(command.name + ".child"))


class Subscribers:
    """Two asynchronous subscribers of one event: one healthy, one that always fails."""

    @asynchronous("db")
    @event_handler
    def healthy(self, event: Happened) -> None:
        _record(event.name, "healthy")

    @asynchronous("db")
    @event_handler
    def failing(self, event: Happened) -> None:
        _record(event.name, "failing")
        raise RuntimeError(f"subscriber always fails for {event.name}")


@event_handler
def happened_inline(event: Happened) -> None:
    _record(event.name, "inline")


@deduplicated("order_id")
@asynchronous("db")
@command_handler
def keyed(command: Keyed) -> None:
    _record(command.name, "keyed")


# --- broker channels (CeleryChannel tests: tests/integration/test_celery_channel.py) ---


@dataclass(frozen=True)
class FlakyOnRabbit:
    """Fails its first ``failures`` attempts (counted in ``attempts_file``, outside any transaction), then records."""

    name: str
    attempts_file: str
    failures: int = 2


@asynchronous("rabbit")
@command_handler
def flaky_on_rabbit(command: FlakyOnRabbit) -> None:
    path = Path(command.attempts_file)
    attempt = int(path.read_text() or "0") + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt <= command.failures:
        raise RuntimeError(f"{command.name}: attempt {attempt} fails on purpose")
    _record(command.name, "flaky_on_rabbit")


# --- worker slow-down (lead) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlwaysFails:
    name: str


@asynchronous("db")
@command_handler
def always_fails(command: AlwaysFails) -> None:
    raise RuntimeError(f"{command.name} always fails")
