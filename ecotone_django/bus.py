"""Command, event and query buses.

A bus turns a message object into an :class:`~ecotone_django.messages.Envelope`
(headers propagated from the message being handled, if any), finds its
handlers, runs synchronous ones in the tenant's context and transaction, and
hands asynchronous ones — one envelope per handler — to the outbox of the
tenant's database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

from asgiref.sync import sync_to_async
from django.db import transaction

from . import serialization
from .clock import now
from .conf import get_config
from .declarations import Injected, Kind
from .discovery import get_registry
from .dispatch import Services, call_handler, current_envelope, handling
from .exceptions import InvalidMetadataError, MessageTooLargeError, MissingTenantError, NoHandlerError
from .handlers import Handler
from .messages import CAUSATION_ID, CORRELATION_ID, TIMESTAMP, TRACE_HEADERS, Envelope, message_name, uuid7
from .outbox import enqueue
from .registry import Registry
from .sagas import handle_saga_message
from .schema import migrate_hint
from .signals import message_sent
from .tenancy import alias_for, current_tenant, tenant_context, tenant_of
from .transactions import check_send_transaction

__all__ = ["CommandBus", "EventBus", "QueryBus", "command_bus", "event_bus", "query_bus", "send_to_channel"]

RESERVED_METADATA = ("delay", "deliver_at")
MAX_DELAY = timedelta(days=3660)
TIMEDELTA_SECONDS = timedelta.max.total_seconds()  # beyond it, timedelta(seconds=...) overflows


def _delivery_time(metadata: Mapping[str, Any]) -> datetime | None:
    delay, deliver_at = metadata.get("delay"), metadata.get("deliver_at")
    if delay is not None and deliver_at is not None:
        raise InvalidMetadataError("give either 'delay' or 'deliver_at', not both")
    if deliver_at is not None:
        if not isinstance(deliver_at, datetime):
            raise InvalidMetadataError(f"'deliver_at' must be a datetime, got {type(deliver_at).__name__}")
        if deliver_at.tzinfo is None or deliver_at.utcoffset() is None:
            raise InvalidMetadataError("'deliver_at' must be timezone-aware (a naive datetime is ambiguous)")
        if deliver_at - now() > MAX_DELAY:
            raise InvalidMetadataError(f"'deliver_at' {deliver_at.isoformat()} is more than {MAX_DELAY.days} days away")
        return deliver_at
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, timedelta | int | float):
            raise InvalidMetadataError(f"'delay' must be a timedelta or seconds, got {delay!r}")
        if not isinstance(delay, timedelta) and not (math.isfinite(delay) and abs(delay) < TIMEDELTA_SECONDS):
            # timedelta() itself would fail with ValueError / OverflowError, naming neither 'delay' nor the limit
            raise InvalidMetadataError(f"'delay' must be finite seconds within {MAX_DELAY.days} days, got {delay!r}")
        delta = delay if isinstance(delay, timedelta) else timedelta(seconds=delay)
        if delta < timedelta(0):
            raise InvalidMetadataError(f"'delay' must not be negative, got {delta}")
        if delta > MAX_DELAY:
            raise InvalidMetadataError(f"'delay' of {delta} is more than {MAX_DELAY.days} days")
        return now() + delta
    return None


def _sent(kind: Kind, message: Any, metadata: Mapping[str, Any] | None) -> tuple[Envelope, datetime | None]:
    """:func:`build_envelope`, then announce the message (:data:`~ecotone_django.signals.message_sent`)."""
    envelope, available_at = build_envelope(message, metadata)
    if kind is not Kind.QUERY:
        check_send_transaction(envelope)  # a message must not escape the rollback of a transaction elsewhere
    if message_sent.receivers:
        responses: list[tuple[Any, Any]] = message_sent.send(sender=kind, message=message, envelope=envelope)
        added = {k: v for _, extra in responses if isinstance(extra, Mapping) for k, v in extra.items()}
        if added:  # trace context from an observer (ecotone_django.telemetry)
            envelope = envelope.with_headers(**added)
    return envelope, available_at


def build_envelope(message: Any, metadata: Mapping[str, Any] | None) -> tuple[Envelope, datetime | None]:
    """The envelope of ``message``: propagated headers, then ``metadata``; plus its delivery time."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidMetadataError(
            f"metadata must be a mapping of header names to values, got {type(metadata).__name__}"
        )
    metadata = dict(metadata or {})
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidMetadataError(f"metadata keys are header names (str), got {key!r}")
    available_at = _delivery_time(metadata)
    message_id = str(uuid7())
    headers: dict[str, Any] = {}
    parent = current_envelope()
    tenancy = get_config().tenancy
    if parent is not None:
        if tenancy is not None and tenancy.header in parent.headers:
            headers[tenancy.header] = parent.headers[tenancy.header]
        headers[CORRELATION_ID] = parent.headers.get(CORRELATION_ID, parent.id)
        headers[CAUSATION_ID] = parent.id
        for key in TRACE_HEADERS:  # the trace goes on even where no tracer runs (telemetry replaces it otherwise)
            if key in parent.headers:
                headers[key] = parent.headers[key]
    headers.update({k: v for k, v in metadata.items() if k not in RESERVED_METADATA})
    if tenancy is not None and current_tenant() is not None:  # a request's tenant (TenantMiddleware)
        headers.setdefault(tenancy.header, current_tenant())
    headers.setdefault(CORRELATION_ID, message_id)
    headers[TIMESTAMP] = now().isoformat()
    if tenancy is not None and headers.get(tenancy.header) in (None, ""):
        other_case = [key for key in metadata if key != tenancy.header and key.lower() == tenancy.header.lower()]
        raise MissingTenantError(
            f"{message_name(type(message))} was sent without the {tenancy.header!r} header"
            + (f" (metadata has {other_case[0]!r}: header names are case-sensitive)" if other_case else "")
            + f"; tenancy is configured, so pass metadata={{{tenancy.header!r}: ...}} (handlers' buses propagate it)"
        )
    if tenancy is not None and (
        isinstance(headers[tenancy.header], bool) or not isinstance(headers[tenancy.header], str | int)
    ):
        # str() of a list or dict names no tenant: the message would land in the shared database unnoticed
        raise InvalidMetadataError(
            f"the {tenancy.header!r} header must be a tenant name (str or int), got {headers[tenancy.header]!r}"
        )
    return Envelope(type=message_name(type(message)), payload=None, headers=headers, id=message_id), available_at


def invoke(handler: Handler, message: Any, envelope: Envelope, registry: Registry) -> Any:
    """Run ``handler`` for ``message`` in the message's tenant context, then follow its output channel."""
    with tenant_context(tenant_of(envelope)), handling(envelope):
        if handler.is_saga:
            result = handle_saga_message(handler, message, envelope, SERVICES)
        else:
            result = call_handler(handler, message, envelope, registry, SERVICES)
        if handler.output_channel is not None and result is not None:
            send_to_channel(handler.output_channel, result)
    return result


def _dispatch(
    handler: Handler, message: Any, envelope: Envelope, available_at: datetime | None, registry: Registry
) -> Any:
    """Run a synchronous handler now, or enqueue a copy of the message for an asynchronous one."""
    delay_at = available_at
    if handler.delay is not None:
        delay_at = max(delay_at or now(), now() + handler.delay)
    if handler.is_async or delay_at is not None:
        channel = handler.channel or get_config().default_channel
        if channel is None:
            raise InvalidMetadataError(
                f"{handler.id} is synchronous; a delayed message needs @asynchronous or ECOTONE['DEFAULT_CHANNEL']"
            )
        with migrate_hint(alias_for(tenant_of(envelope))):  # an unmigrated tenant database: say how to fix it
            enqueue(_with_payload(envelope, message), handler, channel, delay_at)
        return None
    alias = alias_for(tenant_of(envelope))
    with migrate_hint(alias), transaction.atomic(using=alias):
        return invoke(handler, message, envelope, registry)


def _with_payload(envelope: Envelope, message: Any) -> Envelope:
    if envelope.payload is not None:
        return envelope
    full = Envelope(envelope.type, serialization.to_primitive(message), envelope.headers, envelope.id)
    limit = get_config().max_message_bytes
    size = len(full.encode().encode())
    if size > limit:
        raise MessageTooLargeError(f"{envelope.type} encodes to {size} bytes; ECOTONE['MAX_MESSAGE_BYTES'] is {limit}")
    return full


class CommandBus:
    """Send a command to its one handler; returns its result when the handler is synchronous."""

    __ecotone_injected__: ClassVar[Injected] = Injected.COMMAND_BUS

    def send(self, command: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        registry = get_registry()
        handler = registry.single(type(command), Kind.COMMAND)
        envelope, available_at = _sent(Kind.COMMAND, command, metadata)
        return _dispatch(handler, command, envelope, available_at, registry)

    async def asend(self, command: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        """:meth:`send` from async code, on the thread that holds the caller's database connections.

        ``sync_to_async(thread_sensitive=True)``: the send runs where the view's other ORM calls run, so
        it uses the same connection. Outside a transaction it commits (and publishes) at once, as
        :meth:`send` does; to send atomically with rows, put ``transaction.atomic`` and a plain
        :meth:`send` in one function and await it with ``sync_to_async``.
        """
        return await sync_to_async(self.send, thread_sensitive=True)(command, metadata)


class EventBus:
    """Publish an event to every handler subscribed to its class (or a base class)."""

    __ecotone_injected__: ClassVar[Injected] = Injected.EVENT_BUS

    def publish(self, event: Any, metadata: Mapping[str, Any] | None = None) -> None:
        registry = get_registry()
        envelope, available_at = _sent(Kind.EVENT, event, metadata)
        handlers = registry.for_message(type(event), Kind.EVENT)
        if not handlers:
            return
        if any(h.is_async or h.delay for h in handlers) or available_at is not None:
            envelope = _with_payload(envelope, event)
        alias = alias_for(tenant_of(envelope))
        with transaction.atomic(using=alias):
            for handler in handlers:
                _dispatch(handler, event, envelope, available_at, registry)

    async def apublish(self, event: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """:meth:`publish` from async code (see :meth:`CommandBus.asend` for the transaction semantics)."""
        await sync_to_async(self.publish, thread_sensitive=True)(event, metadata)


class QueryBus:
    """Ask a query of its one (synchronous) handler and return the answer."""

    __ecotone_injected__: ClassVar[Injected] = Injected.QUERY_BUS

    def send(self, query: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        registry = get_registry()
        handler = registry.single(type(query), Kind.QUERY)
        envelope, _ = _sent(Kind.QUERY, query, metadata)
        return invoke(handler, query, envelope, registry)

    async def aquery(self, query: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        """:meth:`send` from async code (see :meth:`CommandBus.asend` for the transaction semantics)."""
        return await sync_to_async(self.send, thread_sensitive=True)(query, metadata)


def send_to_channel(name: str, message: Any, metadata: Mapping[str, Any] | None = None) -> None:
    """Send ``message`` to the internal handlers listening on input channel ``name`` (pipelines)."""
    registry = get_registry()
    handlers = [h for h in registry.for_input_channel(name) if h.kind == Kind.INTERNAL]
    if not handlers:
        raise NoHandlerError(f"no @internal_handler listens on {name!r}")
    envelope, available_at = _sent(Kind.INTERNAL, message, metadata)
    for handler in handlers:
        _dispatch(handler, message, envelope, available_at, registry)


command_bus = CommandBus()
event_bus = EventBus()
query_bus = QueryBus()

#: What a handler parameter annotated with a bus class receives (see ecotone_django.dispatch).
SERVICES: Services = {Injected.COMMAND_BUS: command_bus, Injected.EVENT_BUS: event_bus, Injected.QUERY_BUS: query_bus}
