"""``DatabaseChannel``: the queue is the outbox table of each tenant database.

A worker claims a due row with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL,
MariaDB; SQLite serialises writers instead), handles it in the same transaction
and deletes it, so the handler's effects and the removal commit together.
"""

from __future__ import annotations

from .base import Channel


class DatabaseChannel(Channel):
    options_allowed = frozenset()
