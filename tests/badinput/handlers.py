"""Handlers that misbehave on purpose, for the bad-input catalogue (``ECOTONE["HANDLER_MODULES"]`` of the tests).

Each records a ``tests.testapp`` Record first, so a test can tell that its transaction was rolled back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ecotone_django import asynchronous, command_handler
from ecotone_django.tenancy import current_tenant
from tests.testapp.models import Record

#: The longest a "never returning" handler blocks when no time limit stops it (a test run must end).
FOREVER = 120.0


def _record(name: str, handler: str) -> None:
    Record.objects.create(name=name, handler=handler, tenant=current_tenant() or "")


def _escape(how: str, name: str) -> None:
    if how == "SystemExit":
        raise SystemExit(f"{name}: a handler called sys.exit()")
    if how == "KeyboardInterrupt":
        raise KeyboardInterrupt(f"{name}: a handler raised KeyboardInterrupt")
    raise RuntimeError(f"{name}: fails on every attempt")


@dataclass(frozen=True)
class Misbehave:
    """``how``: SystemExit, KeyboardInterrupt or anything else (a RuntimeError, on every attempt)."""

    name: str
    how: str


@dataclass(frozen=True)
class MisbehaveOnRabbit:
    name: str
    how: str


@dataclass(frozen=True)
class Hang:
    """Blocks (up to FOREVER seconds): only ``consume_channel --time-limit`` gets the worker back."""

    name: str


@asynchronous("db")
@command_handler
def misbehave(command: Misbehave) -> None:
    _record(command.name, "misbehave")
    _escape(command.how, command.name)


@asynchronous("rabbit")
@command_handler
def misbehave_on_rabbit(command: MisbehaveOnRabbit) -> None:
    _record(command.name, "misbehave_on_rabbit")
    _escape(command.how, command.name)


@asynchronous("db")
@command_handler
def hang(command: Hang) -> None:
    _record(command.name, "hang")
    deadline = time.monotonic() + FOREVER
    while time.monotonic() < deadline:
        time.sleep(0.01)
