"""The inbox: at-least-once delivery, effectively-once handling.

A row (key, handler) is inserted in the handler's transaction, before the
handler body runs. A redelivered message hits the unique constraint — or waits
on the uniqueness lock of a concurrent first delivery and then hits it — and the
worker, finding the committed row, skips it. The key is the message id, or the business key of ``@deduplicated``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q

from ..clock import now
from ..conf import get_config
from ..handlers import Handler
from ..messages import Envelope
from ..models import InboxEntry

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
    compiling the statement costs more than the round trip, for every message handled.
    """
    connection = connections[alias]
    handled_at = connection.ops.adapt_datetimefield_value(now())
    with connection.cursor() as cursor:
        cursor.execute(_insert_sql(connection), [inbox_key(handler, envelope), handler.id, handled_at])


def supports_record_many(alias: str) -> bool:
    """Whether :func:`record_many` works on ``alias``: an INSERT that skips conflicts and returns the rest."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return sqlite3.sqlite_version_info >= (3, 35)
    return False  # MariaDB's INSERT IGNORE also hides other errors


def record_many(alias: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Insert the inbox rows ``(key, handler)`` in one statement; returns those that were not there yet.

    A key another transaction holds uncommitted makes the INSERT wait for it, as :func:`record` does.
    Rows go in sorted, so that two workers with overlapping batches lock them in the same order.
    """
    if not keys:
        return set()
    connection = connections[alias]
    quote, meta = connection.ops.quote_name, InboxEntry._meta
    column = {field.name: field.column or field.name for field in meta.concrete_fields}
    key, handler, handled_at = (quote(column[name]) for name in ("key", "handler", "handled_at"))
    rows = sorted(set(keys))
    moment = connection.ops.adapt_datetimefield_value(now())
    params: list[Any]
    if connection.vendor == "postgresql":
        # One JSON text, whatever the batch size: one statement text (the driver caches its parsing, which
        # it does not for more than 50 parameters), and one string to quote where two lists of strings
        # cost the client-side binding of Django's cursor about 5 us per row.
        rows_sql = (
            "SELECT b.r->>0, b.r->>1, %s FROM json_array_elements(%s::json) WITH ORDINALITY AS b(r, n) ORDER BY n"
        )
        params = [moment, json.dumps(rows)]
    else:
        rows_sql = "VALUES " + ", ".join(["(%s, %s, %s)"] * len(rows))
        params = [value for k, h in rows for value in (k, h, moment)]
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({key}, {handler}, {handled_at}) {rows_sql} "
        f"ON CONFLICT DO NOTHING RETURNING {key}, {handler}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {(k, h) for k, h in cursor.fetchall()}


def forget(alias: str, keys: Sequence[tuple[str, str]]) -> None:
    """Delete inbox rows recorded by :func:`record_many` for messages that were not handled after all."""
    if not keys:
        return
    condition = Q()
    for key, handler_id in keys:
        condition |= Q(key=key, handler=handler_id)
    InboxEntry.objects.using(alias).filter(condition).delete()


def already_handled(alias: str, handler: Handler, envelope: Envelope) -> bool:
    """After an IntegrityError: only a row already in the inbox makes it a duplicate; anything else is real."""
    return InboxEntry.objects.using(alias).filter(key=inbox_key(handler, envelope), handler=handler.id).exists()


def cleanup(alias: str, retention: timedelta | None = None) -> int:
    """Delete inbox rows older than the retention (default ECOTONE['INBOX_RETENTION'], 7 days)."""
    cutoff = now() - (retention or get_config().inbox_retention)
    deleted, _ = InboxEntry.objects.using(alias).filter(handled_at__lt=cutoff).delete()
    return deleted
