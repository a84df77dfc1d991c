"""``CeleryChannel``: messages travel as JSON Celery tasks on a broker queue.

A message is published after commit (or by the relay; a send outside any
transaction publishes at once, see ``outbox``) as a protocol-2 Celery task
named ``ecotone_django.handle`` with JSON arguments
``[envelope, handler_id, channel, attempts]``, sent straight to the channel's
queue. So ``celery -A proj worker -Q <queue>`` can run it (see
``ecotone_django.tasks``) as well as ``manage.py consume_channel``, whose
consumer is built on kombu directly: ack only after the handler's transaction
committed, requeue when the database is unreachable, dead letter for anything
that is not our task (never unpickled: only JSON is read). On RabbitMQ it holds
up to 32 deliveries and handles those that have arrived in one transaction per
tenant database, a savepoint per message and one ack after the commit; the
window follows the handling time (about 0.1 s of work), so slow handlers take
one message at a time.

Publishing returns only once the broker has every message of the batch. On
RabbitMQ that means publisher confirms, collected for the whole batch (one
round trip per batch, not per message) and ``mandatory`` routing, so a queue
deleted behind our back is an error, not a silent drop; on Redis the batch
goes out as one pipeline; on SQS each message is one synchronous
``SendMessage``; on Kafka every record gets a delivery report, awaited once
per batch (:mod:`ecotone_django.channels.kafka`). A failed publish raises, the
outbox rows stay, and the relay tries again. A connection kept from an earlier
publish that has gone stale (broker restart) is replaced once, at once.

The transport is the scheme of the Celery app's ``broker_url``: ``amqp://``,
``redis://``, ``sqs://`` or ``confluentkafka://``. Per transport,
:mod:`ecotone_django.channels.transports` supplies defaults for
``broker_transport_options`` and the checks a consumer runs before its first
message (SQS: long polling, visibility timeout above ``--time-limit``; Kafka:
no more consumer threads than partitions). A check that fails stops the worker
with a :class:`~ecotone_django.exceptions.ConfigurationError`.

Delays never use broker ETAs: they wait in the database (``available_at``).

OPTIONS: ``queue`` (default: the channel name), ``app`` (dotted path of the
Celery app; default ``ECOTONE["CELERY_APP"]``), ``prefetch_count`` (default 32
on RabbitMQ, 1 on the other transports).
The broker URL and ``broker_transport_options`` come from the Celery app.
On Redis, a message a crashed consumer held comes back only after the
transport's ``visibility_timeout`` (kombu's default: one hour); on SQS after the
queue's visibility timeout (kombu creates queues with 30 minutes); on Kafka once
the group has noticed the consumer is gone (``session.timeout.ms``).
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import InterfaceError, OperationalError, close_old_connections, transaction
from django.utils.module_loading import import_string
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.message import Message

from ..conf import get_config
from ..exceptions import ConfigurationError, DecodeError, PublishNotConfirmedError
from ..messages import Envelope
from .base import BrokerChannel
from .transports import TransportProfile, profile_for

if TYPE_CHECKING:
    from ..models import OutboxMessage
    from ..worker import Worker

logger = logging.getLogger("ecotone_django.channels.celery")

TASK_NAME = "ecotone_django.handle"
JSON = "application/json"
#: Seconds to wait for the broker to confirm a published batch.
CONFIRM_TIMEOUT = 10.0
#: Seconds to wait for a TCP connection to the broker.
CONNECT_TIMEOUT = 5.0


class TaskArguments(NamedTuple):
    envelope: str
    handler_id: str
    channel: str
    attempts: int


def protocol2_message(
    task: str, task_id: str, args: Sequence[Any], argsrepr: str, origin: str = "ecotone_django"
) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for ``task(*args)``, as a Celery worker reads them.

    ``apply_async`` also sends every optional header with its default (``eta``, ``expires``, ``group``,
    ``timelimit``, ``retries`` …, mostly ``None``); a worker reads those with defaults, so they are left
    out. Each costs encoding into the AMQP header table on publish and decoding on every consume, in
    pure Python (py-amqp): with 16 headers that was about a tenth of a publish.
    """
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "argsrepr": argsrepr,
        "origin": origin,
        "ignore_result": True,
    }
    body = json.dumps([list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return headers, body


def task_message(row: OutboxMessage) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for an outbox row."""
    return protocol2_message(
        TASK_NAME,
        f"{row.message_id}:{row.handler}"[:255],
        [row.body, row.handler, row.channel, row.attempts],
        f"({row.message_type!r}, {row.handler!r})",
    )


def parse_task(headers: Mapping[str, Any] | None, content_type: str | None, body: bytes | str) -> TaskArguments:
    """The arguments of an ``ecotone_django.handle`` task message, or DecodeError saying what is wrong.

    Only JSON is ever read: any other content type (pickle above all) is refused unread.
    """
    if content_type != JSON:
        raise DecodeError(f"content type {content_type!r} refused: only {JSON} is accepted (never unpickled)")
    task = (headers or {}).get("task")
    if task is None:
        raise DecodeError("not a Celery task message: no 'task' header")
    if task != TASK_NAME:
        raise DecodeError(f"unknown task {str(task)[:100]!r}: this queue carries only {TASK_NAME} tasks")
    try:
        decoded = json.loads(body)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"task body is not UTF-8 JSON: {exc}") from None
    except ValueError as exc:
        raise DecodeError(f"task body is not valid JSON: {exc}") from None
    if not (isinstance(decoded, list) and decoded and isinstance(decoded[0], list) and len(decoded[0]) == 4):
        raise DecodeError("malformed task body: expected [[envelope, handler, channel, attempts], {}, {...}]")
    envelope, handler_id, channel, attempts = decoded[0]
    if not (
        isinstance(envelope, str)
        and isinstance(handler_id, str)
        and isinstance(channel, str)
        and isinstance(attempts, int)
        and not isinstance(attempts, bool)
    ):
        raise DecodeError("task arguments must be [envelope: str, handler: str, channel: str, attempts: int]")
    return TaskArguments(envelope, handler_id, channel, attempts)


class _Publisher:
    """One thread's broker connection, with the queue declared and (on AMQP) publisher confirms on."""

    def __init__(self, channel: CeleryChannel) -> None:
        self.queue_name = channel.queue_name
        self.profile = channel.profile
        self.connection = channel.connection()
        try:
            self.connection.ensure_connection(max_retries=0)  # fail now; the relay is the retry loop
            self.channel = self.connection.channel()
            channel.queue(self.channel).declare()
            self.producer = Producer(self.channel, auto_declare=False)
            self.confirms = self.connection.transport.driver_type == "amqp"
            self.batches = not self.confirms and self.producer.supports_batch_publish
            # Kafka (ecotone_django.channels.kafka): delivery reports, awaited once per batch.
            self.deliveries = getattr(self.channel, "wait_for_deliveries", None)
            self._sequence = 0  # delivery tag of the last message published on this channel
            self._unconfirmed: set[int] = set()
            self._refused: list[str] = []
            if self.confirms:
                self.channel.confirm_select()
                self.channel.events["basic_ack"].add(self._on_ack)
                self.channel.events["basic_nack"].add(self._on_nack)
                self.channel.events["basic_return"].add(self._on_return)
        except BaseException:
            self.close()
            raise

    # py-amqp calls these while we drain the connection.
    def _settle(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {t for t in self._unconfirmed if t > tag}
        else:
            self._unconfirmed.discard(tag)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._refused.append(f"the broker refused (nack) delivery {tag}{' and earlier' if multiple else ''}")
        self._settle(tag, multiple)

    def _on_return(self, exc: BaseException, exchange: str, routing_key: str, message: Any) -> None:
        self._refused.append(f"unroutable to queue {routing_key!r}: {exc}")

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        self._refused.clear()
        if self.batches:
            with self.producer.batch(max_size=max(len(rows), 1)):
                self._send(rows)
        else:
            self._send(rows)
        if self.confirms:
            self._wait_for_confirms(len(rows))
        elif self.deliveries is not None:
            self.deliveries(CONFIRM_TIMEOUT)

    def _send(self, rows: Sequence[OutboxMessage]) -> None:
        for row in rows:
            headers, body = task_message(row)
            self.producer.publish(
                body,
                exchange="",  # the default exchange routes by queue name, on RabbitMQ and Redis alike
                routing_key=self.queue_name,
                headers=headers,
                content_type=JSON,
                content_encoding="utf-8",
                delivery_mode=2,
                correlation_id=headers["id"],
                mandatory=self.confirms,
                retry=False,
                **self.profile.message_properties(row),
            )
            if self.confirms:
                self._sequence += 1
                self._unconfirmed.add(self._sequence)

    def _wait_for_confirms(self, count: int) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishNotConfirmedError(
                    f"{len(self._unconfirmed)} of {count} message(s) not confirmed within {CONFIRM_TIMEOUT:g} s"
                )
            self.connection.drain_events(timeout=remaining)
        if self._refused:
            raise PublishNotConfirmedError("; ".join(self._refused[:3]))

    def close(self) -> None:
        try:
            self.connection.release()
        except Exception:  # already broken; nothing left to release
            logger.debug("closing a broken broker connection failed", exc_info=True)


class _Delivery(NamedTuple):
    message: Message
    task: TaskArguments
    envelope: Envelope | None


class CeleryChannel(BrokerChannel):
    options_allowed = frozenset({"queue", "app", "prefetch_count"})

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.queue_name = str(options.get("queue", name))
        self._prefetch_option = options.get("prefetch_count")
        if self._prefetch_option is not None and int(self._prefetch_option) < 1:
            raise ConfigurationError(f"CeleryChannel {name!r}: prefetch_count must be at least 1")
        # Declared as ``celery worker -Q <queue>`` declares it, so both consumers agree on the queue.
        self.exchange = Exchange(self.queue_name, type="direct", durable=True)
        self.queue = Queue(self.queue_name, self.exchange, routing_key=self.queue_name, durable=True)
        self._app: Any = None
        self._local = threading.local()

    # -- configuration ---------------------------------------------------------

    @property
    def app(self) -> Any:
        if self._app is None:
            path = self.options.get("app") or get_config().celery_app
            if not path:
                raise ConfigurationError(
                    f"CeleryChannel {self.name!r} needs a Celery app: set ECOTONE['CELERY_APP'] or OPTIONS['app']"
                )
            try:
                self._app = import_string(path)
            except ImportError as exc:
                raise ConfigurationError(
                    f"CeleryChannel {self.name!r}: cannot import Celery app {path!r}: {exc}"
                ) from exc
        return self._app

    @property
    def prefetch_count(self) -> int:
        """Deliveries a consumer holds at once: ``OPTIONS["prefetch_count"]``, else the transport's default."""
        if self._prefetch_option is not None:
            return int(self._prefetch_option)
        return self.profile.prefetch_count

    @property
    def profile(self) -> TransportProfile:
        """What this channel adds to the transport the Celery app's ``broker_url`` names."""
        return profile_for(self.app.conf.broker_url)

    def connection(self) -> Connection:
        """A new kombu connection to the Celery app's broker."""
        conf = self.app.conf
        options = {**self.profile.defaults, **(conf.broker_transport_options or {})}
        # Confirms are collected per batch by _Publisher, not awaited after each message.
        options.pop("confirm_publish", None)
        return Connection(
            conf.broker_url,
            transport=self.profile.transport_cls,
            transport_options=options,
            connect_timeout=CONNECT_TIMEOUT,
        )

    # -- publishing ------------------------------------------------------------

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        """Publish ``rows`` and return once the broker has all of them; raise otherwise."""
        if not rows:
            return
        rows = sorted(rows, key=lambda row: (row.available_at, row.pk or 0))  # FIFO where the broker keeps order
        publisher: _Publisher | None = getattr(self._local, "publisher", None)
        reused = publisher is not None
        while True:
            if publisher is None:
                publisher = self._local.publisher = _Publisher(self)
            try:
                publisher.publish(rows)
                return
            except Exception:
                self.close()
                publisher = None
                if not reused:
                    raise
                # The kept connection may simply be stale (broker restarted): one more try on a new one.
                # A message the broker did get before the failure is published again; the inbox dedups it.
                reused = False

    def close(self) -> None:
        """Close this thread's publishing connection."""
        publisher: _Publisher | None = getattr(self._local, "publisher", None)
        self._local.publisher = None
        if publisher is not None:
            publisher.close()

    # -- consuming -------------------------------------------------------------

    def on_message(self, worker: Worker, message: Message) -> None:
        """Handle one delivery; ack only after its outcome (handled, retry stored, dead letter) committed."""
        from ..tenancy import alias_for

        try:
            try:
                task = parse_task(message.headers, message.content_type, message.body)
            except DecodeError as exc:
                self._dead_letter(worker, message, str(exc), exc)
            else:
                worker.handle_delivery(*task, fallback_alias=alias_for(None))
        except (OperationalError, InterfaceError) as exc:
            self._requeue(worker, message, f"database unavailable ({exc}); message requeued")
            return
        except Exception as exc:  # a bug must neither lose the message nor stop the worker
            logger.exception("handling a message from %r failed unexpectedly", self.name)
            try:
                self._dead_letter(worker, message, f"internal error: {type(exc).__name__}: {exc}", exc)
            except Exception as again:
                self._requeue(worker, message, f"dead-lettering failed too ({again}); message requeued")
                return
        message.ack()

    def _requeue(self, worker: Worker, message: Message, why: str) -> None:
        logger.warning("%s: %s", self.name, why)
        close_old_connections()
        message.requeue()
        worker._stop.wait(worker.poll_interval)

    def _dead_letter(self, worker: Worker, message: Message, reason: str, exc: BaseException) -> None:
        from ..retry import dead_letter, safe_text
        from ..tenancy import alias_for

        dead_letter(
            alias_for(None),
            reason=reason[:255],
            body=safe_text(message.body),
            exc=exc,
            channel=self.name,
            handler_id=str((message.headers or {}).get("task") or "")[:255],
        )
        with worker.stats.lock:
            worker.stats.dead += 1

    def handle_batch(self, worker: Worker, messages: Sequence[Message], limit: int) -> None:
        """Handle deliveries the consumer holds: per tenant database, up to ``limit`` in one transaction.

        Each message keeps its own savepoint (its effects, inbox row, retry or dead letter), so one
        failure undoes only its own work; the acks go out after the commit. If the transaction itself
        fails (the database went away), it is rolled back and the messages take the one-by-one path,
        which requeues them. Messages not reached before a stop request are requeued.
        """
        if len(messages) == 1:
            self.on_message(worker, messages[0])
            return
        from ..tenancy import alias_for
        from ..worker import delivery_alias

        fallback = alias_for(None)
        groups: dict[str, list[_Delivery]] = {}
        for message in messages:
            try:
                task = parse_task(message.headers, message.content_type, message.body)
            except DecodeError:
                self.on_message(worker, message)  # dead letter, ack
                continue
            envelope, alias = delivery_alias(task.envelope, fallback)
            groups.setdefault(alias, []).append(_Delivery(message, task, envelope))
        whole = len(groups) == 1 and len(messages) <= limit  # one transaction settles every delivery held
        for alias, group in groups.items():
            for start in range(0, len(group), limit):
                chunk = group[start : start + limit]
                if worker.should_stop():
                    for delivery in chunk:
                        delivery.message.requeue()
                    continue
                self._handle_in_one_transaction(worker, alias, chunk, fallback, ack_all=whole)

    def _handle_in_one_transaction(
        self, worker: Worker, alias: str, deliveries: Sequence[_Delivery], fallback: str, *, ack_all: bool
    ) -> None:
        if len(deliveries) == 1:
            self.on_message(worker, deliveries[0].message)
            return
        counts = worker.stats.snapshot()
        try:
            with transaction.atomic(using=alias):
                taken = worker.handle_many(alias, [(*d.task, d.envelope) for d in deliveries], fallback)
        except Exception as exc:
            logger.warning("%s: a batch of %d failed (%s); handling them one by one", self.name, len(deliveries), exc)
            worker.stats.restore(counts)
            close_old_connections()
            for delivery in deliveries:
                self.on_message(worker, delivery.message)
            return
        if ack_all and taken == len(deliveries):
            # Every delivery this consumer holds is settled by this commit: one ack for all of them.
            deliveries[-1].message.ack(multiple=True)
            return
        for delivery in deliveries[:taken]:
            delivery.message.ack()
        for delivery in deliveries[taken:]:
            delivery.message.requeue()

    def _take_buffered(self, conn: Connection, batch: list[Message], limit: int) -> None:
        """Add the deliveries that have already arrived, up to ``limit``, without waiting for more.

        Only on AMQP, where the socket tells whether a frame is waiting; elsewhere a batch is what one
        ``drain_events`` delivered.
        """
        if conn.transport.driver_type != "amqp":
            return
        transport = getattr(conn.connection, "transport", None)
        sock = getattr(transport, "sock", None)
        while len(batch) < limit and sock is not None:
            if not getattr(transport, "_read_buffer", b"") and not select.select([sock], [], [], 0)[0]:
                return
            try:
                conn.drain_events(timeout=0.05)  # a frame is there; the rest of a message follows at once
            except TimeoutError:
                return

    def consume(self, worker: Worker) -> None:
        """Consume the queue until the worker stops, reconnecting after broker outages.

        Before the first message the transport's checks run (see ``transports``); one that fails stops
        the worker and raises :class:`ConfigurationError`.
        """
        backoff = 0.5
        checked = False
        while not worker.should_stop():
            conn = self.connection()
            try:
                conn.ensure_connection(max_retries=0)
                if not checked:
                    try:
                        self.profile.check_consumer(self, worker, conn)
                    except ConfigurationError:
                        worker.stop()
                        raise
                    checked = True
                batch: list[Message] = []
                # The window is the channel's (global) qos, so that it can change under a running consumer:
                # a consumer's own limit is fixed when it starts. It starts at one (see _adapt_prefetch).
                prefetch = 1
                channel = conn.channel()
                channel.basic_qos(0, prefetch, True)
                with Consumer(channel, [self.queue], on_message=batch.append, accept=[JSON]):
                    if backoff > 0.5:
                        logger.warning("consuming %r again", self.name)
                    backoff = 0.5
                    while not worker.should_stop():
                        if not batch:  # deliveries can arrive during basic.qos: those are handled first
                            try:
                                conn.drain_events(timeout=worker.poll_interval)
                            except TimeoutError:
                                if worker.stop_when_empty and not self._relay_pending(worker):
                                    worker.stop()
                                continue
                        limit = worker.batch_limit(prefetch)
                        self._take_buffered(conn, batch, limit)
                        taken = batch[:]
                        del batch[: len(taken)]
                        self.handle_batch(worker, taken, limit)
                        prefetch = self._adapt_prefetch(channel, worker, prefetch)
            except TimeoutError:
                continue
            except (KombuOperationalError, *conn.recoverable_connection_errors, *conn.connection_errors) as exc:
                logger.warning("broker connection for %r lost (%s); reconnecting in %.1f s", self.name, exc, backoff)
                worker._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    conn.release()
                except Exception:
                    logger.debug("releasing the consumer connection failed", exc_info=True)
                close_old_connections()

    def _adapt_prefetch(self, channel: Any, worker: Worker, current: int) -> int:
        """Hold about BATCH_SECONDS of work, ``prefetch_count`` at most: slow handlers keep the window at one.

        Unacknowledged deliveries wait for this consumer while another may be idle, so the window starts
        at one and follows the handling time: it doubles while batches stay short, and shrinks at once
        when they get long or handlers fail. ``basic.qos`` is a round trip: only a change by half or more
        is sent.
        """
        wanted = worker.batch_limit(self.prefetch_count)
        if wanted > current:
            wanted = min(wanted, current * 2)
        elif wanted * 2 > current:
            return current
        if wanted != current:
            channel.basic_qos(0, wanted, True)
        return wanted

    def _relay_pending(self, worker: Worker) -> bool:
        """Rows of this channel the relay still has to publish (due, or leased to their sender)."""
        from ..clock import now
        from ..models import OutboxMessage
        from ..outbox import PUBLISH_LEASE

        due = now() + PUBLISH_LEASE
        return any(
            OutboxMessage.objects.using(alias).filter(channel=self.name, available_at__lte=due).exists()
            for alias in worker.aliases
        )
