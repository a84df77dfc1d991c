"""Handling one delivery: the path every channel's messages take.

:func:`process` decodes a delivery, finds its handler, then — in one
transaction on the tenant's database (a savepoint inside a batch) — writes the
inbox row and runs the handler body, its saga state and the messages it sends.
A failure rolls that back and stores a retry (``available_at`` = now + backoff)
or, after ``RETRY["MAX_ATTEMPTS"]``, a dead letter. Bad input is dead-lettered
at once. Nothing a handler raises escapes; database errors outside the handler
(a lost connection) do, so that the caller rolls back and the message is
delivered again.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, OperationalError, connections, transaction

from . import serialization, signals, transactions
from .bus import invoke
from .channels import Delivery
from .conf import get_config
from .discovery import get_registry
from .exceptions import ConcurrencyError, ConversionError, DecodeError, NoHandlerError, UnknownMessageTypeError
from .handlers import Handler
from .messages import Envelope
from .registry import Registry
from .retry import describe, schedule_retry
from .schema import migrate_hint
from .storage import inbox
from .storage.dead_letters import dead_letter, safe_text
from .tenancy import alias_for, tenant_of

__all__ = ["Outcome", "Prepared", "database_of", "prepare", "process", "run"]

logger = logging.getLogger("ecotone_django.worker")

#: Attempts within one delivery when the failure may pass at once (a concurrent saga update, a lost connection).
IMMEDIATE_RETRIES = 3


class Outcome(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(slots=True)
class Prepared:
    """A delivery decoded and matched to its handler, ready to run."""

    delivery: Delivery
    envelope: Envelope
    alias: str
    tenant: str | None
    handler: Handler
    message: Any
    registry: Registry

    @property
    def text(self) -> str:
        """The body as a dead letter stores it (only a failure needs it)."""
        return safe_text(self.delivery.body)


def database_of(delivery: Delivery, fallback_alias: str) -> str:
    """The database handling ``delivery`` writes to: its tenant's, or ``fallback_alias`` if it cannot tell."""
    if delivery.envelope is None:
        return fallback_alias
    alias = alias_for(tenant_of(delivery.envelope))
    return alias if alias in connections.settings else fallback_alias


def _message_class(registry: Registry, handler: Handler, envelope: Envelope) -> type:
    if handler.message_type is not None and envelope.type == handler.message_name:
        return handler.message_type
    cls = registry.message_class(envelope.type)
    if cls is None or (handler.message_type is not None and not issubclass(cls, handler.message_type)):
        raise UnknownMessageTypeError(f"message type {envelope.type!r} is not known to handler {handler.id}")
    return cls


def prepare(delivery: Delivery, *, fallback_alias: str) -> Prepared | Outcome:
    """Decode ``delivery`` and find its handler and database; bad input is dead-lettered (``Outcome.DEAD``)."""
    body, handler_id, channel, attempts = delivery.body, delivery.handler_id, delivery.channel, delivery.attempts
    envelope = delivery.envelope
    try:
        if envelope is None:
            envelope = Envelope.decode(body)
    except DecodeError as exc:
        dead_letter(
            fallback_alias,
            reason=f"undecodable message: {exc}",
            body=safe_text(body),
            exc=exc,
            handler_id=handler_id,
            channel=channel,
            attempts=attempts,
        )
        return Outcome.DEAD
    tenant = tenant_of(envelope)
    alias = alias_for(tenant)
    if alias not in connections.settings:
        dead_letter(
            fallback_alias,
            reason=f"tenant {tenant!r} maps to database {alias!r}, which DATABASES lacks",
            body=safe_text(body),
            envelope=envelope,
            handler_id=handler_id,
            channel=channel,
            tenant=tenant,
        )
        return Outcome.DEAD
    registry = get_registry()
    try:
        handler = registry.get(handler_id)
        message = serialization.from_primitive(_message_class(registry, handler, envelope), envelope.payload)
    except (NoHandlerError, UnknownMessageTypeError, ConversionError) as exc:
        dead_letter(
            alias,
            reason=describe(exc)[:255],
            body=safe_text(body),
            exc=exc,
            envelope=envelope,
            handler_id=handler_id,
            channel=channel,
            attempts=attempts,
            tenant=tenant,
        )
        return Outcome.DEAD
    return Prepared(delivery, envelope, alias, tenant, handler, message, registry)


def run(prepared: Prepared, *, recorded: bool = False) -> Outcome:
    """Run a prepared delivery in its own savepoint (or transaction); a failure stores a retry or dead letter.

    ``recorded``: the caller inserted the inbox row already, in the enclosing transaction (see
    :meth:`~ecotone_django.worker.Worker.handle_many`); a failure then deletes it again, so that the retry
    is not taken for a duplicate. Observers hear of it through :mod:`ecotone_django.signals`.
    """
    if not signals.handling_started.receivers:
        return _run(prepared, recorded)
    sender, context = _observed(prepared)
    signals.handling_started.send(sender=sender, **context)
    outcome: Outcome | None = None
    error: BaseException | None = None
    try:
        outcome = _run(prepared, recorded)
        return outcome
    except BaseException as exc:
        error = exc
        raise
    finally:
        signals.handling_finished.send(
            sender=sender, outcome=outcome.value if outcome else "error", error=error, **context
        )


def _observed(prepared: Prepared) -> tuple[str, dict[str, Any]]:
    """The sender and arguments of the handling signals for ``prepared``."""
    delivery = prepared.delivery
    return delivery.channel, {
        "envelope": prepared.envelope,
        "handler_id": prepared.handler.id,
        "alias": prepared.alias,
        "tenant": prepared.tenant,
        "attempt": delivery.attempts + 1,
    }


def _run(prepared: Prepared, recorded: bool) -> Outcome:
    alias, handler, envelope = prepared.alias, prepared.handler, prepared.envelope
    error: BaseException | None = None
    for _immediate in range(IMMEDIATE_RETRIES):
        try:
            with transactions.message_block(alias):
                if not recorded:
                    inbox.record(alias, handler, envelope)
                invoke(handler, prepared.message, envelope, prepared.registry)
            return Outcome.HANDLED
        except IntegrityError as exc:
            if not recorded and inbox.already_handled(alias, handler, envelope):
                logger.info("duplicate %s for %s skipped", envelope.id, handler.id)
                return Outcome.DUPLICATE
            error = exc  # the handler's own integrity error: a failure like any other
            break
        except ConcurrencyError as exc:
            error = exc
            continue
        except OperationalError as exc:
            if transactions.in_atomic_block(alias):
                raise  # the batch transaction is gone too; the caller rolls back and retries
            error = exc
            continue
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a handler must never kill the worker
            error = exc
            break
    assert error is not None
    return _failed(prepared, error, recorded=recorded)


def _failed(prepared: Prepared, error: BaseException, *, recorded: bool) -> Outcome:
    """Store a retry of a delivery whose handler failed, or its dead letter after the last attempt."""
    alias, handler, envelope, delivery = prepared.alias, prepared.handler, prepared.envelope, prepared.delivery
    attempts = delivery.attempts + 1
    with transaction.atomic(using=alias):
        if recorded:
            inbox.forget(alias, [(inbox.inbox_key(handler, envelope), handler.id)])
        if attempts >= get_config().retry.max_attempts:
            dead_letter(
                alias,
                reason=f"failed {attempts} time(s): {describe(error)}"[:255],
                body=prepared.text,
                exc=error,
                envelope=envelope,
                handler_id=handler.id,
                channel=delivery.channel,
                attempts=attempts,
                tenant=prepared.tenant,
            )
            if signals.message_dead_lettered.receivers:
                sender, context = _observed(prepared)
                signals.message_dead_lettered.send(sender=sender, error=error, reason=describe(error), **context)
            return Outcome.DEAD
        due = schedule_retry(envelope, handler, delivery.channel, attempts, error)
        if signals.message_retried.receivers:
            sender, context = _observed(prepared)
            signals.message_retried.send(sender=sender, error=error, due=due, **context)
    logger.warning("%s failed (attempt %d): %s; retrying later", handler.id, attempts, describe(error))
    return Outcome.RETRY


def process(delivery: Delivery, *, fallback_alias: str) -> Outcome:
    """Handle one delivery; never raises for a bad message or a failing handler.

    Database errors outside the handler (a lost connection) do propagate: the caller rolls back and the
    message is delivered again.
    """
    prepared = prepare(delivery, fallback_alias=fallback_alias)
    return prepared if isinstance(prepared, Outcome) else run(prepared)


def reject(delivery: Delivery, reason: str, exc: BaseException) -> None:
    """Dead-letter a delivery the transport could not read, or that failed unexpectedly.

    A delivery the transport refused (``delivery.error``: unreadable, not ours, not trusted) goes to the
    default database. One that failed unexpectedly goes to its tenant's database, never another's: if that
    database cannot take it (not migrated), :class:`~ecotone_django.exceptions.UnmigratedDatabaseError`
    says so and the caller requeues the message.
    """
    envelope = delivery.envelope
    alias = alias_for(None) if delivery.error is not None else database_of(delivery, alias_for(None))
    with migrate_hint(alias):
        dead_letter(
            alias,
            reason=reason[:255],
            body=safe_text(delivery.body),
            exc=exc,
            envelope=envelope,
            channel=delivery.channel,
            handler_id=delivery.handler_id[:255],
            attempts=delivery.attempts,
            tenant=tenant_of(envelope) if envelope is not None else None,
        )
