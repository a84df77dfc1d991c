"""The handler model: what a declared function is to the rest of ecotone_django.

:func:`build_handler` reads a function's declarations (:mod:`ecotone_django.declarations`)
and its signature once, and makes a frozen :class:`Handler`: its id (the dotted
path, the dedup and dead-letter key), the message class it handles, how it is
called (:class:`Binding`) and what each further parameter receives (:class:`Param`).
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .declarations import CLASS_CHANNEL_ATTR, Header, Injected, Kind, function_of, injected_as, spec_of
from .exceptions import HandlerDeclarationError
from .messages import message_name
from .saga_declarations import is_saga

__all__ = ["Binding", "Handler", "Param", "build_handler"]

#: A parameter without a default.
MISSING: Any = object()


class Binding(enum.StrEnum):
    """How a handler is called."""

    FUNCTION = "function"  # a module-level function: func(message, ...)
    INSTANCE = "instance"  # a method: func(instance, message, ...), the instance made once with cls()
    CLASS = "class"  # a classmethod: func(cls, message, ...)
    STATIC = "static"  # a staticmethod: func(message, ...)


@dataclass(frozen=True)
class Param:
    """A handler parameter after the message, and what it receives."""

    name: str
    source: Injected
    header: str | None = None
    default: Any = MISSING


@dataclass(frozen=True)
class Handler:
    """A handler as the registry knows it. ``id`` is its dotted path: the dedup and dead-letter key."""

    id: str
    kind: Kind
    message_type: type | None
    func: Callable[..., Any]
    owner: type | None
    binding: Binding
    params: tuple[Param, ...]
    channel: str | None
    delay: timedelta | None
    dedup_key: str | None
    input_channel: str | None
    output_channel: str | None
    identifier_mapping: Mapping[str, str]

    @property
    def is_async(self) -> bool:
        return self.channel is not None

    @functools.cached_property
    def message_name(self) -> str:  # read for every message a worker handles
        return message_name(self.message_type) if self.message_type else (self.input_channel or "")

    @property
    def is_saga(self) -> bool:
        return self.owner is not None and is_saga(self.owner)

    @property
    def starts_saga(self) -> bool:
        return self.is_saga and self.binding in (Binding.CLASS, Binding.STATIC)


def _param_plan(func: Callable[..., Any], qualname: str, skip_first: bool) -> tuple[type | None, tuple[Param, ...]]:
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise HandlerDeclarationError(f"cannot resolve the annotations of {qualname}: {exc}") from exc
    parameters = list(inspect.signature(func).parameters.values())
    if skip_first:
        parameters = parameters[1:]
    if not parameters:
        raise HandlerDeclarationError(f"{qualname} takes no message parameter")
    first, rest = parameters[0], parameters[1:]
    message_type = hints.get(first.name)
    if message_type is not None and typing.get_origin(message_type) is typing.Annotated:
        message_type = typing.get_args(message_type)[0]
    if message_type is not None and not inspect.isclass(message_type):
        raise HandlerDeclarationError(f"{qualname}: the message parameter must be annotated with a class")
    plan = []
    for p in rest:
        hint = hints.get(p.name, p.annotation)
        default = p.default if p.default is not inspect.Parameter.empty else MISSING
        if typing.get_origin(hint) is typing.Annotated:
            markers = [m for m in typing.get_args(hint)[1:] if isinstance(m, Header)]
            if markers:
                plan.append(Param(p.name, Injected.HEADER, markers[0].name, default))
                continue
            hint = typing.get_args(hint)[0]
        source = injected_as(hint)
        if source is not None:
            plan.append(Param(p.name, source))
        elif default is not MISSING:
            plan.append(Param(p.name, Injected.DEFAULT, default=default))
        else:
            raise HandlerDeclarationError(
                f"{qualname}: cannot inject parameter {p.name!r}; annotate it with CommandBus, EventBus, "
                "QueryBus, Metadata or Annotated[T, Header('name')], or give it a default"
            )
    return message_type, tuple(plan)


def build_handler(obj: Any, *, module: str, qualname: str, owner: type | None) -> Handler:
    """The :class:`Handler` of a declared function or method (``owner``: the class it is defined in)."""
    spec = spec_of(obj)
    if spec is None or spec.kind is None:
        found = "no ecotone decorator" if spec is None else "@asynchronous/@delayed/@deduplicated"
        raise HandlerDeclarationError(
            f"{module}.{qualname} has {found} but no @command_handler/@event_handler/@query_handler/@internal_handler"
        )
    func = function_of(obj)
    if owner is None:
        binding = Binding.FUNCTION
    elif isinstance(obj, classmethod):
        binding = Binding.CLASS
    elif isinstance(obj, staticmethod):
        binding = Binding.STATIC
    else:
        binding = Binding.INSTANCE
    skip_first = binding in (Binding.INSTANCE, Binding.CLASS)
    message_type, params = _param_plan(func, f"{module}.{qualname}", skip_first=skip_first)  # errors name the module
    if spec.kind != Kind.INTERNAL and message_type is None:
        raise HandlerDeclarationError(f"{module}.{qualname}: annotate the first parameter with the message class")
    channel = spec.channel or (getattr(owner, CLASS_CHANNEL_ATTR, None) if owner else None)
    if message_type is None and (channel is not None or spec.delay is not None):
        raise HandlerDeclarationError(
            f"{module}.{qualname}: an asynchronous pipeline step rebuilds its message from the first parameter's "
            "annotation; annotate it with the message class"
        )
    return Handler(
        id=f"{module}.{qualname}",
        kind=spec.kind,
        message_type=message_type,
        func=func,
        owner=owner,
        binding=binding,
        params=params,
        channel=channel,
        delay=spec.delay,
        dedup_key=spec.dedup_key,
        input_channel=spec.input_channel,
        output_channel=spec.output_channel,
        identifier_mapping=dict(spec.identifier_mapping),
    )


def handlers_of_class(cls: type) -> list[Handler]:
    """The handlers a class defines (its members that carry declarations)."""
    return [
        build_handler(member, module=cls.__module__, qualname=f"{cls.__qualname__}.{attr}", owner=cls)
        for attr, member in vars(cls).items()
        if spec_of(member) is not None  # build_handler rejects a spec without a kind
    ]
