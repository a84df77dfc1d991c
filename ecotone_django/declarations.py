"""What a handler declares: the decorators and the markers of injected parameters.

The decorators only record what was declared on the function (an attribute
``__ecotone__`` holding a :class:`HandlerSpec`); they never register globally,
so they can be stacked in any order, on plain functions, methods, classmethods
and staticmethods, and they return what they were given, so the decorated
function keeps its type. Discovery (:mod:`ecotone_django.discovery`) turns the
records into :class:`~ecotone_django.handlers.Handler` objects.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, overload

from .exceptions import HandlerDeclarationError

__all__ = [
    "Header",
    "HandlerSpec",
    "Injected",
    "Kind",
    "Metadata",
    "asynchronous",
    "command_handler",
    "deduplicated",
    "delayed",
    "event_handler",
    "internal_handler",
    "query_handler",
    "spec_of",
]

SPEC_ATTR = "__ecotone__"
CLASS_CHANNEL_ATTR = "__ecotone_channel__"
#: The class attribute that marks a type a handler parameter can be annotated with to have it injected.
INJECT_ATTR = "__ecotone_injected__"


class Kind(enum.StrEnum):
    """What a handler handles."""

    COMMAND = "command"
    EVENT = "event"
    QUERY = "query"
    INTERNAL = "internal"  # a step of a stateless pipeline, fed by an input channel


class Injected(enum.StrEnum):
    """What a handler parameter receives besides the message (see :class:`~ecotone_django.handlers.Param`)."""

    COMMAND_BUS = "bus:command"
    EVENT_BUS = "bus:event"
    QUERY_BUS = "bus:query"
    METADATA = "metadata"  # every header, read-only
    HEADER = "header"  # one header, ``Annotated[T, Header("name")]``
    DEFAULT = "default"  # nothing: the function's own default applies


#: A function, or a classmethod/staticmethod a decorator is stacked on.
Declared = TypeVar("Declared", bound="Callable[..., Any] | classmethod[Any, Any, Any] | staticmethod[Any, Any]")
#: A function, a classmethod/staticmethod, or a class (``@asynchronous`` applies to every handler of a class).
Target = TypeVar("Target", bound="Callable[..., Any] | classmethod[Any, Any, Any] | staticmethod[Any, Any] | type")


@dataclass
class HandlerSpec:
    """What the decorators stacked on one function declared."""

    kind: Kind | None = None
    input_channel: str | None = None
    output_channel: str | None = None
    identifier_mapping: Mapping[str, str] = field(default_factory=dict)
    channel: str | None = None
    delay: timedelta | None = None
    dedup_key: str | None = None


def function_of(obj: Any) -> Any:
    """The function a classmethod or staticmethod wraps; ``obj`` itself otherwise."""
    return obj.__func__ if isinstance(obj, classmethod | staticmethod) else obj


def spec_of(obj: Any, *, create: bool = False) -> HandlerSpec | None:
    """The declarations recorded on ``obj`` (created empty with ``create``), or ``None``."""
    func = function_of(obj)
    spec = func.__dict__.get(SPEC_ATTR) if hasattr(func, "__dict__") else None
    if spec is None and create:
        if not callable(func):
            raise HandlerDeclarationError(f"ecotone decorators apply to functions, not {func!r}")
        spec = HandlerSpec()
        setattr(func, SPEC_ATTR, spec)
    return spec


def _spec(obj: Any) -> HandlerSpec:
    spec = spec_of(obj, create=True)
    assert spec is not None
    return spec


def _declare(obj: Declared, kind: Kind, **options: Any) -> Declared:
    spec = _spec(obj)
    if spec.kind is not None and spec.kind != kind:
        raise HandlerDeclarationError(
            f"{function_of(obj).__qualname__} is declared both {spec.kind} and {kind} handler"
        )
    spec.kind = kind
    for key, value in options.items():
        if value is not None:
            setattr(spec, key, value)
    return obj


def _kind(
    kind: Kind,
    func: Declared | None,
    output_channel: str | None,
    identifier_mapping: Mapping[str, str] | None,
) -> Any:
    if func is not None:
        return _declare(func, kind, output_channel=output_channel, identifier_mapping=identifier_mapping)

    def decorate(f: Declared) -> Declared:
        return _declare(f, kind, output_channel=output_channel, identifier_mapping=identifier_mapping)

    return decorate


@overload
def command_handler(func: Declared, /) -> Declared: ...
@overload
def command_handler(
    *, output_channel: str | None = None, identifier_mapping: Mapping[str, str] | None = None
) -> Callable[[Declared], Declared]: ...
def command_handler(
    func: Declared | None = None,
    /,
    *,
    output_channel: str | None = None,
    identifier_mapping: Mapping[str, str] | None = None,
) -> Declared | Callable[[Declared], Declared]:
    """Declare a command handler; usable bare or with options."""
    return _kind(Kind.COMMAND, func, output_channel, identifier_mapping)


@overload
def event_handler(func: Declared, /) -> Declared: ...
@overload
def event_handler(
    *, output_channel: str | None = None, identifier_mapping: Mapping[str, str] | None = None
) -> Callable[[Declared], Declared]: ...
def event_handler(
    func: Declared | None = None,
    /,
    *,
    output_channel: str | None = None,
    identifier_mapping: Mapping[str, str] | None = None,
) -> Declared | Callable[[Declared], Declared]:
    """Declare an event handler; usable bare or with options."""
    return _kind(Kind.EVENT, func, output_channel, identifier_mapping)


@overload
def query_handler(func: Declared, /) -> Declared: ...
@overload
def query_handler(
    *, output_channel: str | None = None, identifier_mapping: Mapping[str, str] | None = None
) -> Callable[[Declared], Declared]: ...
def query_handler(
    func: Declared | None = None,
    /,
    *,
    output_channel: str | None = None,
    identifier_mapping: Mapping[str, str] | None = None,
) -> Declared | Callable[[Declared], Declared]:
    """Declare a query handler; usable bare or with options."""
    return _kind(Kind.QUERY, func, output_channel, identifier_mapping)


def internal_handler(input_channel: str, *, output_channel: str | None = None) -> Callable[[Declared], Declared]:
    """A step of a stateless pipeline: handles what arrives on ``input_channel``."""
    if not isinstance(input_channel, str) or not input_channel:
        raise HandlerDeclarationError("@internal_handler needs the name of its input channel")

    def decorate(func: Declared) -> Declared:
        return _declare(func, Kind.INTERNAL, input_channel=input_channel, output_channel=output_channel)

    return decorate


def asynchronous(channel: str) -> Callable[[Target], Target]:
    """Run this handler (or every handler of a class) on ``channel``, in a worker."""
    if not isinstance(channel, str) or not channel:
        raise HandlerDeclarationError("@asynchronous needs a channel name, e.g. @asynchronous('orders')")

    def decorate(obj: Target) -> Target:
        if inspect.isclass(obj):
            setattr(obj, CLASS_CHANNEL_ATTR, channel)
        else:
            _spec(obj).channel = channel
        return obj

    return decorate


def delayed(delay: timedelta | float | int) -> Callable[[Declared], Declared]:
    """Deliver this handler's copy ``delay`` after it was sent (held in the database, not the broker)."""
    if not isinstance(delay, timedelta):
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise HandlerDeclarationError(f"@delayed takes a timedelta or seconds, got {delay!r}")
        delay = timedelta(seconds=delay)
    if delay <= timedelta(0):
        raise HandlerDeclarationError(f"@delayed needs a positive delay, got {delay}")
    wait = delay

    def decorate(func: Declared) -> Declared:
        _spec(func).delay = wait
        return func

    return decorate


def deduplicated(key: str) -> Callable[[Declared], Declared]:
    """Handle a message once per value of ``key`` (a header name, or a field of the message)."""
    if not isinstance(key, str) or not key:
        raise HandlerDeclarationError("@deduplicated needs a header or field name")

    def decorate(func: Declared) -> Declared:
        _spec(func).dedup_key = key
        return func

    return decorate


# ---------------------------------------------------------------------------
# Injection markers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """``Annotated[str, Header("tenant")]`` injects one header into a handler parameter."""

    name: str


class Metadata(Mapping[str, Any]):
    """A read-only view of every header of the handled message."""

    __ecotone_injected__: ClassVar[Injected] = Injected.METADATA

    def __init__(self, headers: Mapping[str, Any]) -> None:
        self._headers = MappingProxyType(dict(headers))

    def __getitem__(self, key: str) -> Any:
        return self._headers[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers)

    def __len__(self) -> int:
        return len(self._headers)

    def __repr__(self) -> str:
        return f"Metadata({dict(self._headers)!r})"


def injected_as(hint: Any) -> Injected | None:
    """What a parameter annotated with the class ``hint`` receives, if the class is marked injectable."""
    if not inspect.isclass(hint):
        return None
    marker = getattr(hint, INJECT_ATTR, None)
    return marker if isinstance(marker, Injected) else None
