"""``DatabaseChannel``: the queue is the outbox table of each tenant database.

A consumer claims due rows with ``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL,
MariaDB; SQLite serialises writers instead) in the transaction that handles
them, and deletes them there, so the handler's effects and the removal commit
together. Rows claimed but not acknowledged stay queued when that transaction
ends. A claim holds its rows for at most ``WORKER["CLAIM_LEASE"]`` seconds of idle
time: the database ends a claiming transaction that idles longer (a stopped
worker), see :mod:`ecotone_django.storage.lease`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from ..clock import now
from ..conf import get_config
from ..storage import outbox as table
from .base import Channel, Delivery

__all__ = ["DatabaseChannel", "DatabaseConsumer"]


class DatabaseChannel(Channel):
    options_allowed = frozenset()


class DatabaseConsumer:
    """Hands out due rows of some database channels, in the caller's transaction on one tenant database.

    With several channels they take turns, claim by claim, starting after the channel served last in
    that database, so a channel with a large backlog cannot hold back the others. ``tenants`` limits the
    rows to those tenants' messages.
    """

    def __init__(self, channel_names: Sequence[str], tenants: Sequence[str] = ()) -> None:
        self.channel_names = list(channel_names)
        self.tenants = list(tenants)
        self._next: dict[str, int] = {}  # per database: the channel whose turn it is
        self._lock = threading.Lock()
        self.lease = get_config().worker.claim_lease

    def receive(self, alias: str, limit: int) -> list[Delivery]:
        """Lock up to ``limit`` due rows of one channel in ``alias``; call it inside ``atomic(using=alias)``."""
        count = len(self.channel_names)
        if not count:
            return []
        with self._lock:
            first = self._next.get(alias, 0)
        turns = [self.channel_names[(first + offset) % count] for offset in range(count)]
        channel, rows = table.claim(alias, turns, now(), self.tenants, limit, lease=self.lease)
        if channel is None:
            return []
        with self._lock:
            self._next[alias] = (self.channel_names.index(channel) + 1) % count
        return [
            Delivery(body, handler_id, channel_name, attempts, tag=pk)
            for pk, body, handler_id, channel_name, attempts in rows
        ]

    def ack(self, alias: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the rows of handled deliveries, in the transaction that claimed them."""
        table.delete_rows(alias, [delivery.tag for delivery in deliveries])

    def pending(self, aliases: Iterable[str]) -> bool:
        """Whether any of ``aliases`` holds a due row of these channels, claimed by another consumer or not."""
        moment = now()
        return any(table.any_due(alias, self.channel_names, moment, self.tenants) for alias in aliases)
