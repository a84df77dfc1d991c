"""Calling a handler: the message being handled, and the arguments a handler receives.

While a handler runs, :func:`current_envelope` is its message, so that what it
sends inherits the tenant and correlation headers. :func:`bind_arguments` builds
the arguments the handler's parameters ask for: headers and metadata from the
envelope, and the buses, which the bus layer hands in (``services``) — this
layer sits below the buses and does not import them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from inspect import iscoroutinefunction
from typing import Any

from asgiref.sync import async_to_sync

from .declarations import Injected, Metadata
from .exceptions import MessageError
from .handlers import MISSING, Binding, Handler
from .messages import Envelope
from .registry import Registry

__all__ = ["Services", "bind_arguments", "call_handler", "current_envelope", "handling"]

#: The objects injected by type (the buses), by what they are injected as.
Services = Mapping[Injected, Any]

_NO_SERVICES: Services = {}

_handling: ContextVar[Envelope | None] = ContextVar("ecotone_handling", default=None)


def current_envelope() -> Envelope | None:
    """The message whose handler is running, if any (its headers propagate to what it sends)."""
    return _handling.get()


class handling:
    """Make ``envelope`` the message being handled for the block (a class: entered for every message)."""

    __slots__ = ("envelope", "token")

    def __init__(self, envelope: Envelope) -> None:
        self.envelope = envelope

    def __enter__(self) -> Envelope:
        self.token = _handling.set(self.envelope)
        return self.envelope

    def __exit__(self, *exc: object) -> None:
        _handling.reset(self.token)


@functools.cache
def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    return iscoroutinefunction(func)


def bind_arguments(handler: Handler, envelope: Envelope, services: Services = _NO_SERVICES) -> dict[str, Any]:
    """The keyword arguments of ``handler`` beyond the message, for ``envelope``."""
    kwargs: dict[str, Any] = {}
    for p in handler.params:
        source = p.source
        if source is Injected.HEADER:
            assert p.header is not None
            if p.header in envelope.headers:
                kwargs[p.name] = envelope.headers[p.header]
            elif p.default is MISSING:
                raise MessageError(f"{handler.id} needs header {p.header!r}, which the message does not carry")
        elif source is Injected.METADATA:
            kwargs[p.name] = Metadata(envelope.headers)
        elif source is not Injected.DEFAULT:  # a bus; DEFAULT leaves it to the function's own default
            try:
                kwargs[p.name] = services[source]
            except KeyError:
                missing = source.name.lower().replace("_", " ")
                raise MessageError(f"{handler.id} needs the {missing}, which this call does not provide") from None
    return kwargs


def call_handler(
    handler: Handler, message: Any, envelope: Envelope, registry: Registry, services: Services = _NO_SERVICES
) -> Any:
    """Call a non-saga handler with the message and its injected arguments."""
    kwargs = bind_arguments(handler, envelope, services)
    func = async_to_sync(handler.func) if _is_coroutine_function(handler.func) else handler.func
    if handler.binding is Binding.INSTANCE:
        assert handler.owner is not None
        return func(registry.instance_of(handler.owner), message, **kwargs)
    if handler.binding is Binding.CLASS:
        return func(handler.owner, message, **kwargs)
    return func(message, **kwargs)
