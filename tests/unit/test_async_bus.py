"""The async bus API (``asend``, ``apublish``, ``aquery``) and ``async def`` handlers run by the worker.

The async forms run the sync ones with ``sync_to_async(thread_sensitive=True)``: on the thread, and so the
database connection, of the caller's other ORM calls. These tests prove it by opening a transaction on
that connection, sending, and rolling back. An ``async def`` handler's ORM calls (through
``sync_to_async``) join the handling transaction: a failure rolls them back with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from ecotone_django import (
    asynchronous,
    command_bus,
    command_handler,
    event_bus,
    event_handler,
    query_bus,
    query_handler,
)
from ecotone_django.models import DeadLetter, OutboxMessage
from ecotone_django.tenancy import current_tenant
from ecotone_django.testing import registry_of, use_registry
from ecotone_django.worker import Worker
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=["default", "big_corp", "enterprise_x"], transaction=True)


@dataclass(frozen=True)
class Shout:
    word: str


@dataclass(frozen=True)
class Later:
    name: str
    fail: bool = False


@dataclass(frozen=True)
class Seen:
    name: str


@dataclass(frozen=True)
class Double:
    n: int


@command_handler
def shout(command: Shout) -> str:
    return f"{command.word.upper()} for {current_tenant()}"


@asynchronous("db")
@command_handler
async def later(command: Later) -> None:
    await sync_to_async(Record.objects.create)(name=command.name, handler="later", tenant=current_tenant() or "")
    if command.fail:
        raise RuntimeError("async handler fails after its write")


@event_handler
def seen(event: Seen) -> None:
    Record.objects.create(name=event.name, handler="seen", tenant=current_tenant() or "")


@query_handler
async def double(query: Double) -> int:
    await asyncio.sleep(0)
    return query.n * 2


REGISTRY = registry_of(shout, later, seen, double)
BIG = {"tenant": "big_corp"}


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run an async scenario under the test registry; close the connections of the thread it used."""

    async def wrapped() -> Any:
        try:
            return await scenario()
        finally:
            await sync_to_async(connections.close_all)()

    with use_registry(REGISTRY):
        return asyncio.run(wrapped())


def test_asend_apublish_and_aquery_return_what_the_sync_forms_return() -> None:
    async def scenario() -> tuple[Any, Any]:
        answer = await command_bus.asend(Shout("hi"), metadata=BIG)
        await event_bus.apublish(Seen("e1"), metadata=BIG)
        return answer, await query_bus.aquery(Double(21), metadata=BIG)

    assert run(scenario) == ("HI for big_corp", 42)
    assert list(Record.objects.using("big_corp").values_list("name", "handler")) == [("e1", "seen")]


def test_asend_joins_the_transaction_open_on_the_callers_connection() -> None:
    async def scenario() -> int:
        await sync_to_async(transaction.set_autocommit)(False, using="big_corp")
        try:
            await command_bus.asend(Later("in-tx"), metadata=BIG)
            await event_bus.apublish(Seen("in-tx"), metadata=BIG)
            inside: int = await sync_to_async(OutboxMessage.objects.using("big_corp").count)()
            await sync_to_async(transaction.rollback)(using="big_corp")
        finally:
            await sync_to_async(transaction.set_autocommit)(True, using="big_corp")
        return inside

    assert run(scenario) == 1  # the row was written in the open transaction...
    assert not OutboxMessage.objects.using("big_corp").exists()  # ...and left with its rollback
    assert not Record.objects.using("big_corp").exists()


def test_an_async_handler_runs_in_the_worker_inside_the_handling_transaction() -> None:
    async def scenario() -> None:
        await command_bus.asend(Later("ok"), metadata=BIG)
        await command_bus.asend(Later("boom", fail=True), metadata=BIG)

    run(scenario)
    with use_registry(REGISTRY):
        Worker(["db"], stop_when_empty=True, relay=False).run()
    # The failing handler's write rolled back with each of its 3 attempts; the message became a dead letter.
    assert list(Record.objects.using("big_corp").values_list("name", "tenant")) == [("ok", "big_corp")]
    letter = DeadLetter.objects.using("big_corp").get()
    assert letter.handler.endswith(".later") and letter.exception_type == "RuntimeError"
