"""Handler declarations and the registry built from them.

The decorators only record what was declared on the function (an attribute
``__ecotone__``); they never register globally, so they can be stacked in any
order, on plain functions, methods, classmethods and staticmethods. The
:class:`Registry` is built when the app registry is ready by scanning each
installed app's ``messaging`` module and ``ECOTONE["HANDLER_MODULES"]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType, ModuleType
from typing import Any, ParamSpec, TypeVar, overload

from .exceptions import HandlerDeclarationError, MessageError, NoHandlerError
from .messages import Envelope, message_name

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

COMMAND, EVENT, QUERY, INTERNAL = "command", "event", "query", "internal"
SPEC_ATTR = "__ecotone__"
CLASS_CHANNEL_ATTR = "__ecotone_channel__"


# ---------------------------------------------------------------------------
# What a decorator records
# ---------------------------------------------------------------------------


@dataclass
class HandlerSpec:
    kind: str | None = None
    input_channel: str | None = None
    output_channel: str | None = None
    identifier_mapping: Mapping[str, str] = field(default_factory=dict)
    channel: str | None = None
    delay: timedelta | None = None
    dedup_key: str | None = None


def _func_of(obj: Any) -> Any:
    return obj.__func__ if isinstance(obj, classmethod | staticmethod) else obj


def spec_of(obj: Any, *, create: bool = False) -> HandlerSpec | None:
    func = _func_of(obj)
    spec = func.__dict__.get(SPEC_ATTR) if hasattr(func, "__dict__") else None
    if spec is None and create:
        if not callable(func):
            raise HandlerDeclarationError(f"ecotone decorators apply to functions, not {func!r}")
        spec = HandlerSpec()
        setattr(func, SPEC_ATTR, spec)
    return spec


def _mark_kind(obj: T, kind: str, **options: Any) -> T:
    spec = spec_of(obj, create=True)
    assert spec is not None
    if spec.kind is not None and spec.kind != kind:
        raise HandlerDeclarationError(f"{_func_of(obj).__qualname__} is declared both {spec.kind} and {kind} handler")
    spec.kind = kind
    for key, value in options.items():
        if value is not None:
            setattr(spec, key, value)
    return obj


def _kind_decorator(kind: str) -> Any:
    @overload
    def decorator(func: F, /) -> F: ...
    @overload
    def decorator(
        *, output_channel: str | None = None, identifier_mapping: Mapping[str, str] | None = None
    ) -> Callable[[F], F]: ...

    def decorator(
        func: Any = None,
        /,
        *,
        output_channel: str | None = None,
        identifier_mapping: Mapping[str, str] | None = None,
    ) -> Any:
        options = {"output_channel": output_channel, "identifier_mapping": identifier_mapping}
        if func is not None:
            return _mark_kind(func, kind, **options)
        return lambda f: _mark_kind(f, kind, **options)

    decorator.__name__ = f"{kind}_handler"
    decorator.__doc__ = f"Declare a {kind} handler; usable bare or with options."
    return decorator


command_handler: Any = _kind_decorator(COMMAND)
event_handler: Any = _kind_decorator(EVENT)
query_handler: Any = _kind_decorator(QUERY)


def internal_handler(input_channel: str, *, output_channel: str | None = None) -> Callable[[F], F]:
    """A step of a stateless pipeline: handles what arrives on ``input_channel``."""
    if not isinstance(input_channel, str) or not input_channel:
        raise HandlerDeclarationError("@internal_handler needs the name of its input channel")
    return lambda f: _mark_kind(f, INTERNAL, input_channel=input_channel, output_channel=output_channel)


def asynchronous(channel: str) -> Callable[[T], T]:
    """Run this handler (or every handler of a class) on ``channel``, in a worker."""
    if not isinstance(channel, str) or not channel:
        raise HandlerDeclarationError("@asynchronous needs a channel name, e.g. @asynchronous('orders')")

    def decorate(obj: T) -> T:
        if inspect.isclass(obj):
            setattr(obj, CLASS_CHANNEL_ATTR, channel)
        else:
            spec = spec_of(obj, create=True)
            assert spec is not None
            spec.channel = channel
        return obj

    return decorate


def delayed(delay: timedelta | float | int) -> Callable[[F], F]:
    """Deliver this handler's copy ``delay`` after it was sent (held in the database, not the broker)."""
    if not isinstance(delay, timedelta):
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise HandlerDeclarationError(f"@delayed takes a timedelta or seconds, got {delay!r}")
        delay = timedelta(seconds=delay)
    if delay <= timedelta(0):
        raise HandlerDeclarationError(f"@delayed needs a positive delay, got {delay}")

    def decorate(func: F) -> F:
        spec = spec_of(func, create=True)
        assert spec is not None
        spec.delay = delay
        return func

    return decorate


def deduplicated(key: str) -> Callable[[F], F]:
    """Handle a message once per value of ``key`` (a header name, or a field of the message)."""
    if not isinstance(key, str) or not key:
        raise HandlerDeclarationError("@deduplicated needs a header or field name")

    def decorate(func: F) -> F:
        spec = spec_of(func, create=True)
        assert spec is not None
        spec.dedup_key = key
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


# ---------------------------------------------------------------------------
# Registered handlers
# ---------------------------------------------------------------------------

_MISSING = object()


@dataclass(frozen=True)
class Param:
    name: str
    source: str  # "bus:command" | "bus:event" | "bus:query" | "metadata" | "header" | "default"
    header: str | None = None
    default: Any = _MISSING


@dataclass(frozen=True)
class Handler:
    """A handler as the registry knows it. ``id`` is its dotted path: the dedup and dead-letter key."""

    id: str
    kind: str
    message_type: type | None
    func: Callable[..., Any]
    owner: type | None
    binding: str  # "function" | "instance" | "class" | "static"
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

    @property
    def message_name(self) -> str:
        return message_name(self.message_type) if self.message_type else (self.input_channel or "")

    @property
    def is_saga(self) -> bool:
        from .sagas import is_saga

        return self.owner is not None and is_saga(self.owner)

    @property
    def starts_saga(self) -> bool:
        return self.is_saga and self.binding in ("class", "static")


def _param_plan(func: Callable[..., Any], qualname: str, skip_first: bool) -> tuple[type | None, tuple[Param, ...]]:
    from .bus import CommandBus, EventBus, QueryBus

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
        default = p.default if p.default is not inspect.Parameter.empty else _MISSING
        if typing.get_origin(hint) is typing.Annotated:
            markers = [m for m in typing.get_args(hint)[1:] if isinstance(m, Header)]
            if markers:
                plan.append(Param(p.name, "header", markers[0].name, default))
                continue
            hint = typing.get_args(hint)[0]
        if inspect.isclass(hint) and issubclass(hint, CommandBus):
            plan.append(Param(p.name, "bus:command"))
        elif inspect.isclass(hint) and issubclass(hint, EventBus):
            plan.append(Param(p.name, "bus:event"))
        elif inspect.isclass(hint) and issubclass(hint, QueryBus):
            plan.append(Param(p.name, "bus:query"))
        elif hint is Metadata:
            plan.append(Param(p.name, "metadata"))
        elif default is not _MISSING:
            plan.append(Param(p.name, "default", default=default))
        else:
            raise HandlerDeclarationError(
                f"{qualname}: cannot inject parameter {p.name!r}; annotate it with CommandBus, EventBus, "
                "QueryBus, Metadata or Annotated[T, Header('name')], or give it a default"
            )
    return message_type, tuple(plan)


def build_handler(obj: Any, *, module: str, qualname: str, owner: type | None) -> Handler:
    spec = spec_of(obj)
    if spec is None or spec.kind is None:
        found = "no ecotone decorator" if spec is None else "@asynchronous/@delayed/@deduplicated"
        raise HandlerDeclarationError(
            f"{module}.{qualname} has {found} but no @command_handler/@event_handler/@query_handler/@internal_handler"
        )
    func = _func_of(obj)
    if owner is None:
        binding = "function"
    elif isinstance(obj, classmethod):
        binding = "class"
    elif isinstance(obj, staticmethod):
        binding = "static"
    else:
        binding = "instance"
    message_type, params = _param_plan(func, qualname, skip_first=binding in ("instance", "class"))
    if spec.kind != INTERNAL and message_type is None:
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


def _declared_in(module: ModuleType) -> Iterator[tuple[Any, str, type | None]]:
    for name, value in vars(module).items():
        if inspect.isclass(value) and value.__module__ == module.__name__:
            for attr, member in vars(value).items():
                if spec_of(member) is not None:  # build_handler rejects a spec without a kind
                    yield member, f"{value.__qualname__}.{attr}", value
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            spec = spec_of(value)
            if spec is not None and spec.kind is not None:
                yield value, value.__qualname__, None
            elif spec is not None:
                raise HandlerDeclarationError(
                    f"{module.__name__}.{name} has @asynchronous/@delayed/@deduplicated but no "
                    "@command_handler/@event_handler/@query_handler"
                )


class Registry:
    """Every handler of the project, by id, by message class and by input channel."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self.handlers: dict[str, Handler] = {}
        self._by_type: dict[type, list[Handler]] = {}
        self._by_input: dict[str, list[Handler]] = {}
        self._instances: dict[type, Any] = {}
        self._lock = threading.Lock()
        for handler in handlers:
            self.add(handler)

    @classmethod
    def from_modules(cls, modules: Iterable[ModuleType | str]) -> Registry:
        registry = cls()
        for module in modules:
            if isinstance(module, str):
                module = importlib.import_module(module)
            for obj, qualname, owner in _declared_in(module):
                registry.add(build_handler(obj, module=module.__name__, qualname=qualname, owner=owner))
        return registry

    @classmethod
    def from_objects(cls, *objects: Any) -> Registry:
        """A registry of the given functions and classes (handy in tests)."""
        registry = cls()
        for obj in objects:
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if spec_of(member) is not None:  # build_handler rejects a spec without a kind
                        registry.add(
                            build_handler(
                                member, module=obj.__module__, qualname=f"{obj.__qualname__}.{attr}", owner=obj
                            )
                        )
            else:
                registry.add(build_handler(obj, module=obj.__module__, qualname=obj.__qualname__, owner=None))
        return registry

    def add(self, handler: Handler) -> None:
        if handler.id in self.handlers:
            return
        self.handlers[handler.id] = handler
        if handler.message_type is not None:
            self._by_type.setdefault(handler.message_type, []).append(handler)
        if handler.input_channel is not None:
            self._by_input.setdefault(handler.input_channel, []).append(handler)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self.handlers.values())

    def get(self, handler_id: str) -> Handler:
        try:
            return self.handlers[handler_id]
        except KeyError:
            raise NoHandlerError(f"no handler with id {handler_id!r} is registered") from None

    def for_message(self, cls: type, kind: str) -> list[Handler]:
        """Handlers of ``kind`` for ``cls`` or any of its base classes, most specific first."""
        found: list[Handler] = []
        for base in cls.__mro__:
            found.extend(h for h in self._by_type.get(base, ()) if h.kind == kind)
        return found

    def single(self, cls: type, kind: str) -> Handler:
        handlers = self.for_message(cls, kind)
        if not handlers:
            raise NoHandlerError(f"no {kind} handler is registered for {message_name(cls)}")
        return handlers[0]

    def for_input_channel(self, name: str) -> list[Handler]:
        return list(self._by_input.get(name, ()))

    def message_class(self, name: str) -> type | None:
        """The class whose wire name is ``name`` among handled types and their subclasses."""
        stack = list(self._by_type)
        seen: set[type] = set()
        while stack:
            cls = stack.pop()
            if cls in seen:
                continue
            seen.add(cls)
            if message_name(cls) == name:
                return cls
            stack.extend(cls.__subclasses__())
        return None

    def instance_of(self, cls: type) -> Any:
        """The service instance whose methods are handlers (created once with ``cls()``)."""
        with self._lock:
            if cls not in self._instances:
                self._instances[cls] = cls()
            return self._instances[cls]


# ---------------------------------------------------------------------------
# The project's registry and the message being handled
# ---------------------------------------------------------------------------

_registry: Registry | None = None
_registry_lock = threading.Lock()
_override: ContextVar[Registry | None] = ContextVar("ecotone_registry", default=None)
_handling: ContextVar[Envelope | None] = ContextVar("ecotone_handling", default=None)


def handler_modules() -> list[str]:
    from django.apps import apps

    from .conf import get_config

    modules = []
    for app in apps.get_app_configs():
        name = f"{app.name}.messaging"
        if importlib.util.find_spec(name) is not None:
            modules.append(name)
    return modules + [m for m in get_config().handler_modules if m not in modules]


def get_registry() -> Registry:
    """The registry in force: a test override, else the project's (built once)."""
    override = _override.get()
    if override is not None:
        return override
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry.from_modules(handler_modules())
    return _registry


def reset_registry() -> None:
    global _registry
    _registry = None


@contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one in force for the block (tests)."""
    token = _override.set(registry)
    try:
        yield registry
    finally:
        _override.reset(token)


def current_envelope() -> Envelope | None:
    """The message whose handler is running, if any (its headers propagate to what it sends)."""
    return _handling.get()


@contextmanager
def handling(envelope: Envelope) -> Iterator[Envelope]:
    token = _handling.set(envelope)
    try:
        yield envelope
    finally:
        _handling.reset(token)


def bind_arguments(handler: Handler, envelope: Envelope) -> dict[str, Any]:
    from .bus import command_bus, event_bus, query_bus

    kwargs: dict[str, Any] = {}
    for p in handler.params:
        if p.source == "bus:command":
            kwargs[p.name] = command_bus
        elif p.source == "bus:event":
            kwargs[p.name] = event_bus
        elif p.source == "bus:query":
            kwargs[p.name] = query_bus
        elif p.source == "metadata":
            kwargs[p.name] = Metadata(envelope.headers)
        elif p.source == "header":
            assert p.header is not None
            if p.header in envelope.headers:
                kwargs[p.name] = envelope.headers[p.header]
            elif p.default is _MISSING:
                raise MessageError(f"{handler.id} needs header {p.header!r}, which the message does not carry")
        # "default": leave it to the function's own default
    return kwargs


def call_handler(handler: Handler, message: Any, envelope: Envelope, registry: Registry) -> Any:
    """Call a non-saga handler with the message and its injected arguments."""
    kwargs = bind_arguments(handler, envelope)
    if handler.binding == "instance":
        assert handler.owner is not None
        return handler.func(registry.instance_of(handler.owner), message, **kwargs)
    if handler.binding == "class":
        return handler.func(handler.owner, message, **kwargs)
    return handler.func(message, **kwargs)
