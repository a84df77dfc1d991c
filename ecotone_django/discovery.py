"""Finding the project's handlers, and the registry in force.

The project's :class:`~ecotone_django.registry.Registry` is built on first use
by importing each installed app's ``messaging`` module and every module of
``ECOTONE["HANDLER_MODULES"]``, and rebuilt after those settings change. A
block of code may run with another registry (:data:`registry_override`;
``ecotone_django.testing.use_registry`` sets it for tests).
"""

from __future__ import annotations

import importlib.util
import threading
from contextvars import ContextVar
from typing import Any

from django.apps import apps
from django.core.signals import setting_changed
from django.dispatch import receiver

from .conf import RELOAD_ON, get_config
from .registry import Registry

__all__ = ["get_registry", "handler_modules", "registry_override", "reset_registry"]

#: A registry that replaces the project's in this context (a new thread starts without one).
registry_override: ContextVar[Registry | None] = ContextVar("ecotone_registry", default=None)

_registry: Registry | None = None
_registry_lock = threading.Lock()


def handler_modules() -> list[str]:
    """Each installed app's ``messaging`` module that exists, then ``ECOTONE["HANDLER_MODULES"]``."""
    modules = []
    for app in apps.get_app_configs():
        name = f"{app.name}.messaging"
        if importlib.util.find_spec(name) is not None:
            modules.append(name)
    return modules + [m for m in get_config().handler_modules if m not in modules]


def get_registry() -> Registry:
    """The registry in force: the override of this context, else the project's (built once)."""
    override = registry_override.get()
    if override is not None:
        return override
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = Registry.from_modules(handler_modules())
    return _registry


def reset_registry() -> None:
    """Forget the project's registry; the next :func:`get_registry` builds it again."""
    global _registry
    _registry = None


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in RELOAD_ON:
        reset_registry()
