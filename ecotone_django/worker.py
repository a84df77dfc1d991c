"""The worker: takes messages from channels and runs their handlers.

:func:`process` is the one path every channel uses for one delivery: decode,
find the handler, then — in one transaction on the tenant's database — the
inbox row, the handler body, its saga state and the messages it sends. A
failure rolls that back and stores a retry (``available_at`` = now + backoff)
or, after ``RETRY["MAX_ATTEMPTS"]``, a dead letter. Bad input is dead-lettered
at once. Nothing a handler raises stops the worker.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from django.db import DatabaseError, IntegrityError, OperationalError, close_old_connections, connections, transaction

from . import inbox, serialization
from .bus import invoke, tenant_of
from .channels import BrokerChannel, channels
from .clock import now
from .conf import get_config
from .exceptions import (
    ConcurrencyError,
    ConfigurationError,
    ConversionError,
    DecodeError,
    HandlerTimeoutError,
    NoHandlerError,
    UnknownMessageTypeError,
)
from .handlers import Handler, Registry, get_registry
from .messages import Envelope
from .models import OutboxMessage
from .outbox import Relay, delete_rows
from .retry import dead_letter, describe, safe_text, schedule_retry
from .tenancy import alias_for

logger = logging.getLogger("ecotone_django.worker")

IMMEDIATE_RETRIES = 3
BATCH_SECONDS = 0.1  # a database-channel claim holds about this much work


#: One delivery as a channel hands it over: body, handler id, channel, attempts, and the envelope if decoded.
Delivery = tuple[str | bytes, str, str, int, Envelope | None]


class Outcome(enum.Enum):
    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD = "dead"


def _message_class(registry: Registry, handler: Handler, envelope: Envelope) -> type:
    if handler.message_type is not None and envelope.type == handler.message_name:
        return handler.message_type
    cls = registry.message_class(envelope.type)
    if cls is None or (handler.message_type is not None and not issubclass(cls, handler.message_type)):
        raise UnknownMessageTypeError(f"message type {envelope.type!r} is not known to handler {handler.id}")
    return cls


class _HandlerSavepoint:
    """The savepoint around one handler in a batch transaction, made right before its first statement.

    In a batch every message runs in a savepoint, so that a failure undoes only its own work. Made up
    front, as ``atomic()`` makes it, that is a round trip per message even for a handler that sends
    nothing to this database; here ``SAVEPOINT`` goes out just before the first statement the handler
    runs through Django on this connection (an execute wrapper, so nested ``atomic()`` blocks, the ORM
    and ``connection.cursor()`` all count). On success the savepoint is kept, not released: the batch
    ends them all at once (see ``Worker.consume_database_batch``). On failure the connection rolls back
    to it, if it was made, and drops the ``on_commit`` callbacks the handler registered. Statements sent
    on the driver's own connection object, past Django, are not seen and not rolled back.
    """

    def __init__(self, alias: str) -> None:
        self.connection = connections[alias]
        self.sid: str | None = None
        self._making = False
        self._callbacks = 0
        self._wrapper: contextlib.AbstractContextManager[None] | None = None

    def _first_statement(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if self.sid is None and not self._making:
            self._making = True  # the SAVEPOINT statement itself passes through this wrapper
            self.sid = self.connection.savepoint()
            if self.sid is not None:
                self.connection.savepoint_ids.append(self.sid)  # on_commit callbacks registered from now on
        return execute(sql, params, many, context)

    def __enter__(self) -> None:
        self._callbacks = len(self.connection.run_on_commit)
        self._wrapper = self.connection.execute_wrapper(self._first_statement)
        self._wrapper.__enter__()

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        assert self._wrapper is not None
        self._wrapper.__exit__(None, None, None)
        if self.sid is not None and self.sid in self.connection.savepoint_ids:
            self.connection.savepoint_ids.remove(self.sid)
        if exc_type is None:
            return
        self.connection.needs_rollback = False  # what the handler did is undone (below); the batch goes on
        if self.sid is not None:
            self.connection.savepoint_rollback(self.sid)
            self.connection.savepoint_commit(self.sid)  # released, as atomic() does: it is not reused
        del self.connection.run_on_commit[self._callbacks :]


def _message_block(alias: str) -> contextlib.AbstractContextManager[Any]:
    """A message's own transaction, or its savepoint inside a batch."""
    if connections[alias].in_atomic_block:
        return _HandlerSavepoint(alias)
    return transaction.atomic(using=alias)


def delivery_alias(body: str | bytes, fallback_alias: str) -> tuple[Envelope | None, str]:
    """The decoded envelope of ``body`` and the database its handling writes to (``fallback_alias`` if bad)."""
    try:
        envelope = Envelope.decode(body)
    except DecodeError:
        return None, fallback_alias
    alias = alias_for(tenant_of(envelope))
    return envelope, alias if alias in connections.settings else fallback_alias


@dataclass
class Prepared:
    """A delivery decoded and matched to its handler, ready to run."""

    envelope: Envelope
    alias: str
    tenant: str | None
    text: str
    handler: Handler
    message: Any
    channel: str
    attempts: int
    registry: Registry


def prepare(
    body: str | bytes,
    handler_id: str,
    channel: str,
    attempts: int,
    *,
    fallback_alias: str,
    envelope: Envelope | None = None,
) -> Prepared | Outcome:
    """Decode ``body`` and find its handler and database; bad input is dead-lettered (``Outcome.DEAD``)."""
    try:
        if envelope is None:
            envelope = Envelope.decode(body)
    except DecodeError as exc:
        dead_letter(
            fallback_alias,
            reason=f"undecodable message: {exc}",
            body=safe_text(body),
            exc=exc,
            handler_id=handler_id,
            channel=channel,
            attempts=attempts,
        )
        return Outcome.DEAD
    tenant = tenant_of(envelope)
    alias = alias_for(tenant)
    text = safe_text(body)
    if alias not in connections.settings:
        dead_letter(
            fallback_alias,
            reason=f"tenant {tenant!r} maps to database {alias!r}, which DATABASES lacks",
            body=text,
            envelope=envelope,
            handler_id=handler_id,
            channel=channel,
            tenant=tenant,
        )
        return Outcome.DEAD
    registry = get_registry()
    try:
        handler = registry.get(handler_id)
        message = serialization.from_primitive(_message_class(registry, handler, envelope), envelope.payload)
    except (NoHandlerError, UnknownMessageTypeError, ConversionError) as exc:
        dead_letter(
            alias,
            reason=describe(exc)[:255],
            body=text,
            exc=exc,
            envelope=envelope,
            handler_id=handler_id,
            channel=channel,
            attempts=attempts,
            tenant=tenant,
        )
        return Outcome.DEAD
    return Prepared(envelope, alias, tenant, text, handler, message, channel, attempts, registry)


def run(delivery: Prepared, *, recorded: bool = False) -> Outcome:
    """Run a prepared delivery in its own savepoint (or transaction); a failure stores a retry or dead letter.

    ``recorded``: the caller inserted the inbox row already, in the enclosing transaction (see
    :meth:`Worker.handle_many`); a failure then deletes it again, so that the retry is not taken for a
    duplicate.
    """
    alias, handler, envelope = delivery.alias, delivery.handler, delivery.envelope
    error: BaseException | None = None
    for _immediate in range(IMMEDIATE_RETRIES):
        try:
            with _message_block(alias):
                if not recorded:
                    inbox.record(alias, handler, envelope)
                invoke(handler, delivery.message, envelope, delivery.registry)
            return Outcome.HANDLED
        except IntegrityError as exc:
            if not recorded and inbox.already_handled(alias, handler, envelope):
                logger.info("duplicate %s for %s skipped", envelope.id, handler.id)
                return Outcome.DUPLICATE
            error = exc  # the handler's own integrity error: a failure like any other
            break
        except ConcurrencyError as exc:
            error = exc
            continue
        except OperationalError as exc:
            if connections[alias].in_atomic_block:
                raise  # the claim transaction is gone too; the caller rolls back and retries
            error = exc
            continue
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a handler must never kill the worker
            error = exc
            break
    assert error is not None
    attempts = delivery.attempts + 1
    with transaction.atomic(using=alias):
        if recorded:
            inbox.forget(alias, [(inbox.inbox_key(handler, envelope), handler.id)])
        if attempts >= get_config().retry.max_attempts:
            dead_letter(
                alias,
                reason=f"failed {attempts} time(s): {describe(error)}"[:255],
                body=delivery.text,
                exc=error,
                envelope=envelope,
                handler_id=handler.id,
                channel=delivery.channel,
                attempts=attempts,
                tenant=delivery.tenant,
            )
            return Outcome.DEAD
        schedule_retry(alias, envelope, handler, delivery.channel, attempts, error)
    logger.warning("%s failed (attempt %d): %s; retrying later", handler.id, attempts, describe(error))
    return Outcome.RETRY


def process(
    body: str | bytes,
    handler_id: str,
    channel: str,
    attempts: int,
    *,
    fallback_alias: str,
    envelope: Envelope | None = None,
) -> Outcome:
    """Handle one delivery of ``body`` for ``handler_id``; never raises for a bad message or a failing handler.

    ``envelope`` is ``body`` already decoded, when the caller has it. Database errors outside the handler
    (a lost connection) do propagate: the caller rolls back and the message is delivered again.
    """
    prepared = prepare(body, handler_id, channel, attempts, fallback_alias=fallback_alias, envelope=envelope)
    return prepared if isinstance(prepared, Outcome) else run(prepared)


def _claim_sql(connection: Any, *, tenants: int) -> str:
    """The due-row claim of one channel; parameters: channel, now, the tenants, limit."""
    quote = connection.ops.quote_name
    columns = ["id", "body", "handler", "channel", "attempts"]
    sql = (
        f"SELECT {', '.join(map(quote, columns))} FROM {quote(OutboxMessage._meta.db_table)} "
        f"WHERE {quote('channel')} = %s AND {quote('available_at')} <= %s"
    )
    if tenants:
        sql += f" AND {quote('tenant')} IN ({', '.join(['%s'] * tenants)})"
    sql += f" ORDER BY {quote('available_at')}, {quote('id')} LIMIT %s"
    if connection.features.has_select_for_update_skip_locked:
        sql += " FOR UPDATE SKIP LOCKED"
    return sql


@dataclass
class Stats:
    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    dead: int = 0
    relayed: int = 0
    consecutive_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: Outcome) -> None:
        with self.lock:
            if outcome is Outcome.HANDLED:
                self.handled += 1
                self.consecutive_failures = 0
            elif outcome is Outcome.DUPLICATE:
                self.duplicates += 1
            elif outcome is Outcome.RETRY:
                self.retried += 1
                self.consecutive_failures += 1
            else:
                self.dead += 1
                self.consecutive_failures += 1

    def snapshot(self) -> tuple[int, int, int, int, int]:
        with self.lock:
            return (self.handled, self.duplicates, self.retried, self.dead, self.consecutive_failures)

    def restore(self, counts: tuple[int, int, int, int, int]) -> None:
        """Forget outcomes counted since :meth:`snapshot` (their transaction was rolled back)."""
        with self.lock:
            self.handled, self.duplicates, self.retried, self.dead, self.consecutive_failures = counts

    @property
    def total(self) -> int:
        return self.handled + self.duplicates + self.retried + self.dead

    def line(self) -> str:
        return (
            f"handled={self.handled} duplicates={self.duplicates} retried={self.retried} "
            f"dead={self.dead} relayed={self.relayed}"
        )


class _TimeLimit:
    """Raise HandlerTimeoutError in the handler if it runs past ``seconds`` (main thread only)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds and threading.current_thread() is threading.main_thread() else None

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        raise HandlerTimeoutError(f"handler exceeded the time limit of {self.seconds} s")

    def __enter__(self) -> None:
        if self.seconds:
            signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: Any) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)


class Worker:
    """Consumes the concrete channels behind ``channel_names`` from every tenant database, fairly."""

    def __init__(
        self,
        channel_names: Sequence[str],
        *,
        tenants: Sequence[str] | None = None,
        limit: int | None = None,
        time_limit: float | None = None,
        stop_when_empty: bool = False,
        relay: bool = True,
        concurrency: int = 1,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        config = get_config()
        concrete: list[str] = []
        for name in channel_names:
            concrete.extend(c for c in channels.concrete(name) if c not in concrete)
        self.database_channels = [c for c in concrete if not channels[c].is_broker]
        self.broker_channels = [ch for ch in map(channels.__getitem__, concrete) if isinstance(ch, BrokerChannel)]
        self.tenants = list(tenants or [])
        self.aliases = (
            list(dict.fromkeys(alias_for(t) for t in self.tenants)) if self.tenants else list(config.database_aliases)
        )
        missing = [alias for alias in self.aliases if alias not in connections.settings]
        if missing:  # else a polling loop dies on ConnectionDoesNotExist (system check ecotone.E003 when checks run)
            raise ConfigurationError(
                f"tenant database alias(es) {', '.join(map(repr, missing))} missing from DATABASES; "
                f"defined: {', '.join(connections.settings)}"
            )
        self.limit = limit
        self.time_limit = time_limit
        self.stop_when_empty = stop_when_empty
        self.relay = Relay(self.aliases) if relay else None
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.stats = Stats()
        self._stop = threading.Event()
        self._next_alias = 0
        self._next_channel: dict[str, int] = {}  # per database: the channel whose turn it is (see _claim)
        self._alias_lock = threading.Lock()
        self.poll_interval = config.worker.poll_interval
        self.claim_size = config.worker.claim_size
        self.slow_after_failures = config.worker.slow_after_failures
        self._seconds_per_message = 0.0  # moving average of handling time, sizes the next claim

    # -- control ---------------------------------------------------------------

    def stop(self) -> None:
        """Finish the message in hand, then return from :meth:`run`."""
        self._stop.set()

    def should_stop(self) -> bool:
        if self.limit is not None and self.stats.total >= self.limit:
            self._stop.set()
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            logger.warning("received %s: finishing the message in hand, then exiting", signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- one delivery ----------------------------------------------------------

    def handle_delivery(
        self,
        body: str | bytes,
        handler_id: str,
        channel: str,
        attempts: int,
        fallback_alias: str,
        envelope: Envelope | None = None,
    ) -> Outcome:
        outcome = self._timed(
            lambda: process(body, handler_id, channel, attempts, fallback_alias=fallback_alias, envelope=envelope)
        )
        self.stats.count(outcome)
        return outcome

    def handle_many(self, alias: str, deliveries: Sequence[Delivery], fallback_alias: str) -> int:
        """Handle ``deliveries`` in the caller's open transaction on ``alias``; returns how many were taken.

        Where the database can say which rows an INSERT skipped (PostgreSQL, SQLite), the inbox rows of
        the whole batch go in with one statement before the handlers run, and a message whose row was
        there already is a duplicate; each handler then runs in its own savepoint, and a failure deletes
        its inbox row again with the retry. Elsewhere each message records its own row. A stop request
        ends the batch after the message in hand; the deliveries not taken are left to the caller.
        """
        if len(deliveries) < 2 or not inbox.supports_record_many(alias):
            taken = 0
            for body, handler_id, channel, attempts, envelope in deliveries:
                if taken and self.should_stop():
                    break
                self.handle_delivery(body, handler_id, channel, attempts, fallback_alias, envelope)
                taken += 1
            return taken
        prepared: list[Prepared | Outcome] = []
        for body, handler_id, channel, attempts, envelope in deliveries:
            ready = prepare(body, handler_id, channel, attempts, fallback_alias=fallback_alias, envelope=envelope)
            if isinstance(ready, Prepared) and ready.alias != alias:  # another tenant database: its own transaction
                ready = self._timed(lambda r=ready: run(r))  # type: ignore[misc]
            prepared.append(ready)
        keys = [
            (inbox.inbox_key(p.handler, p.envelope), p.handler.id) if isinstance(p, Prepared) else None
            for p in prepared
        ]
        new = inbox.record_many(alias, [key for key in keys if key is not None])
        taken = 0
        for ready, key in zip(prepared, keys, strict=True):
            if taken and self.should_stop():
                break
            taken += 1
            if isinstance(ready, Outcome):
                self.stats.count(ready)
            elif key not in new:
                logger.info("duplicate %s for %s skipped", ready.envelope.id, ready.handler.id)
                self.stats.count(Outcome.DUPLICATE)
            else:
                new.discard(key)  # the same key twice in one batch: the second is a duplicate
                self.stats.count(self._timed(lambda r=ready: run(r, recorded=True)))  # type: ignore[misc]
        if taken < len(deliveries):
            inbox.forget(alias, [key for key in keys[taken:] if key is not None and key in new])
        return taken

    def _timed(self, handle: Callable[[], Outcome]) -> Outcome:
        """Run ``handle`` under the time limit and feed its duration into the batch sizing."""
        started = time.monotonic()
        with _TimeLimit(self.time_limit):
            outcome = handle()
        self._seconds_per_message += (time.monotonic() - started - self._seconds_per_message) * 0.2
        return outcome

    def claim_limit(self) -> int:
        """How many database-channel rows to claim per transaction (see :meth:`batch_limit`)."""
        return self.batch_limit(self.claim_size)

    def batch_limit(self, maximum: int) -> int:
        """Messages per transaction: about BATCH_SECONDS of work, ``maximum`` at most, one while failing.

        A batch holds its messages (locked rows, unacknowledged deliveries) until it commits, so slow
        handlers take one message at a time and never keep work from an idle consumer.
        """
        if self.failing:
            return 1
        return max(1, min(maximum, int(BATCH_SECONDS / max(self._seconds_per_message, 1e-6))))

    @property
    def failing(self) -> bool:
        """Many consecutive failures: take one message at a time, with a pause, until one succeeds."""
        return self.stats.consecutive_failures >= self.slow_after_failures

    def _slow_down(self) -> None:
        if self.failing:
            self._stop.wait(min(self.poll_interval * 2, 5.0))

    # -- database channels -----------------------------------------------------

    def consume_database_batch(self, alias: str) -> int:
        """Claim up to CLAIM_SIZE due rows in ``alias`` and handle them in one transaction.

        Each message runs in its own savepoint (its effects, inbox row and retry or
        dead letter); the rows handled are deleted and everything commits at once.
        A crash rolls the whole batch back and it is delivered again — the inbox
        makes that safe. Rows claimed but not reached (a stop request) stay queued.
        """
        with transaction.atomic(using=alias):
            rows = self._claim(alias, self.claim_limit())
            # The messages' savepoints (kept, see _HandlerSavepoint) nest in this one; releasing it releases them
            # all, so that the DELETE below runs in the top transaction. Rows deleted inside a savepoint left
            # index entries that later scans on PostgreSQL did not mark dead, so every claim waded through
            # all rows deleted since the last VACUUM (5 ms per claim after 30,000; BENCHMARKS.md).
            with transaction.atomic(using=alias):
                deliveries = [(body, handler, channel, attempts, None) for _, body, handler, channel, attempts in rows]
                taken = self.handle_many(alias, deliveries, fallback_alias=alias)
            done = [row[0] for row in rows[:taken]]
            delete_rows(alias, done)
        return len(done)

    def _claim(self, alias: str, limit: int) -> list[tuple[Any, ...]]:
        """Lock up to ``limit`` due rows (by available_at, id) of one channel, skipping rows others hold.

        With several database channels they take turns, batch by batch, starting after the channel served
        last in this database: a channel with a large backlog cannot hold back the others (a consumer
        consumes its targets fairly). Each claim is a range scan of the ``(channel, available_at, id)``
        index that stops after ``limit`` rows. Rows are ``(id, body, handler, channel, attempts)``: plain
        SQL and tuples, as building the ORM query and converting timestamps was a third of a worker's time
        per batch.
        """
        connection = connections[alias]
        sql = _claim_sql(connection, tenants=len(self.tenants))
        moment = connection.ops.adapt_datetimefield_value(now())
        count = len(self.database_channels)
        first = self._next_channel.get(alias, 0)
        with connection.cursor() as cursor:
            for offset in range(count):
                turn = (first + offset) % count
                cursor.execute(sql, [self.database_channels[turn], moment, *self.tenants, limit])
                rows = cursor.fetchall()
                if rows:
                    self._next_channel[alias] = (turn + 1) % count
                    return rows
        return []

    def consume_database_once(self, alias: str) -> bool:
        """Handle one batch from ``alias``; ``False`` when nothing was due there."""
        return self.consume_database_batch(alias) > 0

    def _poll_databases(self) -> bool:
        """One round over every database, starting after the one served first last time (round robin)."""
        if not self.database_channels:
            return False
        with self._alias_lock:
            start = self._next_alias
            self._next_alias = (start + 1) % len(self.aliases)
        found = False
        for offset in range(len(self.aliases)):
            if self.should_stop():
                break
            alias = self.aliases[(start + offset) % len(self.aliases)]
            try:
                found = self.consume_database_once(alias) or found
            except DatabaseError as exc:
                logger.warning("polling %r failed (%s); retrying", alias, describe(exc))
                close_old_connections()
                self._stop.wait(self.poll_interval)
            self._slow_down()
        return found

    # -- loops -----------------------------------------------------------------

    def _database_loop(self) -> None:
        try:
            while not self.should_stop():
                if self._poll_databases():
                    continue
                if self.stop_when_empty and not self.broker_channels:
                    self._stop.set()
                    break
                self._stop.wait(self.poll_interval)
        finally:
            connections.close_all()

    def _relay_loop(self) -> None:
        assert self.relay is not None
        interval = get_config().worker.relay_interval
        try:
            while not self._stop.is_set():
                try:
                    self.stats.relayed += self.relay.run_once()
                except Exception as exc:
                    logger.warning("relay sweep failed: %s", describe(exc))
                self._stop.wait(interval)
        finally:
            connections.close_all()

    def _progress_loop(self) -> None:
        assert self.progress is not None
        while not self._stop.wait(5.0):
            self.progress(self.stats.line())

    def _wait_for_stop(self) -> None:
        self._stop.wait()

    def run(self) -> Stats:
        threads: list[threading.Thread] = []
        if self.relay is not None and self.relay.channel_names:
            threads.append(threading.Thread(target=self._relay_loop, name="ecotone-relay", daemon=True))
        if self.progress is not None:
            threads.append(threading.Thread(target=self._progress_loop, name="ecotone-progress", daemon=True))
        workers: list[Callable[[], None]] = []
        for broker in self.broker_channels:
            workers.extend([lambda b=broker: b.consume(self)] * self.concurrency)  # type: ignore[misc]
        if self.database_channels:
            workers.extend([self._database_loop] * self.concurrency)
        if not workers:
            workers.append(self._wait_for_stop)  # relay only
        for thread in threads:
            thread.start()
        main, *others = workers
        errors: list[BaseException] = []
        extra = [
            threading.Thread(target=self._fatal_to(errors, w), name=f"ecotone-worker-{i}", daemon=True)
            for i, w in enumerate(others)
        ]
        for thread in extra:
            thread.start()
        try:
            main()
        finally:
            self._stop.set()
            for thread in extra + threads:
                thread.join(timeout=60)
            for broker in self.broker_channels:
                broker.close()
        if errors:
            raise errors[0]
        return self.stats

    def _fatal_to(self, errors: list[BaseException], loop: Callable[[], None]) -> Callable[[], None]:
        """Run a consumer loop in a thread; an error that escapes it stops the worker and re-raises in run()."""

        def run_loop() -> None:
            try:
                loop()
            except BaseException as exc:
                errors.append(exc)
                self.stop()

        return run_loop
