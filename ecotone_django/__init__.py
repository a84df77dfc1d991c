"""ecotone_django — Ecotone's messaging model for Django.

Command, event and query buses; handlers moved to workers with one decorator;
a transactional outbox in the Django ORM; sagas with persisted state and
cron-free timeouts; per-tenant databases and channels chosen by configuration.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ below imports each name on first use
    from .bus import CommandBus, EventBus, QueryBus, command_bus, event_bus, query_bus
    from .declarations import (
        Header,
        Metadata,
        asynchronous,
        command_handler,
        deduplicated,
        delayed,
        event_handler,
        internal_handler,
        query_handler,
    )
    from .saga_declarations import identifier, saga

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

#: Where each public name is defined. They are imported on first use, so that ``INSTALLED_APPS =
#: ["ecotone_django"]`` does not load the buses (and with them the models) before the apps are ready.
_HOME = {
    **dict.fromkeys(["CommandBus", "EventBus", "QueryBus", "command_bus", "event_bus", "query_bus"], "bus"),
    **dict.fromkeys(["saga", "identifier"], "saga_declarations"),
    **dict.fromkeys(
        [
            "command_handler",
            "event_handler",
            "query_handler",
            "internal_handler",
            "asynchronous",
            "delayed",
            "deduplicated",
            "Header",
            "Metadata",
        ],
        "declarations",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module 'ecotone_django' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
