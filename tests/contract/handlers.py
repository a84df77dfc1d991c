"""Handlers the transport contract runs on every channel (``ECOTONE["HANDLER_MODULES"]`` of the test settings).

They are ``@asynchronous("contract")``: a dynamic channel that picks the channel under test from the
``channel_under_test`` header, so one handler runs on the database channel, RabbitMQ, Redis, SQS or Kafka.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ecotone_django import asynchronous, command_handler
from ecotone_django.tenancy import current_tenant
from tests.testapp.models import Record


@dataclass(frozen=True)
class Note:
    """Recorded once per handling (``Record(name, handler="note")``)."""

    name: str


@dataclass(frozen=True)
class Hold:
    """Recorded, then held until ``release_file`` exists; ``started_file`` gets the worker's pid."""

    name: str
    started_file: str
    release_file: str


@dataclass(frozen=True)
class Doomed:
    """Always fails: retried, then dead-lettered."""

    name: str


@asynchronous("contract")
@command_handler
def note(command: Note) -> None:
    Record.objects.create(name=command.name, handler="note", tenant=current_tenant() or "")


@asynchronous("contract")
@command_handler
def hold(command: Hold) -> None:
    Record.objects.create(name=command.name, handler="hold", tenant=current_tenant() or "")
    Path(command.started_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(command.release_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@asynchronous("contract")
@command_handler
def doomed(command: Doomed) -> None:
    raise RuntimeError(f"{command.name} fails on purpose")
