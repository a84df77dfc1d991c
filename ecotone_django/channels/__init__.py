"""Channels: where asynchronous handlers' messages wait.

``channels["orders"]`` gives the configured channel, built lazily from
``ECOTONE["CHANNELS"]`` the way Django builds cache and database connections.
The built-in backends are :class:`DatabaseChannel`, :class:`DynamicChannel`
and :class:`CeleryChannel`. Each is imported on first use, as Django imports a
cache backend: importing this package needs neither the models (a Celery app
module may import it before Django is set up) nor kombu (a process without
broker channels never loads it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .base import BrokerChannel, BrokerConsumer, Channel, Delivery
from .handler import ChannelHandler, InvalidChannelBackendError, channels

if TYPE_CHECKING:
    from .celery import CeleryChannel
    from .database import DatabaseChannel, DatabaseConsumer
    from .dynamic import DynamicChannel

__all__ = [
    "BrokerChannel",
    "BrokerConsumer",
    "CeleryChannel",
    "Channel",
    "ChannelHandler",
    "DatabaseChannel",
    "DatabaseConsumer",
    "Delivery",
    "DynamicChannel",
    "InvalidChannelBackendError",
    "channels",
]


_BACKENDS = {"DatabaseChannel": "database", "DatabaseConsumer": "database", "DynamicChannel": "dynamic"}


def __getattr__(name: str) -> Any:
    if name in _BACKENDS or name == "CeleryChannel":
        return getattr(importlib.import_module(f".{_BACKENDS.get(name, 'celery')}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
