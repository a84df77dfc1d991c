"""Whether a database has ecotone_django's tables: a missing migration named, with the command that fixes it.

A tenant database added to ``DATABASES`` and ``TENANCY["CONNECTIONS"]`` but never migrated has no
outbox, inbox or dead-letter table. Without this module that shows as the driver's ``relation
"ecotone_outbox" does not exist`` deep in a send, or as a worker that starts and fails at its first
message. :func:`unapplied_migrations` lets a worker refuse to start; :func:`migrate_hint` turns the
driver's error into :class:`~ecotone_django.exceptions.UnmigratedDatabaseError` naming
``manage.py migrate --database ALIAS``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

from .conf import get_config
from .exceptions import UnmigratedDatabaseError

__all__ = ["is_missing_table", "migrate_command", "migrate_hint", "migration_problems", "unapplied_migrations"]

OWN_APP = "ecotone_django"
_MISSING_TABLE_SQLSTATE = "42P01"  # PostgreSQL undefined_table
_MISSING_TABLE_MYSQL = 1146  # MySQL/MariaDB ER_NO_SUCH_TABLE


def migrate_command(alias: str) -> str:
    return "python manage.py migrate" if alias == "default" else f"python manage.py migrate --database {alias}"


def is_missing_table(exc: BaseException) -> bool:
    """Whether a database error says that a table does not exist (PostgreSQL, MySQL/MariaDB, SQLite)."""
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) == _MISSING_TABLE_SQLSTATE or getattr(cause, "pgcode", None) == (
        _MISSING_TABLE_SQLSTATE
    ):
        return True
    args = getattr(cause, "args", ())
    if args and args[0] == _MISSING_TABLE_MYSQL:
        return True
    return "no such table" in str(exc)


@contextmanager
def migrate_hint(alias: str) -> Iterator[None]:
    """Re-raise a missing-table error on ``alias`` as :class:`UnmigratedDatabaseError` naming the fix."""
    try:
        yield
    except DatabaseError as exc:
        if not is_missing_table(exc):
            raise
        raise UnmigratedDatabaseError(
            f"database {alias!r} is not migrated ({str(exc).strip().splitlines()[0]}): run `{migrate_command(alias)}`"
        ) from exc


def unapplied_migrations(alias: str) -> list[str]:
    """Migrations of ecotone_django and the tenant apps not yet applied on ``alias`` (``app.name``)."""
    tenancy = get_config().tenancy
    labels = {OWN_APP, *(tenancy.tenant_apps if tenancy else ())}
    executor = MigrationExecutor(connections[alias])
    targets = [node for node in executor.loader.graph.leaf_nodes() if node[0] in labels]
    return [f"{migration.app_label}.{migration.name}" for migration, _ in executor.migration_plan(targets)]


def migration_problems(aliases: Iterable[str]) -> list[str]:
    """One line per database of ``aliases`` that is unreachable or not fully migrated (none: all is well)."""
    problems = []
    for alias in aliases:
        try:
            missing = unapplied_migrations(alias)
        except DatabaseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"database {alias!r} cannot be read: {first_line}")
            continue
        if missing:
            problems.append(
                f"database {alias!r} is not migrated ({len(missing)} migration(s) not applied, first "
                f"{missing[0]}): run `{migrate_command(alias)}`"
            )
    return problems
