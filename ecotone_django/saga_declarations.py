"""A saga as declared: ``@saga``, ``identifier()``, and its state as JSON.

::

    @saga
    class OrderSaga:
        order_id: str = identifier()
        stage: OrderStage = OrderStage.PLACED_AWAITING_PAYMENT

        @event_handler
        @classmethod
        def start(cls, event: OrderPlaced) -> "OrderSaga": ...

A saga's state is its public annotated attributes. This module knows the
class: which attribute identifies an instance, how to turn an instance into
JSON and back, and which id a message addresses. Running a saga's handlers
and storing its rows is :mod:`ecotone_django.sagas`' job.
"""

from __future__ import annotations

import copy
import functools
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import serialization
from .declarations import spec_of
from .exceptions import ConversionError, HandlerDeclarationError

__all__ = ["SagaMeta", "identifier", "is_completed", "is_saga", "load_instance", "meta_of", "saga", "state_of"]

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
