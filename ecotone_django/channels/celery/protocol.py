"""The wire format of a :class:`~ecotone_django.channels.celery.CeleryChannel`: a Celery protocol-2 task.

A message is a task named ``ecotone_django.handle`` with JSON arguments
``[envelope, handler_id, channel, attempts]``, so that ``celery worker`` runs it
(:mod:`ecotone_django.tasks`) as well as ``consume_channel``. Only JSON is ever
read: any other content type (pickle above all) is refused unread. With
``ECOTONE["SIGNING"]`` every task carries a signature (:mod:`ecotone_django.signing`)
and a delivery whose signature does not verify is handed over as an error, never
as an envelope.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...exceptions import BadSignatureError, DecodeError
from ...messages import Envelope
from ...signing import Keyring, Signed, get_keyring
from ...tenancy import tenant_of
from ..base import Delivery

if TYPE_CHECKING:
    from kombu.message import Message

    from ...models import OutboxMessage

__all__ = ["JSON", "TASK_NAME", "protocol2_message", "read_task", "task_message"]

TASK_NAME = "ecotone_django.handle"
JSON = "application/json"


def protocol2_message(
    task: str, task_id: str, args: Sequence[Any], argsrepr: str, origin: str = "ecotone_django"
) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for ``task(*args)``, as a Celery worker reads them.

    Every header the protocol definition lists without "optional" is sent: ``parent_id`` and ``group`` as
    ``None`` (a task sent from outside any task, in no group), as ``apply_async`` does. ``apply_async``
    also sends the optional ones with their defaults (``eta``, ``expires``, ``timelimit``, ``retries`` …,
    mostly ``None``); a worker reads those with defaults, so they are left out. Each would cost encoding
    into the AMQP header table on publish and decoding on every consume, in pure Python (py-amqp).
    """
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "argsrepr": argsrepr,
        "origin": origin,
        "ignore_result": True,
    }
    body = json.dumps([list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return headers, body


def task_message(row: OutboxMessage) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for an outbox row, signed when ``ECOTONE["SIGNING"]`` is set."""
    headers, body = protocol2_message(
        TASK_NAME,
        f"{row.message_id}:{row.handler}"[:255],
        [row.body, row.handler, row.channel, row.attempts],
        f"({row.message_type!r}, {row.handler!r})",
    )
    keyring = get_keyring()
    if keyring is not None:
        signed = Signed(row.body, row.message_id, row.message_type, row.tenant, row.handler, row.channel, row.attempts)
        headers.update(keyring.sign(signed))
    return headers, body


def verify(
    keyring: Keyring,
    headers: Mapping[str, Any] | None,
    body: str,
    envelope: Envelope | None,
    handler_id: str,
    channel: str,
    attempts: int,
) -> None:
    """Raise :class:`BadSignatureError` unless ``headers`` sign this task (see :func:`task_message`)."""
    if envelope is None:
        raise BadSignatureError("bad signature: the envelope cannot be decoded, so its signature cannot be checked")
    tenant = tenant_of(envelope) or ""
    keyring.verify(headers, Signed(body, envelope.id, envelope.type, tenant, handler_id, channel, attempts))


def _arguments(headers: Mapping[str, Any] | None, content_type: str | None, body: bytes | str) -> list[Any]:
    """The arguments of an ``ecotone_django.handle`` task message, or DecodeError saying what is wrong."""
    if content_type != JSON:
        raise DecodeError(f"content type {content_type!r} refused: only {JSON} is accepted (never unpickled)")
    task = (headers or {}).get("task")
    if task is None:
        raise DecodeError("not a Celery task message: no 'task' header")
    if task != TASK_NAME:
        raise DecodeError(f"unknown task {str(task)[:100]!r}: this queue carries only {TASK_NAME} tasks")
    try:
        decoded = json.loads(body)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"task body is not UTF-8 JSON: {exc}") from None
    except ValueError as exc:
        raise DecodeError(f"task body is not valid JSON: {exc}") from None
    if not (isinstance(decoded, list) and decoded and isinstance(decoded[0], list) and len(decoded[0]) == 4):
        raise DecodeError("malformed task body: expected [[envelope, handler, channel, attempts], {}, {...}]")
    envelope, handler_id, channel, attempts = decoded[0]
    if not (
        isinstance(envelope, str)
        and isinstance(handler_id, str)
        and isinstance(channel, str)
        and isinstance(attempts, int)
        and not isinstance(attempts, bool)
    ):
        raise DecodeError("task arguments must be [envelope: str, handler: str, channel: str, attempts: int]")
    return decoded[0]


def read_task(message: Message, channel: str) -> Delivery:
    """The delivery a task message carries, its envelope decoded where it can be.

    A message that is not our task becomes a delivery with ``error`` set, its raw body, and the task
    name it gave (if any) as the handler: the worker dead-letters it.
    """
    try:
        body, handler_id, task_channel, attempts = _arguments(message.headers, message.content_type, message.body)
    except DecodeError as exc:
        task = str((message.headers or {}).get("task") or "")
        return Delivery(message.body, task[:255], channel, error=exc, tag=message)
    try:
        envelope: Envelope | None = Envelope.decode(body)
    except DecodeError:
        envelope = None  # the worker dead-letters it with the reason
    keyring = get_keyring()
    if keyring is not None:
        try:
            verify(keyring, message.headers, body, envelope, handler_id, task_channel, attempts)
        except BadSignatureError as exc:  # never handled, and dead-lettered in the default database
            return Delivery(body, handler_id, task_channel, attempts, error=exc, tag=message)
    return Delivery(body, handler_id, task_channel, attempts, envelope, tag=message)
