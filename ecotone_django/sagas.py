"""Sagas: stateful coordinators persisted by identifier.

::

    @saga
    class OrderSaga:
        order_id: str = identifier()
        stage: OrderStage = OrderStage.PLACED_AWAITING_PAYMENT

        @event_handler
        @classmethod
        def start(cls, event: OrderPlaced) -> "OrderSaga": ...

A saga's state is its public annotated attributes, stored as JSON in
``ecotone_saga`` of the tenant's database, in the handler's transaction, with a
version. A classmethod/staticmethod handler starts an instance (once per id);
other handlers load it by the id the message carries, run, and save it only if
the version is still the one loaded. A concurrent update makes the loser raise
:class:`~ecotone_django.exceptions.ConcurrencyError`: its whole transaction —
handler effects and outgoing messages included — rolls back and the worker
runs it again on fresh state, so no update is lost. Every handled message is
recorded in ``ecotone_saga_history``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import IntegrityError, transaction

from . import serialization
from .clock import now
from .conf import get_config
from .exceptions import ConcurrencyError, ConversionError, HandlerDeclarationError, SagaNotFoundError
from .handlers import Handler, Registry, bind_arguments, spec_of
from .messages import Envelope, message_name
from .models import SagaHistory, SagaState
from .tenancy import current_alias, current_tenant

__all__ = ["identifier", "is_completed", "load_saga", "saga", "saga_state"]

logger = logging.getLogger("ecotone_django.sagas")

C = TypeVar("C", bound=type)
SAGA_ATTR = "__ecotone_saga__"
COMPLETED_ATTR = "_ecotone_completed"
MAPPING_SOURCES = ("payload", "headers")
_MUTABLE = (list, dict, set)


class _Identifier:
    def __repr__(self) -> str:
        return "identifier()"


def identifier() -> Any:
    """Mark the saga attribute that identifies an instance: ``order_id: str = identifier()``."""
    return _Identifier()


@dataclass
class SagaMeta:
    """What :func:`saga` learnt about a class; the type hints are resolved on first use (forward references)."""

    cls: type
    identifier: str
    names: tuple[str, ...]
    _fields: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def fields(self) -> dict[str, Any]:
        """State attribute name → type hint."""
        if self._fields is None:
            try:
                hints = typing.get_type_hints(self.cls)
            except Exception as exc:
                raise HandlerDeclarationError(
                    f"cannot resolve the annotations of saga {self.cls.__qualname__}: {exc}"
                ) from exc
            self._fields = {
                name: hints[name]
                for name in self.names
                if name in hints and typing.get_origin(hints[name]) is not typing.ClassVar
            }
        return self._fields


def _state_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, annotation in inspect.get_annotations(klass).items():
            is_classvar = annotation is typing.ClassVar or typing.get_origin(annotation) is typing.ClassVar
            if isinstance(annotation, str):
                is_classvar = annotation.startswith(("ClassVar", "typing.ClassVar"))
            if not name.startswith("_") and not is_classvar and name not in names:
                names.append(name)
    return names


def _check_handlers(cls: type, id_name: str) -> None:
    starts = 0
    for attr, member in vars(cls).items():
        spec = spec_of(member)
        if spec is None or spec.kind is None:
            continue
        starts += isinstance(member, classmethod | staticmethod)
        for key, path in spec.identifier_mapping.items():
            source, _, rest = str(path).partition(".")
            if key != id_name or source not in MAPPING_SOURCES or not rest:
                raise HandlerDeclarationError(
                    f"{cls.__qualname__}.{attr}: identifier_mapping must map {id_name!r} to 'payload.<attribute>' "
                    f"or 'headers.<name>', got {{{key!r}: {path!r}}}"
                )
    if not starts:
        raise HandlerDeclarationError(
            f"saga {cls.__qualname__} has no start handler: declare a @classmethod or @staticmethod handler "
            "that returns the new instance"
        )


def saga(cls: C) -> C:
    """Declare a saga class: instantiated with ``cls()``, its handlers are its decorated methods."""
    names = _state_names(cls)
    ids = [n for n in names if any(isinstance(k.__dict__.get(n), _Identifier) for k in cls.__mro__)]
    if len(ids) != 1:
        raise HandlerDeclarationError(
            f"saga {cls.__qualname__} needs exactly one attribute marked identifier(), found {ids or 'none'}"
        )
    _check_handlers(cls, ids[0])
    setattr(cls, ids[0], None)
    setattr(cls, SAGA_ATTR, SagaMeta(cls, ids[0], tuple(names)))
    _copy_mutable_defaults(cls, names)
    if not hasattr(cls, "complete"):
        cls.complete = _complete  # type: ignore[attr-defined]
    return cls


def _copy_mutable_defaults(cls: type, names: list[str]) -> None:
    """Give each instance its own copy of list/dict/set class defaults (``items: list[str] = []``)."""
    mutable = [n for n in names if isinstance(getattr(cls, n, None), _MUTABLE)]
    if not mutable:
        return
    original: Any = typing.cast(Any, cls).__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for name in mutable:
            if name not in self.__dict__:
                setattr(self, name, copy.deepcopy(getattr(type(self), name)))
        original(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]


def _complete(self: Any) -> None:
    """Mark this saga completed: its row stays for inspection and later messages for it are ignored."""
    self.__dict__[COMPLETED_ATTR] = True


def is_completed(instance: Any) -> bool:
    """Whether ``instance`` called ``complete()`` (or was loaded from a completed row)."""
    return bool(instance.__dict__.get(COMPLETED_ATTR))


def is_saga(cls: type) -> bool:
    return isinstance(cls.__dict__.get(SAGA_ATTR), SagaMeta)


def meta_of(cls: type) -> SagaMeta:
    meta = cls.__dict__.get(SAGA_ATTR)
    if not isinstance(meta, SagaMeta):
        raise HandlerDeclarationError(f"{cls.__qualname__} is not a @saga class")
    return meta


def state_of(instance: Any) -> dict[str, Any]:
    """The JSON state of a saga instance."""
    meta = meta_of(type(instance))
    return {name: serialization.to_primitive(getattr(instance, name, None)) for name in meta.fields}


def load_instance(cls: type, state: Mapping[str, Any], *, completed: bool = False) -> Any:
    """A saga instance rebuilt from its JSON state (attributes missing from ``state`` keep their defaults)."""
    meta = meta_of(cls)
    instance = cls()
    for name, hint in meta.fields.items():
        if name in state:
            try:
                value = serialization.from_primitive(hint, state[name])
            except ConversionError as exc:
                inner = exc.field if not exc.field or exc.field.startswith("[") else f".{exc.field}"
                raise ConversionError(cls.__qualname__, f"{name}{inner}", exc.reason) from exc
            setattr(instance, name, value)
    if completed:
        _complete(instance)
    return instance


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


# ---------------------------------------------------------------------------
# Handling
# ---------------------------------------------------------------------------


class _AlreadyStarted(Exception):
    """Rolls back a start handler whose saga turned out to exist already."""


def handle_saga_message(handler: Handler, message: Any, envelope: Envelope, registry: Registry) -> Any:
    """Run a saga handler in the current tenant's database, in one transaction with its state change."""
    assert handler.owner is not None
    alias = current_alias()
    kwargs = bind_arguments(handler, envelope)
    with transaction.atomic(using=alias):
        if handler.starts_saga:
            _start(handler, message, envelope, kwargs, alias)
            return None
        return _continue(handler, message, envelope, kwargs, alias)


def _exists(alias: str, saga_type: str, saga_id: str) -> bool:
    return SagaState.objects.using(alias).filter(saga_type=saga_type, saga_id=saga_id).exists()


def _start(handler: Handler, message: Any, envelope: Envelope, kwargs: dict[str, Any], alias: str) -> None:
    cls = handler.owner
    assert cls is not None
    saga_type = message_name(cls)
    known_id = saga_id_for(handler, message, envelope)
    if known_id is not None and _exists(alias, saga_type, known_id):
        _ignored("already exists", saga_type, known_id, handler, envelope)
        return
    try:
        with transaction.atomic(using=alias):  # a savepoint: what the start handler sent goes if it is ignored
            args = (cls, message) if handler.binding == "class" else (message,)
            instance = handler.func(*args, **kwargs)
            if instance is None:
                return
            if not isinstance(instance, cls):
                raise HandlerDeclarationError(f"{handler.id} must return a {cls.__qualname__} instance")
            new_id = getattr(instance, meta_of(cls).identifier)
            if new_id is None:
                raise HandlerDeclarationError(f"{handler.id} returned a saga without its identifier set")
            saga_id = str(new_id)
            if saga_id != known_id and _exists(alias, saga_type, saga_id):
                raise _AlreadyStarted(saga_id)
            row = _create(alias, saga_type, saga_id, instance)
            _record(alias, row, handler, envelope)
    except _AlreadyStarted as exc:
        _ignored("already exists", saga_type, str(exc), handler, envelope)


def _create(alias: str, saga_type: str, saga_id: str, instance: Any) -> SagaState:
    moment = now()
    try:
        with transaction.atomic(using=alias):
            return SagaState.objects.using(alias).create(
                saga_type=saga_type,
                saga_id=saga_id,
                tenant=current_tenant() or "",
                state=state_of(instance),
                status=_status(instance),
                created_at=moment,
                updated_at=moment,
            )
    except IntegrityError:
        if _exists(alias, saga_type, saga_id):  # started by a concurrent transaction: retrying will ignore ours
            raise ConcurrencyError(f"{saga_type} {saga_id} was started concurrently") from None
        raise


def _continue(handler: Handler, message: Any, envelope: Envelope, kwargs: dict[str, Any], alias: str) -> Any:
    cls = handler.owner
    assert cls is not None
    saga_type = message_name(cls)
    saga_id = saga_id_for(handler, message, envelope)
    rows = SagaState.objects.using(alias)
    row = rows.filter(saga_type=saga_type, saga_id=saga_id).first() if saga_id is not None else None
    if row is None:
        if get_config().saga_not_found == "raise":
            raise SagaNotFoundError(f"no {saga_type} with id {saga_id!r} for {envelope.type} ({handler.id})")
        logger.warning(
            "no %s with id %r: %s %s dropped by %s", saga_type, saga_id, envelope.type, envelope.id, handler.id
        )
        return None
    if row.status == SagaState.COMPLETED:
        _ignored("is completed", saga_type, saga_id, handler, envelope)
        return None
    instance = load_instance(cls, row.state)
    result = handler.func(instance, message, **kwargs)
    updated = rows.filter(pk=row.pk, version=row.version).update(
        state=state_of(instance), status=_status(instance), version=row.version + 1, updated_at=now()
    )
    if updated != 1:
        raise ConcurrencyError(f"{saga_type} {saga_id} changed concurrently (loaded version {row.version})")
    _record(alias, row, handler, envelope)
    return result


def _ignored(why: str, saga_type: str, saga_id: str | None, handler: Handler, envelope: Envelope) -> None:
    logger.info("%s %s %s: %s %s ignored by %s", saga_type, saga_id, why, envelope.type, envelope.id, handler.id)


def _status(instance: Any) -> str:
    return SagaState.COMPLETED if is_completed(instance) else SagaState.ACTIVE


def _record(alias: str, row: SagaState, handler: Handler, envelope: Envelope) -> None:
    SagaHistory.objects.using(alias).create(
        saga=row, message_id=envelope.id, message_type=envelope.type, handler=handler.id, handled_at=now()
    )


# ---------------------------------------------------------------------------
# Reading sagas
# ---------------------------------------------------------------------------


def saga_state(cls: type, saga_id: str, *, using: str | None = None) -> SagaState | None:
    """The row of saga ``saga_id`` (state, status, version, history) in ``using``, else the tenant's database."""
    return (
        SagaState.objects.using(using or current_alias())
        .filter(saga_type=message_name(cls), saga_id=str(saga_id))
        .first()
    )


def load_saga(cls: type, saga_id: str, *, using: str | None = None) -> Any | None:
    """The instance of saga ``saga_id`` from ``using`` (default: the current tenant's database), or ``None``."""
    row = saga_state(cls, saga_id, using=using)
    return None if row is None else load_instance(cls, row.state, completed=row.status == SagaState.COMPLETED)
