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
import time
import uuid
from collections.abc import Mapping
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


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit milliseconds, then random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
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
        return cls.from_dict(serialization.loads(body))

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
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
        if not isinstance(headers, dict) or not all(isinstance(k, str) for k in headers):
            raise DecodeError("envelope headers must be a JSON object")
        try:
            uuid.UUID(str(message_id))
        except ValueError:
            raise DecodeError(f"envelope id {message_id!r} is not a UUID") from None
        return cls(type=type_name, payload=data["payload"], headers=headers, id=str(message_id))
