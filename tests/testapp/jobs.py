"""``django.tasks`` tasks the task backend tests enqueue (TASKS["default"] is the OutboxBackend)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async

from ecotone_django.messaging import tasks_api
from ecotone_django.tenancy import current_tenant
from tests.testapp.models import Record

task: Any = tasks_api.task if tasks_api is not None else (lambda *a, **k: lambda f: f)


def _record(name: str, handler: str) -> Record:
    return Record.objects.create(name=name, handler=handler, tenant=current_tenant() or "")


@task
def add(a: int, b: int) -> int:
    return a + b


@task(queue_name="db")
def record(name: str) -> dict[str, Any]:
    row = _record(name, "record")
    return {"name": name, "tenant": current_tenant(), "pk": row.pk}


@task(queue_name="rabbit")
def record_on_rabbit(name: str) -> str:
    _record(name, "record_on_rabbit")
    return name


@task(takes_context=True)
def flaky(context: Any, name: str, succeed_on: int) -> int:
    """Records, then fails until attempt ``succeed_on``; the failed attempts' records roll back."""
    _record(f"{name}-{context.attempt}", "flaky")
    if context.attempt < succeed_on:
        raise ValueError(f"attempt {context.attempt} fails")
    return int(context.attempt)


@task
def returns_a_set() -> Any:
    return {1, 2}


@task
def slow(name: str, started_file: str, release_file: str) -> str:
    """Records, then blocks until ``release_file`` exists (a test kills the worker meanwhile)."""
    _record(name, "slow")
    Path(started_file).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(release_file).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return name


@task
async def arecord(name: str) -> str:
    await sync_to_async(_record)(name, "arecord")
    return name.upper()


@task(priority=50)
def urgent(name: str) -> str:
    _record(name, "urgent")
    return name
