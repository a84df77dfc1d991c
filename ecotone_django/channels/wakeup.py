"""Waking idle database-channel consumers as soon as a sender commits (PostgreSQL LISTEN/NOTIFY).

A send to a database channel on PostgreSQL may issue a ``pg_notify`` in its own transaction
(:func:`ecotone_django.storage.outbox.insert`); the notification reaches listeners when that transaction
commits, and never if it rolls back. :class:`Wakeup` keeps one listening connection per PostgreSQL
database a worker serves, in one thread, and wakes the consumer threads waiting in :meth:`Wakeup.wait`.
It is a hint only: a consumer waits at most its poll interval either way, so a lost notification, a
listener that cannot connect, another driver or another database engine only cost the poll's latency.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Sequence
from typing import Any

from django.db import connections

from ..storage.outbox import wakeup_name

__all__ = ["Wakeup"]

logger = logging.getLogger("ecotone_django.worker")

#: Seconds between attempts to (re)connect a listening connection that failed.
RECONNECT_SECONDS = 1.0


class Wakeup:
    """Lets consumer threads of ``channel_names`` sleep until a sender's NOTIFY, an interrupt or a timeout.

    A consumer takes a :meth:`mark` before it looks for work and passes it to :meth:`wait` when it found
    none: a notification that arrived in between ends the wait at once, so none is missed.

    It also spares a consumer of several databases the empty claims (a transaction each) in those that
    had nothing while another keeps it busy: a database found empty is looked at again after ``quiet``
    seconds, or at once when a sender there notifies (:meth:`worth_a_look`, :meth:`looked`).
    """

    def __init__(self, channel_names: Sequence[str], *, quiet: float = 0.0) -> None:
        self.names = {wakeup_name(name): name for name in channel_names}
        self.quiet = quiet
        self._quiet: dict[str, tuple[float, int]] = {}  # alias → (look again at, its notifications then)
        self._heard: dict[str, int] = {}  # alias → notifications heard there
        self._skipped_until = float("inf")  # the earliest look-again time of a database skipped since mark()
        self._generation = 0
        self._interrupted = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pipe: tuple[int, int] | None = None

    def start(self, aliases: Sequence[str]) -> None:
        """Listen on the PostgreSQL databases among ``aliases`` (once; later calls do nothing)."""
        with self._changed:
            if self._thread is not None or self._interrupted or not self.names:
                return
            targets = [alias for alias in aliases if _listenable(alias)]
            if not targets:
                return
            self._pipe = os.pipe()
            self._thread = threading.Thread(target=self._listen, args=(targets,), name="ecotone-wakeup", daemon=True)
            self._thread.start()

    def mark(self) -> int:
        """The notifications seen so far: pass it to :meth:`wait` after looking for work."""
        with self._changed:
            self._skipped_until = float("inf")
            return self._generation

    def wait(self, mark: int, timeout: float) -> None:
        """Sleep until a notification newer than ``mark``, :meth:`interrupt`, or ``timeout`` seconds.

        The wait ends early when a database skipped since ``mark`` is due for another look.
        """
        with self._changed:
            timeout = max(0.0, min(timeout, self._skipped_until - time.monotonic()))
            self._changed.wait_for(lambda: self._interrupted or self._generation != mark, timeout)

    def worth_a_look(self, alias: str) -> bool:
        """Whether to claim in ``alias`` now: not found empty lately, or notified since."""
        with self._changed:
            quiet = self._quiet.get(alias)
            if quiet is None:
                return True
            until, heard = quiet
            if time.monotonic() >= until or self._heard.get(alias, 0) != heard:
                del self._quiet[alias]
                return True
            self._skipped_until = min(self._skipped_until, until)
            return False

    def looked(self, alias: str, found: bool) -> bool:
        """Record whether a claim in ``alias`` found work; returns ``found``."""
        if not found and self.quiet > 0:
            with self._changed:
                self._quiet[alias] = (time.monotonic() + self.quiet, self._heard.get(alias, 0))
        return found

    def interrupt(self) -> None:
        """End every wait, now and later, and stop listening (the worker is stopping)."""
        with self._changed:
            self._interrupted = True
            self._changed.notify_all()
            if self._pipe is not None:
                os.write(self._pipe[1], b"x")

    def close(self) -> None:
        """Interrupt, then wait for the listening thread to close its connections."""
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._changed:
            if self._pipe is not None and (self._thread is None or not self._thread.is_alive()):
                for fd in self._pipe:
                    os.close(fd)
                self._pipe = None

    def _wake(self, alias: str) -> None:
        with self._changed:
            self._heard[alias] = self._heard.get(alias, 0) + 1
            self._generation += 1
            self._changed.notify_all()

    def _listen(self, aliases: Sequence[str]) -> None:
        """The listening thread: one autocommit connection per database, all in one ``select``."""
        assert self._pipe is not None
        listening: dict[str, Any] = {}
        retry_at: dict[str, float] = {}
        try:
            while not self._interrupted:
                for alias in aliases:
                    if alias not in listening and retry_at.get(alias, 0.0) <= time.monotonic():
                        connection = self._connect(alias)
                        if connection is None:
                            retry_at[alias] = time.monotonic() + RECONNECT_SECONDS
                        else:
                            listening[alias] = connection
                            self._wake(alias)  # sends committed while nobody listened: look once
                by_fd = {connection.fileno(): alias for alias, connection in listening.items()}
                timeout = RECONNECT_SECONDS if len(listening) < len(aliases) else None
                ready, _, _ = select.select([self._pipe[0], *by_fd], [], [], timeout)
                for fd in ready:
                    if fd in by_fd:
                        alias = by_fd[fd]
                        try:
                            if self._read(listening[alias]):
                                self._wake(alias)
                        except Exception as exc:
                            logger.info("listening for new messages in %r stopped (%s); reconnecting", alias, exc)
                            _close(listening.pop(alias))
                            retry_at[alias] = time.monotonic() + RECONNECT_SECONDS
        finally:
            for connection in listening.values():
                _close(connection)

    def _connect(self, alias: str) -> Any:
        """A new autocommit connection to ``alias`` that LISTENs to this worker's channels, or ``None``."""
        wrapper: Any = connections[alias]
        try:  # the driver's own connect: Django's would take it from the pool, where one is configured
            connection = wrapper.Database.connect(**wrapper.get_connection_params())
            connection.autocommit = True
            with connection.cursor() as cursor:
                for name in self.names:
                    cursor.execute(f'LISTEN "{name}"')
        except Exception as exc:
            logger.info("cannot listen for new messages in %r (%s); polling only", alias, exc)
            return None
        return connection

    def _read(self, connection: Any) -> bool:
        """Read what arrived on a listening connection; whether it holds a notification for these channels."""
        pgconn = connection.pgconn
        pgconn.consume_input()
        heard = False
        while (note := pgconn.notifies()) is not None:
            heard = heard or note.relname.decode() in self.names
        return heard


def _listenable(alias: str) -> bool:
    """PostgreSQL through psycopg 3 (whose low-level connection reads notifications without a query)."""
    wrapper: Any = connections[alias]
    return wrapper.vendor == "postgresql" and getattr(wrapper.Database, "__name__", "") == "psycopg"


def _close(connection: Any) -> None:
    try:
        connection.close()
    except Exception:
        logger.debug("closing a listening connection failed", exc_info=True)
