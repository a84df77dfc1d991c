"""Sending a dead letter again: ``manage.py deadletter replay`` and the admin's "replay" action.

:func:`replay` re-enqueues the letter's envelope — same message id, attempts
back to zero — for its handler, on the handler's channel (or the channel it
died on), in the database that holds the letter, and deletes the letter: one
transaction. Keeping the message id means the inbox still guards against a
second handling. A letter that cannot be sent again (undecodable body, handler
gone, tenant now living in another database) raises :class:`ReplayError` and
stays where it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from django.db import transaction

from .channels import channels
from .conf import get_config
from .discovery import get_registry
from .exceptions import ConfigurationError, DecodeError, NoHandlerError, ReplayError
from .handlers import Handler
from .messages import Envelope
from .models import DeadLetter, OutboxMessage
from .outbox import enqueue
from .tenancy import alias_for, tenant_of


def _envelope(letter: DeadLetter) -> Envelope:
    try:
        return Envelope.decode(letter.body)
    except DecodeError as exc:
        wrapped = _task_argument(letter.body)
        if wrapped is not None:
            return wrapped
        raise ReplayError(
            f"dead letter {letter.pk} cannot be replayed: its body is not a valid envelope ({exc})"
        ) from None


def _task_argument(body: str) -> Envelope | None:
    """The envelope inside a Celery task body ``[[envelope, handler, channel, attempts], {}, {...}]``.

    Version 0.1 dead-lettered some broker deliveries with the task body instead of the envelope it carries.
    """
    try:
        decoded = json.loads(body)
        if isinstance(decoded, list) and decoded and isinstance(decoded[0], list) and decoded[0]:
            return Envelope.decode(decoded[0][0]) if isinstance(decoded[0][0], str) else None
    except (ValueError, DecodeError):
        return None
    return None


def _handler(letter: DeadLetter) -> Handler:
    if not letter.handler:
        raise ReplayError(f"dead letter {letter.pk} cannot be replayed: it names no handler")
    try:
        return get_registry().get(letter.handler)
    except NoHandlerError:
        raise ReplayError(
            f"dead letter {letter.pk} cannot be replayed: its handler {letter.handler!r} is no longer registered"
        ) from None


def _channel(letter: DeadLetter, handler: Handler) -> str:
    name = handler.channel or letter.channel or get_config().default_channel
    if not name:
        raise ReplayError(f"dead letter {letter.pk} cannot be replayed: {handler.id} has no channel to run on")
    try:
        channels.concrete(name)
    except ConfigurationError as exc:
        raise ReplayError(f"dead letter {letter.pk} cannot be replayed: {exc}") from None
    return name


def replay(letter: DeadLetter, using: str) -> OutboxMessage:
    """Re-enqueue ``letter`` (stored in database ``using``) for its handler and delete it, atomically."""
    envelope = _envelope(letter)
    handler = _handler(letter)
    channel = _channel(letter, handler)
    target = alias_for(tenant_of(envelope))
    if target != using:
        raise ReplayError(
            f"dead letter {letter.pk} cannot be replayed from {using!r}: its tenant "
            f"{tenant_of(envelope)!r} now maps to database {target!r}"
        )
    with transaction.atomic(using=using):
        # Lock the letter so that two concurrent replays cannot both enqueue it.
        if not DeadLetter.objects.using(using).select_for_update().filter(pk=letter.pk).exists():
            raise ReplayError(f"dead letter {letter.pk} is gone from {using!r} (replayed or deleted meanwhile)")
        row = enqueue(envelope, handler, channel, None, attempts=0)
        DeadLetter.objects.using(using).filter(pk=letter.pk).delete()
    return row


def replay_many(letters: Iterable[DeadLetter], using: str) -> tuple[int, list[ReplayError]]:
    """Replay each letter on its own; returns how many were replayed and the errors of the rest."""
    replayed, errors = 0, []
    for letter in list(letters):  # fetched first: replaying writes on the same connection
        try:
            replay(letter, using)
        except ReplayError as exc:
            errors.append(exc)
        else:
            replayed += 1
    return replayed, errors
