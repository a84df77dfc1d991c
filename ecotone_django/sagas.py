"""Sagas: stateful coordinators persisted by identifier.

::

    @saga
    class OrderSaga:
        order_id: str = identifier()
        stage: OrderStage = OrderStage.PLACED_AWAITING_PAYMENT

A saga's state is its annotated attributes, stored as JSON in
``ecotone_saga`` of the tenant's database, in the handler's transaction, with a
version. Saving checks the version it loaded (optimistic concurrency): a
concurrent update makes the loser raise :class:`ConcurrencyError`, its whole
transaction rolls back and the worker runs it again on fresh state.
"""

from __future__ import annotations

import logging
import typing
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import IntegrityError, transaction

from . import serialization
from .clock import now
from .conf import get_config
from .exceptions import ConcurrencyError, HandlerDeclarationError, SagaNotFoundError
from .handlers import Handler, Registry, bind_arguments
from .messages import Envelope, message_name
from .models import SagaHistory, SagaState
from .tenancy import current_alias, current_tenant

logger = logging.getLogger("ecotone_django.sagas")

C = TypeVar("C", bound=type)
SAGA_ATTR = "__ecotone_saga__"
STATE_ATTR = "__ecotone_saga_state__"


class _Identifier:
    def __repr__(self) -> str:
        return "identifier()"


def identifier() -> Any:
    """Mark the saga attribute that identifies an instance: ``order_id: str = identifier()``."""
    return _Identifier()


@dataclass(frozen=True)
class SagaMeta:
    identifier: str
    fields: dict[str, Any]


def saga(cls: C) -> C:
    """Declare a saga class (instantiated with ``cls()``; its handlers are its decorated methods)."""
    hints = typing.get_type_hints(cls)
    fields = {
        name: hint
        for name, hint in hints.items()
        if typing.get_origin(hint) is not typing.ClassVar and not name.startswith("_")
    }
    ids = [name for name in fields if isinstance(cls.__dict__.get(name), _Identifier)]
    if len(ids) != 1:
        raise HandlerDeclarationError(
            f"saga {cls.__qualname__} needs exactly one attribute marked identifier(), found {ids or 'none'}"
        )
    setattr(cls, ids[0], None)
    setattr(cls, SAGA_ATTR, SagaMeta(ids[0], fields))
    if not hasattr(cls, "complete"):
        cls.complete = _complete  # type: ignore[attr-defined]
    return cls


def _complete(self: Any) -> None:
    """Mark this saga completed; its row stays for inspection and later messages are ignored."""
    self.__dict__["_ecotone_completed"] = True


def is_saga(cls: type) -> bool:
    return isinstance(cls.__dict__.get(SAGA_ATTR), SagaMeta)


def meta_of(cls: type) -> SagaMeta:
    meta = cls.__dict__.get(SAGA_ATTR)
    if not isinstance(meta, SagaMeta):
        raise HandlerDeclarationError(f"{cls.__qualname__} is not a @saga class")
    return meta


def state_of(instance: Any) -> dict[str, Any]:
    meta = meta_of(type(instance))
    return {name: serialization.to_primitive(getattr(instance, name, None)) for name in meta.fields}


def load_instance(cls: type, state: dict[str, Any]) -> Any:
    meta = meta_of(cls)
    instance = cls()
    for name, hint in meta.fields.items():
        if name in state:
            setattr(instance, name, serialization.from_primitive(hint, state[name]))
    return instance


def saga_id_for(handler: Handler, message: Any, envelope: Envelope) -> str | None:
    """The saga id an incoming message addresses: mapping, else the attribute or header named like the identifier."""
    assert handler.owner is not None
    name = meta_of(handler.owner).identifier
    path = handler.identifier_mapping.get(name)
    value: Any = None
    if path:
        source, _, key = path.partition(".")
        if source == "headers":
            value = envelope.headers.get(key)
        elif source == "payload":
            value = getattr(message, key, None)
        else:
            raise HandlerDeclarationError(
                f"{handler.id}: identifier_mapping values start with 'payload.' or 'headers.'"
            )
    else:
        value = getattr(message, name, None)
        if value is None:
            value = envelope.headers.get(name)
    return None if value is None else str(value)


def _record(row: SagaState, handler: Handler, envelope: Envelope, alias: str) -> None:
    SagaHistory.objects.using(alias).create(
        saga=row, message_id=envelope.id, message_type=envelope.type, handler=handler.id, handled_at=now()
    )


def handle_saga_message(handler: Handler, message: Any, envelope: Envelope, registry: Registry) -> Any:
    """Run a saga handler: start a new instance, or load one, call it and save it with a version check."""
    cls = handler.owner
    assert cls is not None
    alias = current_alias()
    saga_type = message_name(cls)
    kwargs = bind_arguments(handler, envelope)
    saga_id = saga_id_for(handler, message, envelope)
    rows = SagaState.objects.using(alias)
    with transaction.atomic(using=alias):
        if handler.starts_saga:
            if saga_id is not None and rows.filter(saga_type=saga_type, saga_id=saga_id).exists():
                logger.info("%s %s already exists; start message %s ignored", saga_type, saga_id, envelope.id)
                return None
            args = (cls, message) if handler.binding == "class" else (message,)
            instance = handler.func(*args, **kwargs)
            if instance is None:
                return None
            if not isinstance(instance, cls):
                raise HandlerDeclarationError(f"{handler.id} must return a {cls.__qualname__} instance")
            new_id = getattr(instance, meta_of(cls).identifier)
            if new_id is None:
                raise HandlerDeclarationError(f"{handler.id} returned a saga without its identifier set")
            moment = now()
            try:
                with transaction.atomic(using=alias):
                    row = rows.create(
                        saga_type=saga_type,
                        saga_id=str(new_id),
                        tenant=current_tenant() or "",
                        state=state_of(instance),
                        status=_status(instance),
                        created_at=moment,
                        updated_at=moment,
                    )
            except IntegrityError:
                raise ConcurrencyError(f"{saga_type} {new_id} was started concurrently") from None
            _record(row, handler, envelope, alias)
            return None

        found = rows.filter(saga_type=saga_type, saga_id=saga_id).first() if saga_id is not None else None
        if found is None:
            if get_config().saga_not_found == "raise":
                raise SagaNotFoundError(f"no {saga_type} with id {saga_id!r} for {envelope.type} ({handler.id})")
            logger.warning("no %s with id %r; %s dropped for %s", saga_type, saga_id, envelope.type, handler.id)
            return None
        row = found
        if row.status == SagaState.COMPLETED:
            logger.info("%s %s is completed; %s ignored by %s", saga_type, saga_id, envelope.type, handler.id)
            return None
        instance = load_instance(cls, row.state)
        result = handler.func(instance, message, **kwargs)
        updated = rows.filter(pk=row.pk, version=row.version).update(
            state=state_of(instance), status=_status(instance), version=row.version + 1, updated_at=now()
        )
        if updated != 1:
            raise ConcurrencyError(f"{saga_type} {saga_id} changed concurrently (version {row.version})")
        _record(row, handler, envelope, alias)
        return result


def _status(instance: Any) -> str:
    return SagaState.COMPLETED if instance.__dict__.get("_ecotone_completed") else SagaState.ACTIVE


def load_saga(cls: type, saga_id: str, *, using: str | None = None) -> Any | None:
    """The saga instance with ``saga_id`` from ``using`` (default: the current tenant's database)."""
    row = SagaState.objects.using(using or current_alias()).filter(saga_type=message_name(cls), saga_id=saga_id).first()
    return None if row is None else load_instance(cls, row.state)
