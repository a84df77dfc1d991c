"""The ``ecotone_outbox`` table: the outbox of broker channels and the queue of database channels.

Every statement on the table that matters for speed or differs per vendor is here: the INSERT of a
send, the claim of due rows by a database-channel consumer, and the DELETE of handled or published
rows. The ORM builds the rest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, Q, QuerySet

from ..models import OutboxMessage
from . import lease as lease_setting

__all__ = ["any_due", "claim", "count_waiting", "delete_rows", "due", "insert", "take_due", "wakeup_name"]

#: On PostgreSQL, a DELETE of published rows outside a transaction need not wait for the WAL flush: losing
#: it to a crash only means the relay publishes the message once more (the setting is local to the
#: statement's transaction).
_NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true)) AS deferred_flush"

_INSERT_FIELDS = [f for f in OutboxMessage._meta.concrete_fields if not f.primary_key]
_INSERT_SQL: dict[tuple[str, bool, bool], str] = {}  # by (vendor, RETURNING, NOTIFY): built once
_CLAIM_COLUMNS = ("id", "body", "handler", "channel", "attempts")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,48}")


def wakeup_name(channel: str) -> str:
    """The PostgreSQL LISTEN/NOTIFY name of a database channel (an identifier of at most 63 bytes)."""
    if _PLAIN_NAME.fullmatch(channel):
        return f"ecotone.{channel}"
    return f"ecotone.{hashlib.sha256(channel.encode()).hexdigest()[:40]}"


def insert(alias: str, row: OutboxMessage, *, notify: bool = False) -> None:
    """INSERT ``row`` with one statement on the cursor and set its primary key.

    ``objects.create()`` costs more Python time than the database round trip (model signals, the
    compiler, field preparation), and this runs on every send. ``notify`` (PostgreSQL only) also issues
    ``pg_notify`` on the row's :func:`wakeup_name` in the same statement: listeners hear of it when the
    transaction commits, and never of a row that was rolled back.
    """
    connection = connections[alias]
    returning = connection.features.can_return_columns_from_insert
    notify = notify and connection.vendor == "postgresql"
    key = (connection.vendor, returning, notify)
    if key not in _INSERT_SQL:
        quote, meta = connection.ops.quote_name, OutboxMessage._meta
        columns = ", ".join(quote(f.column) for f in _INSERT_FIELDS)  # type: ignore[arg-type]
        placeholders = ", ".join(["%s"] * len(_INSERT_FIELDS))
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"
        if returning:
            sql += f" RETURNING {quote(meta.pk.column)}"  # type: ignore[arg-type]
            sql += ", pg_notify(%s, '')" if notify else ""
        _INSERT_SQL[key] = sql
    sql = _INSERT_SQL[key]
    params = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in _INSERT_FIELDS]
    if notify:
        params.append(wakeup_name(row.channel))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row.pk = cursor.fetchone()[0] if returning else connection.ops.last_insert_id(cursor, meta.db_table, "id")
    row._state.adding = False
    row._state.db = alias


def delete_rows(alias: str, pks: Sequence[int]) -> None:
    """Delete outbox rows by primary key: handled or published messages.

    On MariaDB one statement per row: it plans ``id IN (…)`` on a small table as a full scan that locks
    every row it reads, so two workers deleting their batches deadlock, where a primary-key delete locks
    one row. On PostgreSQL outside a transaction the DELETE does not wait for the WAL flush: losing it
    to a crash only means the relay publishes the message once more, and the inbox drops that copy.
    """
    if not pks:
        return
    connection = connections[alias]
    table = connection.ops.quote_name(OutboxMessage._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            for pk in pks:
                cursor.execute(f"DELETE FROM {table} WHERE id = %s", [pk])
        elif connection.vendor == "postgresql":  # one array, whatever the number of rows, as one string to quote
            deferred = f" USING {_NO_FLUSH}" if connection.get_autocommit() else ""
            ids = "{" + ",".join(str(int(pk)) for pk in pks) + "}"
            cursor.execute(f"DELETE FROM {table}{deferred} WHERE {table}.id = ANY(%s::bigint[])", [ids])
        else:
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(pks))})", list(pks))


def _claim_sql(connection: BaseDatabaseWrapper, *, tenants: int, lease: bool = False) -> str:
    """The due-row claim of one channel; parameters: (the lease,) channel, now, the tenants, limit.

    ``lease`` (PostgreSQL): the statement also sets the claim lease for its transaction, for each row it
    returns (:mod:`.lease`). It takes effect with the rows' locks, and spares the batch a round trip.
    """
    quote = connection.ops.quote_name
    columns = ", ".join(map(quote, _CLAIM_COLUMNS))
    if lease:
        columns += f", set_config('{lease_setting.CLAIM_SETTING}', %s, true)"
    sql = (
        f"SELECT {columns} FROM {quote(OutboxMessage._meta.db_table)} "
        f"WHERE {quote('channel')} = %s AND {quote('available_at')} <= %s"
    )
    if tenants:
        sql += f" AND {quote('tenant')} IN ({', '.join(['%s'] * tenants)})"
    sql += f" ORDER BY {quote('available_at')}, {quote('id')} LIMIT %s"
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE SKIP LOCKED"
    return sql


def claim(
    alias: str, channels: Sequence[str], moment: datetime, tenants: Sequence[str], limit: int, *, lease: float = 0.0
) -> tuple[str | None, list[tuple[Any, ...]]]:
    """Lock up to ``limit`` due rows of the first of ``channels`` that has any, skipping rows others hold.

    Returns that channel and its rows ``(id, body, handler, channel, attempts)``, oldest first, or
    ``(None, [])``. Run it in the transaction that handles and deletes the rows. Each claim is a range
    scan of the ``(channel, available_at, id)`` index that stops after ``limit`` rows, in plain SQL:
    building the ORM query and converting its timestamps costs more than the statement. MariaDB does
    not honour SKIP LOCKED in a subquery, so the rows are selected here and deleted by id afterwards
    (:func:`delete_rows`). SQLite serialises writers instead of locking rows.

    ``lease``: the claim lease in seconds (0: none, see :mod:`.lease`), on PostgreSQL set by the claim
    statement itself, elsewhere by a statement before it.
    """
    connection = connections[alias]
    in_claim = lease > 0 and connection.vendor == "postgresql"
    if lease > 0 and not in_claim:
        lease_setting.hold(alias, lease)
    sql = _claim_sql(connection, tenants=len(tenants), lease=in_claim)
    first = [lease_setting.milliseconds(lease)] if in_claim else []
    at = connection.ops.adapt_datetimefield_value(moment)
    with connection.cursor() as cursor:
        for channel in channels:
            cursor.execute(sql, [*first, channel, at, *tenants, limit])
            rows = cursor.fetchall()
            if rows:
                return channel, [row[:5] for row in rows] if in_claim else rows
    return None, []


def due(alias: str, channel: str, moment: datetime) -> QuerySet[OutboxMessage]:
    """Rows of ``channel`` in ``alias`` due at ``moment``, oldest first (a range scan of the due index)."""
    return (
        OutboxMessage.objects.using(alias)
        .filter(channel=channel, available_at__lte=moment)
        .order_by("available_at", "id")
    )


def take_due(
    alias: str, channel: str, moment: datetime, limit: int, *, flush: bool = True
) -> tuple[list[OutboxMessage], bool]:
    """Lock up to ``limit`` rows of broker channel ``channel`` due at ``moment``, skipping rows others hold.

    Returns the rows and whether they are deleted already. On PostgreSQL one statement locks and deletes
    them and returns them (``DELETE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING``): the
    caller publishes them, and a rollback of its transaction brings them back. With ``flush=False`` (the
    caller's transaction holds nothing else) its commit does not wait for the WAL flush: a crash that
    loses it only brings the rows back, to be published once more, and the inbox drops those copies.
    Elsewhere the rows are selected (``FOR UPDATE``, skipping locked rows where the database can) and the
    caller deletes them by id (:func:`delete_rows`).
    """
    connection = connections[alias]
    if connection.vendor != "postgresql":
        rows = due(alias, channel, moment)[:limit].select_for_update(skip_locked=True)
        return list(rows), False
    quote, meta = connection.ops.quote_name, OutboxMessage._meta
    table = quote(meta.db_table)
    fields = meta.concrete_fields
    columns = ", ".join(f"{table}.{quote(f.column)}" for f in fields)  # type: ignore[arg-type]
    sql = (
        f"DELETE FROM {table}{'' if flush else f' USING {_NO_FLUSH}'} WHERE {table}.id IN ("
        f"SELECT id FROM {table} WHERE {quote('channel')} = %s AND {quote('available_at')} <= %s "
        f"ORDER BY {quote('available_at')}, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {columns}"
    )
    names = [f.attname for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [channel, connection.ops.adapt_datetimefield_value(moment), limit])
        return [OutboxMessage.from_db(alias, names, values) for values in cursor.fetchall()], True


def any_due(alias: str, channels: Sequence[str], moment: datetime, tenants: Sequence[str] = ()) -> bool:
    """Whether ``alias`` holds a row of ``channels`` (of ``tenants``) due at ``moment``, locked by a consumer or not."""
    rows = OutboxMessage.objects.using(alias).filter(channel__in=channels, available_at__lte=moment)
    return (rows.filter(tenant__in=tenants) if tenants else rows).exists()


def count_waiting(
    alias: str, channels: Sequence[str], moment: datetime, tenants: Sequence[str] = ()
) -> tuple[int, int]:
    """How many rows of ``channels`` (of ``tenants``) in ``alias`` are due at ``moment``, and how many later."""
    rows = OutboxMessage.objects.using(alias).filter(channel__in=channels)
    if tenants:
        rows = rows.filter(tenant__in=tenants)
    counts = rows.aggregate(due=Count("id", filter=Q(available_at__lte=moment)), total=Count("id"))
    return counts["due"], counts["total"] - counts["due"]
