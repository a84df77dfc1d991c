"""The handler ecotone_django declares itself: running a ``django.tasks`` task in a worker.

:class:`~ecotone_django.task_backends.OutboxBackend` enqueues a task as a :class:`RunTask` command
(an outbox message like any other) and a :class:`~ecotone_django.models.TaskRun` row. Discovery finds
this module as it finds every installed app's ``messaging`` module, so ``consume_channel`` runs
:func:`run_task` like any handler: in the tenant's context, in one transaction with the inbox row.

The task body runs in a savepoint of that transaction. Whatever it does, the result row is updated in
the handling transaction, so a task's effects and its result commit together, once:

* success: ``SUCCESSFUL`` with the JSON return value;
* failure before ``ECOTONE["RETRY"]["MAX_ATTEMPTS"]``: the savepoint is rolled back, the error and its
  traceback are appended to the result (``READY`` again) and a copy of the command is enqueued with the
  retry backoff;
* the last failure: ``FAILED``, and a dead letter holding a copy of the command (a new message id, so
  that ``deadletter replay`` runs the task again rather than being taken for a duplicate).

A worker killed mid-task commits nothing: the message is delivered again and the attempt does not count.

``django.tasks`` (Django 6) or its backport ``django_tasks`` (Django 5.2) is an optional dependency:
this module imports without either, and only running a task needs one (:data:`tasks_api`).
"""

from __future__ import annotations

import json
import os
import socket
import traceback
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils.module_loading import import_string

from .clock import now
from .conf import get_config
from .declarations import command_handler
from .dispatch import current_envelope
from .exceptions import MessageError
from .handlers import Handler, build_handler
from .messages import CAUSATION_ID, Envelope, uuid7
from .models import TaskRun
from .outbox import enqueue
from .storage.dead_letters import dead_letter
from .tenancy import current_alias, current_tenant

try:
    import django.tasks as tasks_api
    from django.tasks import exceptions as tasks_exceptions
    from django.tasks import signals as tasks_signals
    from django.tasks.backends import base as tasks_backend_base
except ImportError:  # Django 5.2: the django-tasks backport, if installed
    try:
        import django_tasks as tasks_api  # type: ignore[no-redef]
        from django_tasks import exceptions as tasks_exceptions  # type: ignore[no-redef]
        from django_tasks import signals as tasks_signals  # type: ignore[no-redef]
        from django_tasks.backends import base as tasks_backend_base  # type: ignore[no-redef]
    except ImportError:
        tasks_api = tasks_exceptions = tasks_signals = tasks_backend_base = None  # type: ignore[assignment]

__all__ = [
    "WORKER_ID",
    "RunTask",
    "require_tasks_api",
    "result_retention",
    "run_task",
    "task_handler",
    "tasks_api",
    "tasks_backend_base",
    "tasks_exceptions",
    "tasks_signals",
    "to_task_result",
]

#: How long ``ecotone_cleanup`` keeps finished task results unless a backend's OPTIONS say otherwise.
DEFAULT_RESULT_RETENTION_SECONDS = 7 * 24 * 3600

#: The columns an attempt changes.
UPDATED_FIELDS = ["status", "return_value", "errors", "worker_ids", "started_at", "finished_at", "last_attempted_at"]

#: The id a worker process records in a result's ``worker_ids``: host and process id.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunTask:
    """Run the task whose result row is ``result_id`` (in the tenant's database) on ECOTONE channel ``channel``."""

    __message_name__ = "ecotone_django.RunTask"

    result_id: str
    task_path: str
    channel: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


def require_tasks_api() -> ModuleType:
    """``django.tasks`` or the ``django_tasks`` backport; a clear error when neither is installed."""
    if tasks_api is None:
        raise ImproperlyConfigured(
            "ecotone_django's task backend needs django.tasks (Django 6.0+) or, on Django 5.2, the "
            "django-tasks backport: pip install 'ecotone-django[tasks]'"
        )
    return tasks_api


@cache
def task_handler() -> Handler:
    """The :class:`Handler` of :func:`run_task` (the same one discovery registers)."""
    return build_handler(run_task, module=__name__, qualname=run_task.__qualname__, owner=None)


def result_retention(backend_alias: str | None = None) -> float:
    """Seconds a finished result is kept: the longest ``OPTIONS["RESULT_RETENTION"]`` of our backends.

    Read from ``settings.TASKS`` directly, so that ``ecotone_cleanup`` works without importing the tasks
    framework. A backend may give seconds or a ``timedelta``.
    """
    found: list[float] = []
    for alias, params in (getattr(settings, "TASKS", None) or {}).items():
        if backend_alias is not None and alias != backend_alias:
            continue
        if not str(params.get("BACKEND", "")).startswith("ecotone_django."):
            continue
        value = params.get("OPTIONS", {}).get("RESULT_RETENTION", DEFAULT_RESULT_RETENTION_SECONDS)
        seconds = value.total_seconds() if hasattr(value, "total_seconds") else value
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ImproperlyConfigured(
                f'TASKS[{alias!r}]["OPTIONS"]["RESULT_RETENTION"] must be seconds or a timedelta, got {value!r}'
            )
        found.append(float(seconds))
    return max(found, default=float(DEFAULT_RESULT_RETENTION_SECONDS))


def _task_of(row: TaskRun) -> Any:
    """The ``Task`` a result row names, with the queue, priority and backend it was enqueued with."""
    api = require_tasks_api()
    task = import_string(row.task_path)
    if not isinstance(task, api.base.Task):
        raise MessageError(f"{row.task_path} is not a django.tasks Task (decorate the function with @task)")
    return task.using(queue_name=row.queue_name, priority=row.priority, backend=row.backend, run_after=row.run_after)


def to_task_result(row: TaskRun, task: Any = None) -> Any:
    """The ``TaskResult`` a result row stands for."""
    api = require_tasks_api()
    result = api.TaskResult(
        task=task if task is not None else _task_of(row),
        id=row.id,
        status=api.TaskResultStatus(row.status),
        enqueued_at=row.enqueued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.last_attempted_at,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        backend=row.backend,
        errors=[api.base.TaskError(**error) for error in row.errors],
        worker_ids=list(row.worker_ids),
    )
    object.__setattr__(result, "_return_value", row.return_value)
    return result


def _error(exc: BaseException) -> dict[str, str]:
    cls = type(exc)
    return {
        "exception_class_path": f"{cls.__module__}.{cls.__qualname__}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _copy(envelope: Envelope) -> Envelope:
    """The same command under a new message id (the inbox has the old one as handled)."""
    return Envelope(envelope.type, envelope.payload, {**envelope.headers, CAUSATION_ID: envelope.id}, str(uuid7()))


@command_handler
def run_task(message: RunTask) -> None:
    """Run the task of ``message`` and record the outcome on its result row (see the module docstring)."""
    api = require_tasks_api()
    alias = current_alias()
    # No FOR UPDATE: the inbox row (inserted first, unique per message) already keeps a second delivery of
    # this message waiting until this one commits, and a task has one copy in flight (its retry is enqueued
    # by the transaction that ends the attempt; a dead letter is replayed only once it is FAILED).
    row = TaskRun.objects.using(alias).filter(pk=message.result_id).order_by().first()
    if row is None:
        raise MessageError(f"no task result {message.result_id!r} in database {alias!r} (deleted meanwhile?)")
    if row.status == TaskRun.SUCCESSFUL:
        return  # a copy of a task that ran already (a replayed dead letter of an earlier attempt)
    task = _task_of(row)
    sender = type(task.get_backend())
    moment = now()
    row.status = TaskRun.RUNNING
    row.started_at = row.started_at or moment
    row.last_attempted_at = moment
    row.worker_ids = [*row.worker_ids, WORKER_ID]
    result = to_task_result(row, task)
    tasks_signals.task_started.send(sender=sender, task_result=result)
    try:
        with transaction.atomic(using=alias):  # a savepoint: a failure undoes the task's writes only
            if task.takes_context:
                value = task.call(api.TaskContext(task_result=result), *message.args, **message.kwargs)
            else:
                value = task.call(*message.args, **message.kwargs)
            value = json.loads(json.dumps(value))  # what a reader of the result gets back, or a TypeError now
    except Exception as exc:
        _record_failure(row, exc, sender)
        return
    row.status, row.finished_at, row.return_value = TaskRun.SUCCESSFUL, now(), value
    row.save(using=alias, update_fields=UPDATED_FIELDS)
    tasks_signals.task_finished.send(sender=sender, task_result=to_task_result(row, task))


def _record_failure(row: TaskRun, exc: Exception, sender: type) -> None:
    """A failed attempt: retry later (a new copy of the command), or ``FAILED`` and a dead letter."""
    envelope = current_envelope()
    if envelope is None:
        raise MessageError("run_task runs only as the handler of a RunTask message") from exc
    alias, retry = current_alias(), get_config().retry
    row.errors = [*row.errors, _error(exc)]
    copy = _copy(envelope)
    channel = envelope.payload["channel"]
    if row.attempts < retry.max_attempts:
        row.status = TaskRun.READY
        row.save(using=alias, update_fields=UPDATED_FIELDS)
        enqueue(copy, task_handler(), channel, now() + retry.delay(row.attempts), attempts=row.attempts)
        return
    row.status, row.finished_at = TaskRun.FAILED, now()
    row.save(using=alias, update_fields=UPDATED_FIELDS)
    dead_letter(
        alias,
        reason=f"task failed {row.attempts} time(s): {type(exc).__name__}: {exc}"[:255],
        body=copy.encode(),
        exc=exc,
        envelope=copy,
        handler_id=task_handler().id,
        channel=channel,
        attempts=row.attempts,
        tenant=current_tenant(),
    )
    tasks_signals.task_finished.send(sender=sender, task_result=to_task_result(row))
