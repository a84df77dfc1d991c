"""The transactional outbox and its relay.

:func:`enqueue` writes one row in the tenant's database, inside the caller's
transaction: a rollback leaves no message. For broker channels the sending
process publishes its committed rows right after commit (``on_commit`` hooked
with ``using=`` the tenant's alias, not only ``default``); whatever that misses
— a crash between commit and publish, a broker outage, a delay not yet due —
the :class:`Relay` sweeps later.

A send outside any transaction (autocommit) has no business rows to be atomic
with: it publishes at once, and only if the broker does not confirm does it
commit a row for the relay. Either way ``send()`` returns once the message is
durable, in the broker or in the database.

No publish here waits for a broker without a limit: a broker channel's publish
has a deadline (``publish_timeout``, 2 s by default) and a circuit breaker that,
after a failure, fails the next publishes at once for a cool-down. A send, the
after-commit hook and the relay all go through it, so while the broker is known
bad a send costs one INSERT, and the relay probes the broker as the cool-down
ends (see :mod:`ecotone_django.channels.breaker`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import close_old_connections, connections, transaction

from . import transactions
from .channels import channels
from .clock import now
from .conf import get_config
from .exceptions import BrokerUnavailableError
from .handlers import Handler
from .messages import Envelope
from .models import OutboxMessage
from .signals import batch_published
from .storage import outbox as table
from .tenancy import alias_for, tenant_of

logger = logging.getLogger("ecotone_django.outbox")

MAX_RELAY_BACKOFF = 5.0  # seconds between relay attempts on a database or broker that keeps failing
#: Seconds the relay waits after its channel's circuit breaker said no, beyond the breaker's cool-down.
BREAKER_SLACK = 0.05

#: How long the relay leaves a row alone that its sender publishes right after commit (the fast path).
#: The sender does not lock the row, so the lease is what keeps the relay from publishing it a second
#: time meanwhile; a sender that dies or meets a broker outage leaves the row to the relay after it.
PUBLISH_LEASE = timedelta(seconds=5)

#: A thread notifies idle consumers of a database channel (PostgreSQL NOTIFY, in the sending transaction)
#: at most this often per database and channel. A NOTIFY makes its transaction's commit take a lock that
#: serialises the commits of every notifying transaction, so within a tight stream of sends most of them
#: leave it out: their consumer is busy then and polls again anyway. A send left out whose consumer went
#: idle meanwhile waits for the next notification or the poll, so the window is short: requests a few
#: milliseconds apart each notify (with 10 ms, requests on a 10 ms schedule that came just under it left
#: it out, and p99 from commit to handler start was 11.8 ms instead of 1.4 ms). Polling remains the safety net.
NOTIFY_INTERVAL = 0.002

_local = threading.local()


def _ready_rows(alias: str) -> list[tuple[OutboxMessage, bool]]:
    """This thread's committed rows waiting to be published as one batch: (row, may have been rolled back)."""
    if not hasattr(_local, "ready"):
        _local.ready = defaultdict(list)
    rows: list[tuple[OutboxMessage, bool]] = _local.ready[alias]
    return rows


def _written_rows(alias: str) -> list[OutboxMessage]:
    """Rows this thread wrote on ``alias`` in transactions whose commit it cannot follow (the public API)."""
    if not hasattr(_local, "written"):
        _local.written = defaultdict(list)
    rows: list[OutboxMessage] = _local.written[alias]
    return rows


def enqueue(
    envelope: Envelope,
    handler: Handler,
    channel_name: str,
    available_at: datetime | None,
    *,
    attempts: int = 0,
    last_error: str = "",
) -> OutboxMessage:
    """Store ``envelope`` for ``handler`` on the concrete channel ``channel_name`` resolves to.

    In a transaction that is a row in the tenant's outbox (on a broker channel published after commit).
    Outside one, a message due now on a broker channel is published at once and gets a row only if the
    broker does not take it (see :func:`_publish_or_store`).
    """
    concrete = channels[channel_name].resolve(envelope)
    tenant = tenant_of(envelope)
    alias = alias_for(tenant)
    moment = now()
    fast = channels[concrete].is_broker and (available_at is None or available_at <= moment)
    row = OutboxMessage(
        message_id=envelope.id,
        channel=concrete,
        handler=handler.id,
        message_type=envelope.type,
        tenant=tenant or "",
        body=envelope.encode(),
        available_at=available_at or moment,
        attempts=attempts,
        created_at=moment,
        last_error=last_error[:2000],
    )
    if fast and connections[alias].get_autocommit():
        _publish_or_store(alias, row)
        return row
    if fast:
        row.available_at = moment + PUBLISH_LEASE
    wake = not channels[concrete].is_broker and row.available_at <= moment and _notify_due(alias, concrete)
    table.insert(alias, row, notify=wake)
    if fast:  # on commit; a manual transaction (autocommit off, no atomic) gets on_commit's own error
        hook = _PublishAfterCommit(alias, row)
        hook.hooks = transactions.on_commit(alias, hook)
        if hook.hooks is None:
            _remember_written(alias, row)
    return row


def _notify_due(alias: str, channel: str) -> bool:
    """Whether this thread's send to database channel ``channel`` wakes its consumers (see NOTIFY_INTERVAL)."""
    if not hasattr(_local, "notified"):
        _local.notified = {}
    last: dict[tuple[str, str], float] = _local.notified
    moment = time.monotonic()
    if moment - last.get((alias, channel), -NOTIFY_INTERVAL) < NOTIFY_INTERVAL:
        return False
    last[alias, channel] = moment
    return True


def _remember_written(alias: str, row: OutboxMessage) -> None:
    """Keep ``row`` for the after-commit lookup; rows past their lease are the relay's, and forgotten."""
    written = _written_rows(alias)
    moment = now()
    while written and written[0].available_at <= moment:
        written.pop(0)
    written.append(row)


def _publish_or_store(alias: str, row: OutboxMessage) -> None:
    """Outside a transaction: publish ``row`` now; if the broker does not take it, commit it for the relay.

    There are no business rows to commit the message with, so the outbox row would only stand in for the
    broker until it confirmed: a round trip to the database to write it and another to delete it, on
    every send. Here ``send()`` returns once the broker has confirmed the message or, failing that, once
    the row is committed (due at once; the relay publishes it when the broker is back). A publish that
    failed after the broker did take the message (no confirm in time) is published again by the relay,
    and the inbox drops that copy. If the row cannot be written either, the error propagates: the send
    must not look successful.
    """
    try:
        _publish(alias, row.channel, [row])
    except Exception as exc:
        relay_health.failed(alias, exc)
        table.insert(alias, row)
    else:
        relay_health.succeeded(alias)


class _PublishAfterCommit:
    """The ``on_commit`` hook of one outbox row: publishes it after the commit, with the others of the batch.

    Where the connection's list of hooks can be read (:mod:`ecotone_django.transactions`), a hook that is
    no longer in that list knows that nothing was rolled back since its row was written, and which hooks
    of this commit run after it: it leaves the batch to the last of them. A hook still in its list saw a
    savepoint rollback after its row was written: that row is looked up in the database before it is
    published. Where the list cannot be read, the first hook of the commit to run looks up every row this
    thread wrote and publishes those that are there. (A rollback sent as raw SQL, past Django, is seen by
    neither Django's hooks nor this one.)
    """

    __slots__ = ("alias", "hooks", "row")

    def __init__(self, alias: str, row: OutboxMessage) -> None:
        self.alias = alias
        self.row = row
        self.hooks: transactions.HookList | None = None  # None: cannot tell, look the rows up

    def __call__(self) -> None:
        if self.hooks is None:
            written = _written_rows(self.alias)
            batch = [(row, True) for row in written]
            written.clear()
        else:
            ready = _ready_rows(self.alias)
            consumed = not transactions.still_pending(self.hooks, self)
            ready.append((self.row, not consumed))
            if consumed and any(
                isinstance(hook, _PublishAfterCommit) and hook.alias == self.alias
                for hook in transactions.pending_after(self.hooks)
            ):
                return  # a hook of this commit that runs later publishes the batch
            batch = list(ready)
            ready.clear()
        doubtful = [row.pk for row, check in batch if check]
        if doubtful:
            try:
                there = set(
                    OutboxMessage.objects.using(self.alias)
                    .filter(pk__in=doubtful)
                    .values_list("pk", "message_id", "handler")
                )
            except Exception as exc:  # the relay will publish them after the lease
                relay_health.failed(self.alias, exc)
                return
            # By id and content: SQLite gives the id of a rolled-back row to the next row inserted.
            batch = [
                (row, check) for row, check in batch if not check or (row.pk, row.message_id, row.handler) in there
            ]
        _publish_committed(self.alias, [row for row, _ in batch])


def _publish(alias: str, channel: str, rows: list[OutboxMessage]) -> None:
    """Publish ``rows`` on broker channel ``channel`` in one call (:data:`~ecotone_django.signals.batch_published`)."""
    if not batch_published.receivers:
        channels[channel].publish(rows)  # type: ignore[attr-defined]
        return
    started, error = time.time_ns(), None
    try:
        channels[channel].publish(rows)  # type: ignore[attr-defined]
    except BaseException as exc:
        error = exc
        raise
    finally:
        batch_published.send(
            sender=channel, alias=alias, bodies=[row.body for row in rows], started_ns=started, error=error
        )


def _publish_committed(alias: str, rows: list[OutboxMessage]) -> None:
    """Publish committed rows without locking them (the lease keeps the relay off), then delete them.

    A failed publish leaves the rows to the relay.
    """
    if not rows:
        return
    pks = [r.pk for r in rows]
    try:
        by_channel: dict[str, list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            by_channel[row.channel].append(row)
        for name, group in by_channel.items():
            _publish(alias, name, group)
    except Exception as exc:  # the relay retries; the sender's request must not fail after its commit
        relay_health.failed(alias, exc)
        return
    relay_health.succeeded(alias)
    try:
        table.delete_rows(alias, pks)
    except Exception as exc:  # published: the relay will publish it once more after the lease; the inbox dedups
        relay_health.failed(alias, exc)


def publish_due(alias: str, channel: str, moment: datetime, limit: int) -> int:
    """Lock up to ``limit`` rows of ``channel`` due at ``moment`` (skipping rows another publisher holds),
    publish them, delete them; a failed publish rolls back and leaves them for the next try."""
    own = not connections[alias].in_atomic_block  # a transaction of its own, not the caller's
    with transaction.atomic(using=alias):
        rows, deleted = table.take_due(alias, channel, moment, limit, flush=not own)
        if not rows:
            return 0
        _publish(alias, channel, rows)
        if not deleted:
            table.delete_rows(alias, [r.pk for r in rows])
    return len(rows)


class RelayHealth:
    """Logs a broker outage once when it starts and once when it ends, not once per message."""

    def __init__(self) -> None:
        self._down: dict[str, float] = {}
        self._lock = threading.Lock()

    def failed(self, alias: str, exc: BaseException) -> None:
        with self._lock:
            if alias not in self._down:
                self._down[alias] = time.monotonic()
                logger.warning(
                    "publishing from %r failed (%s: %s); the relay will retry", alias, type(exc).__name__, exc
                )

    def succeeded(self, alias: str) -> None:
        with self._lock:
            started = self._down.pop(alias, None)
        if started is not None:
            logger.warning("publishing from %r works again after %.1f s", alias, time.monotonic() - started)


relay_health = RelayHealth()


class Relay:
    """Publishes due broker-channel rows of every tenant database, in batches, with backoff on failure."""

    def __init__(
        self,
        aliases: Sequence[str] | None = None,
        channel_names: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        config = get_config()
        self.aliases = list(aliases or config.database_aliases)
        broker = [c.name for c in channels.all() if c.is_broker]
        self.channel_names = [c for c in (channel_names or broker) if c in broker]
        self.batch_size = batch_size or config.worker.batch_size
        self._backoff: dict[str, float] = {}
        self._next_try: dict[str, float] = {}

    def run_once(self) -> int:
        """One sweep over every database; returns how many messages it published."""
        if not self.channel_names:
            return 0
        published = 0
        for alias in self.aliases:
            if time.monotonic() < self._next_try.get(alias, 0.0):
                continue
            sent = 0
            try:
                # A batch per channel in turn: "channel = X ORDER BY available_at" is a range scan of the
                # (channel, available_at, id) index, where "channel IN (…)" sorts every due row for each
                # batch. Each queue still gets its messages in order; channels alternate batch by batch.
                pending = list(self.channel_names)
                while pending:
                    for channel in list(pending):
                        count = publish_due(alias, channel, now(), self.batch_size)
                        sent += count
                        published += count
                        if count < self.batch_size:
                            pending.remove(channel)
            except BrokerUnavailableError as exc:
                # A channel's circuit breaker is open: try again as its cool-down ends (the probe), not later.
                relay_health.failed(alias, exc)
                self._next_try[alias] = time.monotonic() + min(exc.retry_after, MAX_RELAY_BACKOFF) + BREAKER_SLACK
            except Exception as exc:
                relay_health.failed(alias, exc)
                delay = min(self._backoff.get(alias, 0.5) * 2, MAX_RELAY_BACKOFF)
                self._backoff[alias] = delay
                self._next_try[alias] = time.monotonic() + delay
                close_old_connections()
            else:
                if sent:  # a sweep that published nothing did not reach the broker: no news about it
                    relay_health.succeeded(alias)
                self._backoff.pop(alias, None)
                self._next_try.pop(alias, None)
        return published


def relay_pending(aliases: Sequence[str], channel: str) -> bool:
    """Rows of broker channel ``channel`` the relay still has to publish (due, or leased to their sender)."""
    moment = now() + PUBLISH_LEASE
    return any(table.due(alias, channel, moment).exists() for alias in aliases)
