"""The inbox: at-least-once delivery, effectively-once handling.

A row (key, handler) is inserted in the handler's transaction, before the
handler body runs. A redelivered message hits the unique constraint — or waits
on the uniqueness lock of a concurrent first delivery and then hits it — and the
worker, finding the committed row, skips it. The key is the message id, or the business key of ``@deduplicated``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from .clock import now
from .conf import get_config
from .handlers import Handler
from .messages import Envelope
from .models import InboxEntry

MAX_KEY = 255


def inbox_key(handler: Handler, envelope: Envelope) -> str:
    """The message id, or ``dedup:<value>`` of the handler's ``@deduplicated`` key."""
    if handler.dedup_key is None:
        return envelope.id
    name = handler.dedup_key
    value: Any = envelope.headers.get(name)
    if value is None and isinstance(envelope.payload, dict):
        value = envelope.payload.get(name)
    if value is None:
        return envelope.id
    key = f"dedup:{name}={value}"
    if len(key) > MAX_KEY:
        key = "dedup-sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def record(alias: str, handler: Handler, envelope: Envelope) -> None:
    """Insert the inbox row inside the handler's transaction (savepoint); a duplicate raises IntegrityError."""
    InboxEntry.objects.using(alias).create(key=inbox_key(handler, envelope), handler=handler.id, handled_at=now())


def already_handled(alias: str, handler: Handler, envelope: Envelope) -> bool:
    """After an IntegrityError: only a row already in the inbox makes it a duplicate; anything else is real."""
    return InboxEntry.objects.using(alias).filter(key=inbox_key(handler, envelope), handler=handler.id).exists()


def cleanup(alias: str, retention: timedelta | None = None) -> int:
    """Delete inbox rows older than the retention (default ECOTONE['INBOX_RETENTION'], 7 days)."""
    cutoff = now() - (retention or get_config().inbox_retention)
    deleted, _ = InboxEntry.objects.using(alias).filter(handled_at__lt=cutoff).delete()
    return deleted
