"""The worker: pulls deliveries from channels and has them handled, in batches.

A :class:`Worker` runs one consumer thread per channel kind and ``--concurrency`` (plus a relay thread
and a progress thread). It owns what a consumer loop decides: how many messages go in one transaction
(:meth:`Worker.batch_limit`), when to stop, what is counted, and how each delivery is settled. The
channels only hand out deliveries and settle them as told (:mod:`ecotone_django.channels`);
:mod:`ecotone_django.processing` handles each one.

Stopping: :meth:`Worker.stop` (SIGTERM/SIGINT, ``--limit``, a fatal error) finishes the message in hand
and ends the run; ``--stop-when-empty`` ends it between batches, once nothing due is left
(:mod:`ecotone_django.drain` says precisely when).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connections, transaction

from . import transactions
from .backoff import Backoff
from .channels import BrokerChannel, BrokerConsumer, Delivery, channels
from .channels.database import DatabaseConsumer
from .channels.wakeup import Wakeup
from .conf import get_config
from .drain import Drain, waiting
from .exceptions import BrokerConnectionError, ConfigurationError
from .outbox import Relay, relay_pending
from .parking import park
from .processing import Outcome, Prepared, database_of, prepare, process, reject, run
from .retry import describe
from .stats import Stats, TimeLimit
from .storage import inbox
from .tenancy import alias_for

__all__ = ["BATCH_SECONDS", "Worker"]

logger = logging.getLogger("ecotone_django.worker")

#: Work per transaction: a batch holds about this many seconds of handling (see Worker.batch_limit).
BATCH_SECONDS = 0.1
MAX_RECONNECT_BACKOFF = 5.0


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
        self.broker_channels = [ch for ch in map(channels.__getitem__, concrete) if isinstance(ch, BrokerChannel)]
        self.tenants = list(tenants or [])
        self.database = DatabaseConsumer([c for c in concrete if not channels[c].is_broker], self.tenants)
        self.wakeup = Wakeup(self.database.channel_names, quiet=min(BATCH_SECONDS, config.worker.poll_interval))
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
        self._stop = threading.Event()  # finish the message in hand, then exit
        self.stop_reason = ""
        consumers = self.concurrency * (len(self.broker_channels) + bool(self.database.channel_names))
        self.drain = Drain(consumers)  # --stop-when-empty: exit between batches once nothing due is left
        self._next_alias = 0
        self._alias_lock = threading.Lock()
        self.unreachable = Backoff()  # a database that is down waits for its next try; the others go on
        self.poll_interval = config.worker.poll_interval
        self.claim_size = config.worker.claim_size
        self.slow_after_failures = config.worker.slow_after_failures
        self._seconds_per_message = 0.0  # moving average of handling time, sizes the next batch

    # -- control ---------------------------------------------------------------

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the message in hand, then return from :meth:`run`."""
        self.stop_reason = self.stop_reason or reason
        self._stop.set()
        self.wakeup.interrupt()

    def should_stop(self) -> bool:
        """Whether to stop before the next message (a stop request, or ``limit`` reached)."""
        if self.limit is not None and self.stats.total >= self.limit:
            self.stop("limit reached")
        return self._stop.is_set()

    def _running(self) -> bool:
        """Whether a consumer loop starts another batch."""
        return not self.should_stop() and not self.drain.empty.is_set()

    def _looked(self, found_work: bool, pending: Callable[[], bool]) -> None:
        """Tell the drain what this consumer thread's last look found (``--stop-when-empty`` only)."""
        if self.stop_when_empty:
            self.drain.looked(found_work, pending)

    def waiting(self) -> tuple[int, int]:
        """Messages left on this worker's channels, over every database it serves: (due, delayed)."""
        return waiting(self.aliases, self.database.channel_names, self.broker_channels, self.tenants)

    def install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            logger.warning("received %s: finishing the message in hand, then exiting", signal.Signals(signum).name)
            self.stop(f"received {signal.Signals(signum).name}")

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    # -- handling ----------------------------------------------------------------

    def handle_delivery(self, delivery: Delivery, fallback_alias: str) -> Outcome:
        outcome = self._timed(lambda: process(delivery, fallback_alias=fallback_alias))
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
            for delivery in deliveries:
                if taken and self.should_stop():
                    break
                self.handle_delivery(delivery, fallback_alias)
                taken += 1
            return taken
        prepared: list[Prepared | Outcome] = []
        for delivery in deliveries:
            ready = prepare(delivery, fallback_alias=fallback_alias)
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
        with TimeLimit(self.time_limit):
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

        Each message runs in its own savepoint (its effects, inbox row and retry or dead letter); the
        rows handled are deleted and everything commits at once. A crash rolls the whole batch back and
        it is delivered again — the inbox makes that safe. Rows claimed but not reached (a stop request)
        stay queued.
        """
        with transaction.atomic(using=alias):
            deliveries = self.database.receive(alias, self.claim_limit())
            if not deliveries:
                return 0
            with transactions.batch_block(alias):  # the DELETE below runs in the top transaction
                taken = self.handle_many(alias, deliveries, fallback_alias=alias)
            self.database.ack(alias, deliveries[:taken])
        return taken

    def consume_database_once(self, alias: str) -> bool:
        """Handle one batch from ``alias``; ``False`` when nothing was due there."""
        return self.consume_database_batch(alias) > 0

    def _poll_databases(self) -> bool:
        """One round over every database, starting after the one served first last time (round robin)."""
        with self._alias_lock:
            start = self._next_alias
            self._next_alias = (start + 1) % len(self.aliases)
        found = False
        for alias in [a for a in self.aliases[start:] + self.aliases[:start] if self.unreachable.due(a)]:
            if self.should_stop():
                break
            if not self.wakeup.worth_a_look(alias):
                continue
            try:
                found = self.wakeup.looked(alias, self.consume_database_once(alias)) or found
                self.unreachable.succeeded(alias)
            except DatabaseError as exc:
                retry = self.unreachable.failed(alias)
                logger.warning("polling %r failed (%s); retrying in %.1f s", alias, describe(exc), retry)
                close_old_connections()
            self._slow_down()
        return found

    def _database_loop(self) -> None:
        try:
            self.wakeup.start(self.aliases)
            while self._running():
                mark = self.wakeup.mark()  # a notification from now on ends the wait below at once
                found = self._poll_databases()
                self._looked(found, lambda: self.database.pending(self.aliases))
                if not found and self._running():
                    self.wakeup.wait(mark, self.poll_interval)
        finally:
            connections.close_all()

    # -- broker channels -------------------------------------------------------

    def _broker_loop(self, channel: BrokerChannel) -> None:
        """Consume ``channel`` until the run ends, reconnecting with backoff after broker outages."""
        consumer = channel.consume(time_limit=self.time_limit, consumers=self.concurrency)
        reconnect, lost = Backoff(maximum=MAX_RECONNECT_BACKOFF), False
        try:
            while self._running():
                try:
                    deliveries = consumer.receive(self.batch_limit(consumer.window), timeout=self.poll_interval)
                    if lost:
                        logger.warning("consuming %r again", channel.name)
                        reconnect.succeeded(channel.name)
                        lost = False
                    if not deliveries:
                        self._looked(False, lambda: consumer.pending() or relay_pending(self.aliases, channel.name))
                        continue
                    self._looked(True, lambda: True)
                    self._handle_received(consumer, deliveries, self.batch_limit(consumer.window))
                    consumer.resize(self.batch_limit(consumer.max_window))
                except BrokerConnectionError as exc:
                    delay, lost = reconnect.failed(channel.name), True
                    logger.warning("%s; reconnecting in %.1f s", exc, delay)
                    close_old_connections()
                    self._stop.wait(delay)
        except ConfigurationError:
            self.stop("configuration error")  # a transport refused this consumer: the run cannot go on
            raise
        finally:
            consumer.close()
            close_old_connections()

    def _handle_received(self, consumer: BrokerConsumer, deliveries: Sequence[Delivery], limit: int) -> None:
        """Handle what a consumer received: per tenant database, up to ``limit`` in one transaction.

        Each message keeps its own savepoint (its effects, inbox row, retry or dead letter), so one
        failure undoes only its own work; the acks go out after the commit. If the transaction itself
        fails, it is rolled back and they go one by one; the messages of a database that is down are parked
        (:mod:`.parking`). Messages not reached before a stop request are requeued.
        """
        fallback = alias_for(None)
        groups: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            if delivery.error is not None:
                self._settle_one(consumer, delivery)  # dead letter, ack
                continue
            groups.setdefault(database_of(delivery, fallback), []).append(delivery)
        if down := [d for alias in list(groups) if not self.unreachable.due(alias) for d in groups.pop(alias)]:
            park(consumer, down)  # their database is down: behind the other tenants' messages, a pause if alone
            self._stop.wait(0 if groups else self.poll_interval)
        for alias, group in groups.items():
            for start in range(0, len(group), limit):
                chunk = group[start : start + limit]
                if self.should_stop():
                    consumer.requeue(chunk)
                    continue
                self._handle_in_one_transaction(consumer, alias, chunk, fallback)

    def _handle_in_one_transaction(
        self, consumer: BrokerConsumer, alias: str, deliveries: Sequence[Delivery], fallback: str
    ) -> None:
        if len(deliveries) == 1:
            self._settle_one(consumer, deliveries[0])
            return
        counts = self.stats.snapshot()
        try:
            with transaction.atomic(using=alias):
                taken = self.handle_many(alias, deliveries, fallback)
        except Exception as exc:
            logger.warning(
                "%s: a batch of %d failed (%s); handling them one by one", deliveries[0].channel, len(deliveries), exc
            )
            self.stats.restore(counts)
            close_old_connections()
            for i, delivery in enumerate(deliveries):
                if not self.unreachable.due(alias):  # the database went away: park the rest
                    return park(consumer, deliveries[i:])
                self._settle_one(consumer, delivery)
            return
        consumer.ack(deliveries[:taken])
        consumer.requeue(deliveries[taken:])

    def _settle_one(self, consumer: BrokerConsumer, delivery: Delivery) -> None:
        """Handle one delivery in its own transaction; ack once its outcome (handled, retry, dead letter) committed."""
        try:
            if delivery.error is not None:
                reject(delivery, str(delivery.error), delivery.error)
                self.stats.count_rejected()
            else:
                self.handle_delivery(delivery, fallback_alias=alias_for(None))
        except (OperationalError, InterfaceError) as exc:
            self.unreachable.failed(database_of(delivery, alias_for(None)))  # its next messages are parked
            self._requeue(consumer, delivery, f"database unavailable ({exc}); message requeued")
            return
        except Exception as exc:  # a bug must neither lose the message nor stop the worker
            logger.exception("handling a message from %r failed unexpectedly", delivery.channel)
            try:
                reject(delivery, f"internal error: {type(exc).__name__}: {exc}", exc)
                self.stats.count_rejected()
            except Exception as again:
                self._requeue(consumer, delivery, f"dead-lettering failed too ({again}); message requeued")
                return
        consumer.ack([delivery])

    def _requeue(self, consumer: BrokerConsumer, delivery: Delivery, why: str) -> None:
        logger.warning("%s: %s", delivery.channel, why)
        close_old_connections()
        consumer.requeue([delivery])
        self._stop.wait(self.poll_interval)

    # -- the run -----------------------------------------------------------------

    def _relay_loop(self) -> None:
        assert self.relay is not None
        interval = get_config().worker.relay_interval
        try:
            while not self._stop.is_set() and not self.drain.empty.is_set():
                try:
                    self.stats.relayed += self.relay.run_once()
                except Exception as exc:
                    logger.warning("relay sweep failed: %s", describe(exc))
                self._stop.wait(interval)
        finally:
            connections.close_all()

    def _progress_loop(self) -> None:
        assert self.progress is not None
        while not self._stop.wait(5.0) and not self.drain.empty.is_set():
            self.progress(self.stats.line())

    def run(self) -> Stats:
        threads: list[threading.Thread] = []
        if self.relay is not None and self.relay.channel_names:
            threads.append(threading.Thread(target=self._relay_loop, name="ecotone-relay", daemon=True))
        if self.progress is not None:
            threads.append(threading.Thread(target=self._progress_loop, name="ecotone-progress", daemon=True))
        loops: list[Callable[[], object]] = []
        for broker in self.broker_channels:
            loops.extend([lambda b=broker: self._broker_loop(b)] * self.concurrency)  # type: ignore[misc]
        if self.database.channel_names:
            loops.extend([self._database_loop] * self.concurrency)
        if not loops:
            loops.append(self._stop.wait)  # relay only
        for thread in threads:
            thread.start()
        main, *others = loops
        errors: list[BaseException] = []
        extra = [
            threading.Thread(target=self._fatal_to(errors, loop), name=f"ecotone-worker-{i}", daemon=True)
            for i, loop in enumerate(others)
        ]
        for thread in extra:
            thread.start()
        try:
            main()
        finally:
            if self.drain.empty.is_set():
                self.stop("queue empty")
            self._stop.set()
            self.wakeup.close()
            for thread in extra + threads:
                thread.join(timeout=60)
            for broker in self.broker_channels:
                broker.close()
        if errors:
            raise errors[0]
        return self.stats

    def _fatal_to(self, errors: list[BaseException], loop: Callable[[], object]) -> Callable[[], None]:
        """Run a consumer loop in a thread; an error that escapes it stops the worker and re-raises in run()."""

        def run_loop() -> None:
            try:
                loop()
            except BaseException as exc:
                errors.append(exc)
                self.stop(f"{type(exc).__name__}: {exc}")

        return run_loop
