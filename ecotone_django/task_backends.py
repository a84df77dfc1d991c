"""``django.tasks`` through the transactional outbox: :class:`OutboxBackend`.

::

    TASKS = {"default": {
        "BACKEND": "ecotone_django.task_backends.OutboxBackend",
        "QUEUES": ["default", "reports"],           # each an ECOTONE channel; "default" is DEFAULT_CHANNEL
        "OPTIONS": {"RESULT_RETENTION": 7 * 24 * 3600},   # seconds (or a timedelta) ecotone_cleanup keeps results
    }}

``enqueue()`` writes the task as an outbox message and its result row in the current transaction, on
the current tenant's database (:func:`ecotone_django.tenancy.tenant_context`, or the message being
handled); ``consume_channel`` runs it (:mod:`ecotone_django.messaging`). Works with ``django.tasks``
(Django 6.0+) and with the ``django-tasks`` backport on Django 5.2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.core import checks

from .bus import build_envelope
from .channels import channels
from .clock import now
from .conf import get_config
from .declarations import Kind
from .exceptions import ConfigurationError, MessageTooLargeError
from .messages import Envelope
from .messaging import (
    RunTask,
    require_tasks_api,
    task_handler,
    tasks_backend_base,
    tasks_exceptions,
    tasks_signals,
    to_task_result,
)
from .models import TaskRun
from .outbox import enqueue
from .serialization import to_primitive
from .signals import message_sent
from .tenancy import alias_for, current_alias, current_tenant, tenant_of
from .transactions import check_send_transaction

api = require_tasks_api()
# Django names them InvalidTask / InvalidTaskBackend; the backport InvalidTaskError / InvalidTaskBackendError.
InvalidTask: type[Exception] = getattr(tasks_exceptions, "InvalidTask", None) or tasks_exceptions.InvalidTaskError  # type: ignore[attr-defined]
InvalidTaskBackend: type[Exception] = (
    getattr(tasks_exceptions, "InvalidTaskBackend", None) or tasks_exceptions.InvalidTaskBackendError  # type: ignore[attr-defined]
)
TaskResultDoesNotExist = tasks_exceptions.TaskResultDoesNotExist
BaseTaskBackend = tasks_backend_base.BaseTaskBackend

__all__ = ["OutboxBackend"]

#: On database channels a task of priority ``p > 0`` is due ``p`` of these earlier: claimed before tasks of
#: lower priority enqueued up to that long before it. Priorities 0 and below keep the queue's FIFO order.
PRIORITY_STEP = timedelta(seconds=1)


def _tuples_as_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_tuples_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _tuples_as_lists(item) for key, item in value.items()}
    return value


def _json_only(value: Any, what: str) -> Any:
    """``value`` as JSON gives it back (tuples become lists); a ``TypeError`` when it does not survive the trip."""
    value = _tuples_as_lists(value)
    try:
        back = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"task {what} must round-trip through JSON: {exc}") from None
    if back != value:
        raise TypeError(f"task {what} must round-trip through JSON: {value!r} comes back as {back!r}")
    return back


class OutboxBackend(BaseTaskBackend):
    """Tasks as outbox messages: enqueued atomically with the caller's rows, run by ``consume_channel``."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - {"RESULT_RETENTION"})
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(unknown)}; valid: RESULT_RETENTION"
            )

    def channel_of(self, queue_name: str) -> str:
        """The ECOTONE channel a queue names: ``"default"`` is ``ECOTONE["DEFAULT_CHANNEL"]``."""
        name: str | None = queue_name
        if queue_name == api.DEFAULT_TASK_QUEUE_NAME:
            name = get_config().default_channel or (queue_name if queue_name in channels.names() else None)
            if name is None:
                raise InvalidTask(
                    "the 'default' queue is ECOTONE['DEFAULT_CHANNEL'], which is not set; set it or enqueue "
                    "on a queue named after a channel"
                )
        if name not in channels.names():
            raise InvalidTask(
                f"queue {queue_name!r} names no ECOTONE channel; channels are {', '.join(sorted(channels.names()))}"
            )
        return name

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """``ecotone.T001`` for each of ``QUEUES`` that names no ``ECOTONE`` channel."""
        errors: list[checks.CheckMessage] = []
        try:
            get_config()
        except ConfigurationError:
            return errors  # the ECOTONE setting itself is wrong: ecotone.E001 says so
        for queue in sorted(self.queues):
            try:
                self.channel_of(queue)
            except InvalidTask as exc:
                errors.append(checks.Error(f"TASKS[{self.alias!r}]['QUEUES']: {exc}", id="ecotone.T001"))
        return errors

    def validate_task(self, task: Any) -> None:
        super().validate_task(task)
        self.channel_of(task.queue_name)

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        self.validate_task(task)
        channel = self.channel_of(task.queue_name)
        args = _json_only(list(args), "arguments")
        kwargs = _json_only(dict(kwargs), "keyword arguments")
        tenancy = get_config().tenancy
        tenant = current_tenant()
        metadata = {tenancy.header: tenant} if tenancy is not None and tenant is not None else {}
        message = RunTask(result_id="", task_path=task.module_path, channel=channel, args=args, kwargs=kwargs)
        envelope, _ = build_envelope(message, metadata)  # no tenant where one is needed: MissingTenantError
        check_send_transaction(envelope)  # as for a send: the task must not escape a rollback on another database
        message = RunTask(envelope.id, task.module_path, channel, args, kwargs)
        if message_sent.receivers:
            responses: list[tuple[Any, Any]] = message_sent.send(
                sender=Kind.COMMAND, message=message, envelope=envelope
            )
            added = {k: v for _, extra in responses if isinstance(extra, Mapping) for k, v in extra.items()}
            if added:  # trace context from an observer (ecotone_django.telemetry)
                envelope = envelope.with_headers(**added)
        envelope = Envelope(envelope.type, to_primitive(message), envelope.headers, envelope.id)
        size, limit = len(envelope.encode().encode()), get_config().max_message_bytes
        if size > limit:
            raise MessageTooLargeError(f"task {task.module_path} encodes to {size} bytes; the limit is {limit}")
        moment = now()
        available_at = task.run_after
        if available_at is None and task.priority > 0:
            available_at = moment - task.priority * PRIORITY_STEP
        tenant = tenant_of(envelope)
        alias = alias_for(tenant)
        row = TaskRun(
            id=envelope.id,
            task_path=task.module_path,
            backend=self.alias,
            queue_name=task.queue_name,
            priority=task.priority,
            tenant=tenant or "",
            status=TaskRun.READY,
            args=args,
            kwargs=kwargs,
            enqueued_at=moment,
            run_after=task.run_after,
        )
        row.save(using=alias, force_insert=True)
        enqueue(envelope, task_handler(), channel, available_at)
        result = to_task_result(row, task)
        tasks_signals.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> Any:
        """The result ``result_id`` from the current tenant's database."""
        row = TaskRun.objects.using(current_alias()).filter(pk=str(result_id)).first()
        if row is None:
            raise TaskResultDoesNotExist(result_id)
        return to_task_result(row)

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """:meth:`enqueue` on the thread of the caller's database connection, so it joins its transaction."""
        return await sync_to_async(self.enqueue, thread_sensitive=True)(task, args, kwargs)

    async def aget_result(self, result_id: str) -> Any:
        return await sync_to_async(self.get_result, thread_sensitive=True)(result_id)
