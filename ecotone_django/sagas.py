"""Running saga handlers: a saga's state is loaded, changed and saved in the handler's transaction.

A classmethod/staticmethod handler starts an instance (once per id); other
handlers load it by the id the message carries, run, and save it only if the
version is still the one loaded. A concurrent update makes the loser raise
:class:`~ecotone_django.exceptions.ConcurrencyError`: its whole transaction —
handler effects and outgoing messages included — rolls back and the worker
runs it again on fresh state, so no update is lost. Every handled message is
recorded in the saga's history. The saga class itself is declared with
:mod:`ecotone_django.saga_declarations`; its rows live in :mod:`ecotone_django.storage.sagas`.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction

from .conf import get_config
from .dispatch import Services, bind_arguments
from .exceptions import ConversionError, HandlerDeclarationError, SagaNotFoundError
from .handlers import Binding, Handler
from .messages import Envelope, message_name
from .models import SagaState
from .saga_declarations import identifier, is_completed, load_instance, meta_of, saga, state_of
from .storage import sagas as rows
from .tenancy import current_alias, current_tenant

__all__ = ["handle_saga_message", "identifier", "is_completed", "load_saga", "saga", "saga_id_for", "saga_state"]

logger = logging.getLogger("ecotone_django.sagas")


def saga_id_for(handler: Handler, message: Any, envelope: Envelope) -> str | None:
    """The saga id a message addresses: ``identifier_mapping``, else the attribute, else the header of that name."""
    assert handler.owner is not None
    name = meta_of(handler.owner).identifier
    path = handler.identifier_mapping.get(name)
    value: Any
    if path:
        source, _, key = path.partition(".")
        value = envelope.headers.get(key) if source == "headers" else getattr(message, key, None)
    else:
        value = getattr(message, name, None)
        if value is None:
            value = envelope.headers.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        # str() of a list or dict would find no saga and the message would be dropped as "not found"
        raise ConversionError(
            handler.owner.__qualname__, name, f"a saga id must be a string or an integer, got {_shown(value)}"
        )
    return str(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 80 else text[:77] + '...'}"


class _AlreadyStarted(Exception):
    """Rolls back a start handler whose saga turned out to exist already."""


def handle_saga_message(handler: Handler, message: Any, envelope: Envelope, services: Services) -> Any:
    """Run a saga handler in the current tenant's database, in one transaction with its state change."""
    assert handler.owner is not None
    alias = current_alias()
    kwargs = bind_arguments(handler, envelope, services)
    with transaction.atomic(using=alias):
        if handler.starts_saga:
            _start(handler, message, envelope, kwargs, alias)
            return None
        return _continue(handler, message, envelope, kwargs, alias)


def _start(handler: Handler, message: Any, envelope: Envelope, kwargs: dict[str, Any], alias: str) -> None:
    cls = handler.owner
    assert cls is not None
    saga_type = message_name(cls)
    known_id = saga_id_for(handler, message, envelope)
    if known_id is not None and rows.exists(alias, saga_type, known_id):
        _ignored("already exists", saga_type, known_id, handler, envelope)
        return
    try:
        with transaction.atomic(using=alias):  # a savepoint: what the start handler sent goes if it is ignored
            args = (cls, message) if handler.binding is Binding.CLASS else (message,)
            instance = handler.func(*args, **kwargs)
            if instance is None:
                return
            if not isinstance(instance, cls):
                raise HandlerDeclarationError(f"{handler.id} must return a {cls.__qualname__} instance")
            new_id = getattr(instance, meta_of(cls).identifier)
            if new_id is None:
                raise HandlerDeclarationError(f"{handler.id} returned a saga without its identifier set")
            saga_id = str(new_id)
            if saga_id != known_id and rows.exists(alias, saga_type, saga_id):
                raise _AlreadyStarted(saga_id)
            row = rows.create(
                alias,
                saga_type,
                saga_id,
                tenant=current_tenant() or "",
                state=state_of(instance),
                status=_status(instance),
            )
            rows.record(alias, row, handler.id, envelope)
    except _AlreadyStarted as exc:
        _ignored("already exists", saga_type, str(exc), handler, envelope)


def _continue(handler: Handler, message: Any, envelope: Envelope, kwargs: dict[str, Any], alias: str) -> Any:
    cls = handler.owner
    assert cls is not None
    saga_type = message_name(cls)
    saga_id = saga_id_for(handler, message, envelope)
    row = rows.find(alias, saga_type, saga_id) if saga_id is not None else None
    if row is None:
        if get_config().saga_not_found == "raise":
            raise SagaNotFoundError(f"no {saga_type} with id {saga_id!r} for {envelope.type} ({handler.id})")
        logger.warning(
            "no %s with id %r: %s %s dropped by %s", saga_type, saga_id, envelope.type, envelope.id, handler.id
        )
        return None
    if row.status == rows.COMPLETED:
        _ignored("is completed", saga_type, saga_id, handler, envelope)
        return None
    instance = load_instance(cls, row.state)
    result = handler.func(instance, message, **kwargs)
    rows.save(alias, row, state=state_of(instance), status=_status(instance))
    rows.record(alias, row, handler.id, envelope)
    return result


def _ignored(why: str, saga_type: str, saga_id: str | None, handler: Handler, envelope: Envelope) -> None:
    logger.info("%s %s %s: %s %s ignored by %s", saga_type, saga_id, why, envelope.type, envelope.id, handler.id)


def _status(instance: Any) -> str:
    return rows.COMPLETED if is_completed(instance) else rows.ACTIVE


# ---------------------------------------------------------------------------
# Reading sagas
# ---------------------------------------------------------------------------


def saga_state(cls: type, saga_id: str, *, using: str | None = None) -> SagaState | None:
    """The row of saga ``saga_id`` (state, status, version, history) in ``using``, else the tenant's database."""
    return rows.find(using or current_alias(), message_name(cls), str(saga_id))


def load_saga(cls: type, saga_id: str, *, using: str | None = None) -> Any | None:
    """The instance of saga ``saga_id`` from ``using`` (default: the current tenant's database), or ``None``."""
    row = saga_state(cls, saga_id, using=using)
    return None if row is None else load_instance(cls, row.state, completed=row.status == rows.COMPLETED)
