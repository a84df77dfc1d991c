"""The envelope every message travels in, and the wire names of message types.

An envelope is JSON on the wire::

    {"id": "<uuid7>", "type": "orders.PlaceOrder", "payload": {...},
     "headers": {"tenant": "big_corp", "correlation_id": "...", "causation_id": "...",
                 "timestamp": "2026-11-26T11:00:00+00:00", ...}}

Never pickle: :func:`Envelope.decode` accepts only that JSON shape and raises
:class:`~ecotone_django.exceptions.DecodeError` with the reason otherwise.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import serialization
from .exceptions import DecodeError

CORRELATION_ID = "correlation_id"
CAUSATION_ID = "causation_id"
TIMESTAMP = "timestamp"
#: W3C trace context (and baggage) headers: a handler's outgoing messages carry them on (ecotone_django.telemetry).
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
ENVELOPE_KEYS = frozenset({"id", "type", "payload", "headers"})
_REQUIRED_KEYS = frozenset({"id", "type", "payload"})
#: A UUID in the hyphenated form ``str(uuid.UUID)`` gives; any other id is checked by ``uuid.UUID``.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_uuid7_lock = threading.Lock()
_last_millis = 0
_counter = 0
#: Python 3.14's ``uuid.uuid7`` uses the same layout and counter method.
_stdlib_uuid7: Callable[[], uuid.UUID] | None = getattr(uuid, "uuid7", None)


def _seed_counter() -> int:
    """A random counter start with its top bit clear: at least 2**41 increments fit in one millisecond."""
    return int.from_bytes(os.urandom(6), "big") & (_COUNTER_MAX >> 1)


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7), monotonic within the process.

    48-bit Unix milliseconds, then a 42-bit counter (RFC 9562 section 6.2, method 1) seeded at random each
    millisecond and incremented for every further id in the same millisecond, then 32 random bits. So ids
    made one after the other sort in the order they were made, also within a millisecond and if the clock
    steps back; the layout is that of Python 3.14's ``uuid.uuid7``, used where it exists.
    """
    if _stdlib_uuid7 is not None:
        return _stdlib_uuid7()
    global _last_millis, _counter
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        if millis > _last_millis:
            _counter = _seed_counter()
        else:  # the same millisecond, or the clock went back: count on from the last id
            millis = _last_millis
            _counter += 1
            if _counter > _COUNTER_MAX:  # spent: borrow the next millisecond
                millis += 1
                _counter = _seed_counter()
        _last_millis, counter = millis, _counter
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76 | (counter >> 30) << 64  # version 7, then the counter's top 12 bits
    value |= 0x2 << 62 | (counter & 0x3FFF_FFFF) << 32  # RFC 4122 variant, then its low 30 bits
    value |= int.from_bytes(os.urandom(4), "big")
    return uuid.UUID(int=value)


def message_name(cls: type) -> str:
    """The wire name of a message class: ``__message_name__`` if set, else its dotted path."""
    explicit = cls.__dict__.get("__message_name__")
    if isinstance(explicit, str) and explicit:
        return explicit
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class Envelope:
    """One message: an id, the wire name of its type, a JSON payload and string-keyed headers."""

    type: str
    payload: Any
    headers: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid7()))

    def header(self, name: str, default: Any = None) -> Any:
        return self.headers.get(name, default)

    def with_headers(self, **changes: Any) -> Envelope:
        return Envelope(self.type, self.payload, {**self.headers, **changes}, self.id)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "payload": self.payload, "headers": dict(self.headers)}

    def encode(self) -> str:
        """The envelope as JSON; computed once (a send measures its size, then stores it)."""
        return self._encoded

    @functools.cached_property
    def _encoded(self) -> str:
        return serialization.dumps(self.to_dict())

    @classmethod
    def decode(cls, body: str | bytes) -> Envelope:
        return cls._checked(serialization.loads(body), header_keys_checked=True)  # JSON object keys are strings

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        return cls._checked(data, header_keys_checked=False)

    @classmethod
    def _checked(cls, data: Any, *, header_keys_checked: bool) -> Envelope:
        if not isinstance(data, dict):
            raise DecodeError(f"an envelope is a JSON object, got {type(data).__name__}")
        keys = data.keys()
        if not (keys >= _REQUIRED_KEYS and keys <= ENVELOPE_KEYS):
            missing = sorted(_REQUIRED_KEYS - keys)
            if missing:
                raise DecodeError(f"envelope lacks {', '.join(missing)}")
            raise DecodeError(f"envelope has unknown keys {', '.join(sorted(keys - ENVELOPE_KEYS))}")
        message_id, type_name, headers = data["id"], data["type"], data.get("headers", {})
        if not isinstance(type_name, str) or not type_name:
            raise DecodeError("envelope type must be a non-empty string")
        if not isinstance(headers, dict) or not (header_keys_checked or all(isinstance(k, str) for k in headers)):
            raise DecodeError("envelope headers must be a JSON object")
        if not (isinstance(message_id, str) and _CANONICAL_UUID.fullmatch(message_id)):  # the form we send
            try:
                uuid.UUID(str(message_id))
            except ValueError:
                raise DecodeError(f"envelope id {message_id!r} is not a UUID") from None
        return cls(type=type_name, payload=data["payload"], headers=headers, id=str(message_id))
