"""The :class:`Registry`: handlers by id, by message class and by input channel, and how it is filled."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from .declarations import Kind, spec_of
from .exceptions import HandlerDeclarationError, NoHandlerError
from .handlers import Handler, build_handler, handlers_of_class
from .messages import message_name

__all__ = ["Registry"]


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
        """A registry of every handler declared in ``modules`` (imported by dotted path where given as a string)."""
        registry = cls()
        for module in modules:
            if isinstance(module, str):
                module = importlib.import_module(module)
            for handler in _declared_in(module):
                registry.add(handler)
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

    def for_message(self, cls: type, kind: Kind | str) -> list[Handler]:
        """Handlers of ``kind`` for ``cls`` or any of its base classes, most specific first."""
        found: list[Handler] = []
        for base in cls.__mro__:
            found.extend(h for h in self._by_type.get(base, ()) if h.kind == kind)
        return found

    def single(self, cls: type, kind: Kind | str) -> Handler:
        handlers = self.for_message(cls, kind)
        if not handlers:
            raise NoHandlerError(
                f"no {kind} handler is registered for {message_name(cls)}; is the module that defines it named "
                "messaging.py in an installed app, or listed in ECOTONE['HANDLER_MODULES']?"
            )
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


def _declared_in(module: ModuleType) -> Iterator[Handler]:
    """The handlers of the functions and classes defined in ``module`` (not those it imports)."""
    for name, value in vars(module).items():
        if inspect.isclass(value) and value.__module__ == module.__name__:
            yield from handlers_of_class(value)
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            spec = spec_of(value)
            if spec is not None and spec.kind is not None:
                yield build_handler(value, module=module.__name__, qualname=value.__qualname__, owner=None)
            elif spec is not None:
                raise HandlerDeclarationError(
                    f"{module.__name__}.{name} has @asynchronous/@delayed/@deduplicated but no "
                    "@command_handler/@event_handler/@query_handler"
                )
