"""The one place that reads or changes Django's private transaction state.

Why it exists. Two things ecotone_django does on every message are cheaper with state Django keeps on
the connection but does not document:

* **Publishing after commit.** A sender publishes the broker rows it has just committed in one batch,
  without reading them back. Django drops the ``on_commit`` hooks of a rolled-back ``atomic()`` block,
  so a hook that runs belongs to a committed row — except after a manual savepoint rollback
  (``savepoint()`` / ``savepoint_rollback()``), which keeps them. The connection's hook list
  (``run_on_commit``, entries ``(savepoint ids, hook, robust)``) tells which case a hook is in, and which
  hooks of the same commit run after it, so the last one publishes the batch. Without it, the rows of a
  commit are read back once (one ``SELECT`` per commit) before they are published.
* **A savepoint per message, made late and released in bulk.** A worker handles a batch of messages in
  one transaction, each in its own savepoint so that a failure undoes only that message. ``atomic()``
  sends ``SAVEPOINT`` on entry and ``RELEASE SAVEPOINT`` on exit: two round trips per message. Here the
  savepoint is made just before the handler's first statement on that database (none for a handler
  that writes elsewhere), kept on success and released with the batch; that needs ``savepoint_ids``
  (so that ``on_commit`` hooks know their savepoint) and ``run_on_commit`` (to drop a failed message's
  hooks). On PostgreSQL with psycopg 3 and client-side binding (Django's default), the ``SAVEPOINT``
  does not even cost a round trip of its own: it goes out in front of the handler's first statement, in
  the same query (see :class:`_LateSavepoint`).

What that saves, measured with the benchmark's database-channel figure (``bench/run.py --quick --only
db_channel_vs_raw_skip_locked``, PostgreSQL, one worker process, ``ECOTONE_BENCH_TRANSACTION_INTERNALS``
alternated in one session): about 4,900 to 6,800 messages/s with the internals, about 1,700 without. After
commit the fallback costs one ``SELECT`` per commit that publishes (a round trip, about 0.1 ms on loopback).

The public fallback does the same work with the documented API: ``transaction.atomic()`` per message,
and a lookup of the committed rows before they are published. :func:`use_internals` chooses between the
two per database alias: ``ECOTONE["TRANSACTION_INTERNALS"]`` ``"avoid"`` always takes the fallback,
``"use"`` never does (and raises :class:`~ecotone_django.exceptions.ConfigurationError` if the state does
not look as expected), and ``"auto"`` (the default) probes each connection class once and takes the
fallback, with a warning, when the state is not shaped as this code expects.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from .conf import get_config
from .exceptions import ConfigurationError, TenantTransactionError
from .messages import Envelope
from .tenancy import alias_for, tenant_of

__all__ = [
    "HookList",
    "batch_block",
    "check_send_transaction",
    "in_atomic_block",
    "message_block",
    "on_commit",
    "use_internals",
]

logger = logging.getLogger("ecotone_django.transactions")

#: Hooks registered with on_commit on one connection, as Django keeps them: (savepoint ids, hook, robust).
HookList = list[Any]

#: ``savepoint_create()`` since Django 6.1, where ``savepoint()`` is deprecated; ``savepoint()`` before.
_savepoint_create: Callable[..., str] = getattr(transaction, "savepoint_create", None) or transaction.savepoint

_shape_ok: dict[type, bool] = {}  # connection class → its private state looks as expected
_probe_lock = threading.Lock()
_batches = threading.local()  # alias → the _Batch open on this thread's connection


def _looks_expected(connection: BaseDatabaseWrapper) -> bool:
    state = vars(connection)
    return (
        isinstance(state.get("run_on_commit"), list)
        and isinstance(state.get("savepoint_ids"), list)
        and isinstance(state.get("in_atomic_block"), bool)
        and all(_is_entry(entry) for entry in state["run_on_commit"])
    )


def _is_entry(entry: Any) -> bool:
    return isinstance(entry, tuple) and len(entry) == 3 and callable(entry[1])


def _unexpected(connection: BaseDatabaseWrapper, what: str) -> bool:
    """Record that ``connection``'s class does not keep its state as expected; ``False``, or raise if required."""
    if get_config().transaction_internals == "use":
        raise ConfigurationError(
            f'ECOTONE["TRANSACTION_INTERNALS"] is "use", but {type(connection).__module__} keeps {what} '
            'differently than this version of ecotone_django expects; set it to "auto" or "avoid"'
        )
    with _probe_lock:
        if _shape_ok.get(type(connection)) is not False:
            logger.warning(
                "Django's %s on %s is not shaped as expected; using the public transaction API instead",
                what,
                type(connection).__module__,
            )
        _shape_ok[type(connection)] = False
    return False


def use_internals(alias: str) -> bool:
    """Whether to use Django's private transaction state on ``alias`` (the setting, then a probe)."""
    return _usable(connections[alias])


def _usable(connection: BaseDatabaseWrapper) -> bool:
    mode = get_config().transaction_internals
    if mode == "avoid":
        return False
    known = _shape_ok.get(type(connection))
    if known is None:
        if not _looks_expected(connection):
            return _unexpected(connection, "transaction state (run_on_commit, savepoint_ids, in_atomic_block)")
        with _probe_lock:
            known = _shape_ok.setdefault(type(connection), True)
    elif not known and mode == "use":
        return _unexpected(connection, "transaction state")
    return known


def in_atomic_block(alias: str) -> bool:
    """Whether code on ``alias`` runs inside ``atomic()`` (else: autocommit, or a manual transaction)."""
    connection = connections[alias]
    if _usable(connection):
        return bool(connection.in_atomic_block)
    return not connection.get_autocommit()


# ---------------------------------------------------------------------------
# A send and the caller's transaction
# ---------------------------------------------------------------------------


def _in_transaction(connection: BaseDatabaseWrapper) -> bool:
    """Whether a transaction is open on ``connection``; never opens a connection to find out."""
    if connection.connection is None:
        return False
    return bool(connection.in_atomic_block) if _usable(connection) else not connection.get_autocommit()


def check_send_transaction(envelope: Envelope) -> None:
    """Refuse a send that would commit on its own while the caller's transaction is on another database.

    A message is stored in its tenant's database. If the caller has a transaction open on some other
    database (a view's ``transaction.atomic()`` on ``default`` for a tenant that has its own database)
    and none on the tenant's, the message would commit at once and survive the caller's rollback.
    """
    alias = alias_for(tenant_of(envelope))
    if _in_transaction(connections[alias]):
        return
    # connections[...] per alias: about 0.7 us each, where connections.all() takes about 9 us in all.
    elsewhere = [other for other in connections.settings if other != alias and _in_transaction(connections[other])]
    if elsewhere:
        tenant = tenant_of(envelope)
        raise TenantTransactionError(
            f"{envelope.type} for tenant {tenant!r} is stored in database {alias!r}, but the open transaction is on "
            f"{', '.join(repr(a) for a in elsewhere)}: the message would commit on its own and survive a rollback "
            f"there. Open the transaction on {alias!r}: ecotone_django.tenancy.tenant_atomic() (under "
            f"TenantMiddleware) or transaction.atomic(using={alias!r})."
        )


# ---------------------------------------------------------------------------
# After commit
# ---------------------------------------------------------------------------


def on_commit(alias: str, hook: Callable[[], None]) -> HookList | None:
    """Run ``hook`` after the current transaction on ``alias`` commits (robust: its errors are logged).

    Returns the connection's list of hooks that ``hook`` was added to, when it can be read (see
    :func:`still_pending` and :func:`pending_after`); ``None`` when it cannot: the caller then assumes
    nothing about what was rolled back.
    """
    transaction.on_commit(hook, using=alias, robust=True)
    connection = connections[alias]
    if not _usable(connection):
        return None
    hooks: HookList = connection.run_on_commit
    if not (hooks and _is_entry(hooks[-1]) and hooks[-1][1] is hook):
        _unexpected(connection, "list of on_commit hooks")
        return None
    return hooks


def still_pending(hooks: HookList, hook: Callable[[], None]) -> bool:
    """Whether ``hook``, now running, is still in the list it was added to.

    A commit consumes the list it ends with, taking each hook off before calling it; every savepoint
    rollback replaces the list. So a running hook no longer in its list knows that nothing was rolled
    back since it was added; one still there saw a rollback after it.
    """
    return any(entry[1] is hook for entry in hooks)


def pending_after(hooks: HookList) -> Iterator[Callable[[], None]]:
    """The hooks of this commit that run after the running one (valid when it is no longer pending)."""
    return (entry[1] for entry in hooks)


# ---------------------------------------------------------------------------
# A message's savepoint in a batch
# ---------------------------------------------------------------------------


def _prefixable_cursor(context: Any, many: bool) -> Any:
    """The driver's cursor of ``context`` if a statement can go out in one query behind a ``SAVEPOINT``.

    That is a psycopg 3 client-side binding cursor (Django's default on PostgreSQL: the simple query
    protocol, which takes several statements in one query, and ``nextset()`` to reach the second
    result) running one statement, not ``executemany``. Otherwise ``None``: the savepoint goes alone.
    """
    if many or not isinstance(context, dict):
        return None
    cursor = getattr(context.get("cursor"), "cursor", None)
    client_cursor = _client_cursor_class()
    return cursor if client_cursor is not None and isinstance(cursor, client_cursor) else None


@functools.cache
def _client_cursor_class() -> type | None:
    try:
        from psycopg import ClientCursor  # noqa: PLC0415 - psycopg 3 is optional (the "postgres" extra)
    except ImportError:  # psycopg 2, or no PostgreSQL driver at all
        return None
    return ClientCursor


class _LateSavepoint:
    """The savepoint around one handler in a batch transaction, made right before its first statement.

    ``SAVEPOINT`` goes out just before the first statement the handler runs through Django on this
    connection (an execute wrapper, so nested ``atomic()`` blocks, the ORM and ``connection.cursor()``
    all count). On success the savepoint is kept, not released: releasing the batch's enclosing
    savepoint or transaction ends them all at once. On failure the connection rolls back to it, if it
    was made, and drops the ``on_commit`` hooks the handler registered. Statements sent on the driver's
    own connection object, past Django, are not seen and not rolled back.
    """

    def __init__(self, alias: str, connection: BaseDatabaseWrapper) -> None:
        self.alias = alias
        self.connection = connection
        self.sid: str | None = None
        self._making = False
        self._hooks = 0

    def _first_statement(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.sid is None and not self._making:
            self._making = True  # the SAVEPOINT statement itself passes through this wrapper
            cursor = _prefixable_cursor(context, many)
            if cursor is not None and "_savepoint" not in vars(self.connection):
                self.sid = self._name_savepoint()
                if self.sid is not None:
                    self._keep(self.sid)
                    # One query, two statements: the server makes the savepoint, then runs the statement (an
                    # error in it leaves the savepoint made, to roll back to). The cursor then moves on to the
                    # statement's own result, which is what the caller reads.
                    savepoint = self.connection.ops.savepoint_create_sql(self.sid)
                    result = execute(f"{savepoint}; {sql}", params, many, context)
                    cursor.nextset()
                    return result
            else:
                self.sid = _savepoint_create(using=self.alias)
                if self.sid is not None:
                    self._keep(self.sid)
        return execute(sql, params, many, context)

    def _name_savepoint(self) -> str | None:
        """A savepoint id from Django, which does its bookkeeping, without its ``SAVEPOINT`` statement."""
        named: list[str] = []
        state = vars(self.connection)
        state["_savepoint"] = named.append  # shadows the method that would send the statement
        try:
            sid = _savepoint_create(using=self.alias)
        finally:
            del state["_savepoint"]
        return sid if named else None

    def _keep(self, sid: str) -> None:
        if sid not in self.connection.savepoint_ids:
            self.connection.savepoint_ids.append(sid)  # on_commit hooks registered from now on

    def __enter__(self) -> None:
        self._hooks = len(self.connection.run_on_commit)
        # What connection.execute_wrapper() does, without a generator context manager for every message.
        self.connection.execute_wrappers.append(self._first_statement)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.connection.execute_wrappers.remove(self._first_statement)
        if self.sid is not None and self.sid in self.connection.savepoint_ids:
            self.connection.savepoint_ids.remove(self.sid)
        if exc_type is None:
            batch = getattr(_batches, self.alias, None)
            if batch is not None and self.sid is not None:
                batch.kept.append(self.sid)
            return
        transaction.set_rollback(False, using=self.alias)  # the handler's work is undone (below); the batch goes on
        if self.sid is not None:
            transaction.savepoint_rollback(self.sid, using=self.alias)
            transaction.savepoint_commit(self.sid, using=self.alias)  # released, as atomic() does: it is not reused
        del self.connection.run_on_commit[self._hooks :]


def message_block(alias: str) -> contextlib.AbstractContextManager[Any]:
    """A message's own transaction on ``alias``, or its savepoint inside a batch transaction.

    Either way a failure undoes that message's statements, ``on_commit`` hooks and sends, and nothing else.
    """
    connection = connections[alias]
    if _usable(connection) and connection.in_atomic_block:
        return _LateSavepoint(alias, connection)
    return transaction.atomic(using=alias)


class _Batch:
    """The messages of one batch, whose kept savepoints are released together before the batch goes on.

    Releasing a savepoint releases every savepoint made after it, so one ``RELEASE SAVEPOINT`` of the
    first savepoint a message kept ends them all, and none when no handler sent a statement.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.kept: list[str] = []

    def __enter__(self) -> None:
        setattr(_batches, self.alias, self)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        setattr(_batches, self.alias, None)
        if exc_type is None and self.kept:
            transaction.savepoint_commit(self.kept[0], using=self.alias)


def batch_block(alias: str) -> contextlib.AbstractContextManager[Any]:
    """Around the messages of a batch inside a transaction on ``alias``: no savepoint of theirs is open after it.

    What follows the batch in the transaction (a database channel deletes its rows) then runs in the top
    transaction: on PostgreSQL the index entries of rows deleted inside a subtransaction are not marked
    dead by later scans, so every later claim would wade through the rows deleted since the last VACUUM.
    """
    connection = connections[alias]
    if _usable(connection) and connection.in_atomic_block:
        return _Batch(alias)
    return transaction.atomic(using=alias)
