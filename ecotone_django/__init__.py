"""ecotone_django — Ecotone's messaging model for Django.

Command, event and query buses; handlers moved to workers with one decorator;
a transactional outbox in the Django ORM; sagas with persisted state and
cron-free timeouts; per-tenant databases and channels chosen by configuration.
"""

from typing import Any

__all__ = [
    # buses
    "CommandBus",
    "EventBus",
    "QueryBus",
    "command_bus",
    "event_bus",
    "query_bus",
    # handler declarations
    "command_handler",
    "event_handler",
    "query_handler",
    "internal_handler",
    "asynchronous",
    "delayed",
    "deduplicated",
    # injection
    "Header",
    "Metadata",
    # sagas
    "saga",
    "identifier",
]

_BUS = {"CommandBus", "EventBus", "QueryBus", "command_bus", "event_bus", "query_bus"}
_SAGAS = {"saga", "identifier"}


def __getattr__(name: str) -> Any:
    # Imported lazily so that ``INSTALLED_APPS = ["ecotone_django"]`` does not load models before apps are ready.
    if name in _BUS:
        from . import bus

        return getattr(bus, name)
    if name in _SAGAS:
        from . import sagas

        return getattr(sagas, name)
    if name in __all__:
        from . import handlers

        return getattr(handlers, name)
    raise AttributeError(f"module 'ecotone_django' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
