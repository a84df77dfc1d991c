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

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

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


def _insert_sql(connection: BaseDatabaseWrapper) -> str:
    quote, meta = connection.ops.quote_name, InboxEntry._meta
    column = {field.name: field.column or field.name for field in meta.concrete_fields}
    columns = ", ".join(quote(column[name]) for name in ("key", "handler", "handled_at"))
    return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES (%s, %s, %s)"


def record(alias: str, handler: Handler, envelope: Envelope) -> None:
    """Insert the inbox row inside the handler's transaction (savepoint); a duplicate raises IntegrityError.

    A plain INSERT on the connection's cursor, not ``objects.create()``: building a model instance and
    compiling the statement for every message was a fifth of a database-channel worker's CPU time.
    """
    connection = connections[alias]
    handled_at = connection.ops.adapt_datetimefield_value(now())
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection), [inbox_key(handler, envelope), handler.id, handled_at])


def already_handled(alias: str, handler: Handler, envelope: Envelope) -> bool:
    """After an IntegrityError: only a row already in the inbox makes it a duplicate; anything else is real."""
    return InboxEntry.objects.using(alias).filter(key=inbox_key(handler, envelope), handler=handler.id).exists()


def cleanup(alias: str, retention: timedelta | None = None) -> int:
    """Delete inbox rows older than the retention (default ECOTONE['INBOX_RETENTION'], 7 days)."""
    cutoff = now() - (retention or get_config().inbox_retention)
    deleted, _ = InboxEntry.objects.using(alias).filter(handled_at__lt=cutoff).delete()
    return deleted
