"""The message in hand on every worker log record: a :class:`logging.Filter`, and a JSON formatter.

:class:`MessageContextFilter` sets ``message_id``, ``correlation_id``, ``tenant``, ``handler``,
``channel`` and ``attempt`` on each record it sees (``None`` outside a handler run), as if passed in
``extra``; formatters print them like any record attribute. Put it on the handlers that worker logs
go through. Neither needs OpenTelemetry::

    LOGGING = {
        "version": 1,
        "filters": {"message": {"()": "ecotone_django.telemetry.logs.MessageContextFilter"}},
        "formatters": {"json": {"()": "ecotone_django.telemetry.logs.JsonFormatter"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["message"], "formatter": "json"}},
        "root": {"handlers": ["console"], "level": "INFO"},
    }
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from .. import signals
from ..messages import CORRELATION_ID, Envelope

__all__ = ["FIELDS", "JsonFormatter", "MessageContextFilter"]

#: The record attributes :class:`MessageContextFilter` sets.
FIELDS = ("message_id", "correlation_id", "tenant", "handler", "channel", "attempt")

_EMPTY: dict[str, Any] = dict.fromkeys(FIELDS)
_current: ContextVar[tuple[dict[str, Any], ...]] = ContextVar("ecotone_log_context", default=())


def _started(sender: str, envelope: Envelope, handler_id: str, tenant: str | None, attempt: int, **kwargs: Any) -> None:
    fields = {
        "message_id": envelope.id,
        "correlation_id": envelope.headers.get(CORRELATION_ID, envelope.id),
        "tenant": tenant,
        "handler": handler_id,
        "channel": sender,
        "attempt": attempt,
    }
    _current.set((*_current.get(), fields))


def _finished(sender: str, **kwargs: Any) -> None:
    stack = _current.get()
    if stack:
        _current.set(stack[:-1])


def current_fields() -> dict[str, Any]:
    """The fields of the handler run in hand (all ``None`` outside one)."""
    stack = _current.get()
    return stack[-1] if stack else _EMPTY


def connect() -> None:
    """Follow handler runs (idempotent); :class:`MessageContextFilter` calls it."""
    signals.handling_started.connect(_started, weak=False, dispatch_uid="ecotone.logs.started")
    signals.handling_finished.connect(_finished, weak=False, dispatch_uid="ecotone.logs.finished")


def disconnect() -> None:
    signals.handling_started.disconnect(dispatch_uid="ecotone.logs.started")
    signals.handling_finished.disconnect(dispatch_uid="ecotone.logs.finished")


class MessageContextFilter(logging.Filter):
    """Adds the fields of the message in hand to every record; never drops one."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        connect()

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_fields().items():
            if not hasattr(record, key):  # an explicit extra= wins
                setattr(record, key, value)
        return True


_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the message fields and any other ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: value for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
