"""``CeleryChannel``: messages travel as JSON Celery tasks on a broker queue.

A message is published after commit (or by the relay; a send outside any
transaction publishes at once, see ``outbox``) as a protocol-2 Celery task
(:mod:`.protocol`) sent straight to the channel's queue, so that
``celery -A proj worker -Q <queue>`` can run it (see ``ecotone_django.tasks``)
as well as ``manage.py consume_channel``, whose consumer (:mod:`.consumer`) is
built on kombu directly. Publishing (:mod:`.publisher`) returns only once the
broker has every message of the batch; a failed publish raises, the outbox rows
stay, and the relay tries again. A connection kept from an earlier publish that
has gone stale (broker restart) is replaced once, at once.

The transport is the scheme of the Celery app's ``broker_url``: ``amqp://``,
``redis://``, ``sqs://`` or ``confluentkafka://``. Per transport,
:mod:`.profiles` supplies defaults for ``broker_transport_options`` and the
checks a consumer runs before its first message (SQS: long polling, visibility
timeout above ``--time-limit``; Kafka: no more consumer threads than
partitions).

Delays never use broker ETAs: they wait in the database (``available_at``).

OPTIONS: ``queue`` (default: the channel name), ``app`` (dotted path of the
Celery app; default ``ECOTONE["CELERY_APP"]``), ``prefetch_count`` (default 32
on RabbitMQ, 1 on the other transports), and the deadlines, in seconds:

* ``connect_timeout`` (2): the TCP connect and each frame of the AMQP handshake;
* ``publish_timeout`` (2): one publish, from its start to the broker's last
  confirm, connecting included; past it the message stays in the outbox;
* ``socket_timeout`` (5): any other wait on an open connection (a consumer's
  acks, ``basic.qos``, a queue check, a close);
* ``heartbeat`` (60; 0 turns it off): AMQP heartbeats on consumer connections,
  so that a consumer notices a broker that stopped answering within about
  twice this (a batch of handlers must finish within that, too);
* ``breaker_cool_down`` (5; 0 turns the breaker off): after a publish that
  failed slowly (a timeout, a blocked broker), publishes fail at once for this
  long, then one probe tries the broker (:mod:`ecotone_django.channels.breaker`);
  a broker that refuses connections at once is simply tried every time.
The broker URL and ``broker_transport_options`` come from the Celery app.
On Redis, a message a crashed consumer held comes back only after the
transport's ``visibility_timeout`` (kombu's default: one hour); on SQS after the
queue's visibility timeout (kombu creates queues with 30 minutes); on Kafka once
the group has noticed the consumer is gone (``session.timeout.ms``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string
from kombu import Connection, Exchange, Queue

from ...conf import get_config
from ...exceptions import BrokerBlockedError, ConfigurationError
from ..base import BrokerChannel
from ..breaker import CircuitBreaker
from . import deadlines
from .consumer import CeleryConsumer
from .profiles import TransportProfile, profile_for
from .publisher import PUBLISH_TIMEOUT, Publisher

if TYPE_CHECKING:
    from ...models import OutboxMessage

__all__ = ["BREAKER_COOL_DOWN", "CONNECT_TIMEOUT", "HEARTBEAT", "PUBLISH_TIMEOUT", "SOCKET_TIMEOUT", "CeleryChannel"]

#: Seconds for the TCP connect to the broker and for each frame of the AMQP handshake.
CONNECT_TIMEOUT = 2.0
#: Seconds for any other wait on an open connection (acks, basic.qos, queue checks, a close).
SOCKET_TIMEOUT = 5.0
#: Seconds between AMQP heartbeats on consumer connections.
HEARTBEAT = 60
#: Seconds publishes fail at once after one that failed slowly (a timeout, a blocked broker).
BREAKER_COOL_DOWN = 5.0
#: A failed publish quicker than this (a refused connection) leaves the breaker closed: trying costs nothing.
QUICK_FAILURE = 0.25

#: The deadline OPTIONS: name → (default, smallest value allowed).
_DEADLINES: dict[str, tuple[float, float]] = {
    "connect_timeout": (CONNECT_TIMEOUT, 0.001),
    "publish_timeout": (PUBLISH_TIMEOUT, 0.001),
    "socket_timeout": (SOCKET_TIMEOUT, 0.001),
    "heartbeat": (HEARTBEAT, 0),
    "breaker_cool_down": (BREAKER_COOL_DOWN, 0),
}


def _seconds(name: str, options: Mapping[str, Any], key: str) -> float:
    default, minimum = _DEADLINES[key]
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        kind = "above 0" if minimum else "0 or more"
        raise ConfigurationError(
            f"CeleryChannel {name!r}: OPTIONS[{key!r}] must be a number of seconds {kind}, got {value!r}"
        )
    return float(value)


class CeleryChannel(BrokerChannel):
    options_allowed = frozenset({"queue", "app", "prefetch_count", *_DEADLINES})

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.queue_name = str(options.get("queue", name))
        self._prefetch_option = options.get("prefetch_count")
        if self._prefetch_option is not None and int(self._prefetch_option) < 1:
            raise ConfigurationError(f"CeleryChannel {name!r}: prefetch_count must be at least 1")
        self.connect_timeout = _seconds(name, options, "connect_timeout")
        self.publish_timeout = _seconds(name, options, "publish_timeout")
        self.socket_timeout = _seconds(name, options, "socket_timeout")
        self.heartbeat = _seconds(name, options, "heartbeat")
        self.breaker = CircuitBreaker(name, _seconds(name, options, "breaker_cool_down"))
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

    def connection(self, *, heartbeat: float = 0, connect_timeout: float | None = None) -> Connection:
        """A new kombu connection to the Celery app's broker (not connected yet)."""
        conf = self.app.conf
        profile = self.profile
        options = {
            **profile.defaults,
            **profile.deadline_options(self.connect_timeout, self.socket_timeout),
            **(conf.broker_transport_options or {}),
        }
        # Confirms are collected per batch by the Publisher, not awaited after each message.
        options.pop("confirm_publish", None)
        return Connection(
            conf.broker_url,
            transport=profile.transport_cls,
            transport_options=options,
            connect_timeout=self.connect_timeout if connect_timeout is None else connect_timeout,
            heartbeat=heartbeat,
        )

    def _consumer_connection(self) -> Connection:
        return self.connection(heartbeat=self.heartbeat)

    # -- publishing ------------------------------------------------------------

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        """Publish ``rows`` and return once the broker has all of them; raise otherwise.

        Within ``publish_timeout``; at once (:class:`~ecotone_django.exceptions.BrokerUnavailableError`)
        while the circuit breaker is open after a failure.
        """
        if not rows:
            return
        rows = sorted(rows, key=lambda row: (row.available_at, row.pk or 0))  # FIFO where the broker keeps order
        self.breaker.before_call()
        started = time.monotonic()
        try:
            self._publish(rows, started + self.publish_timeout)
        except BaseException as exc:
            slow = isinstance(exc, (TimeoutError, BrokerBlockedError)) or time.monotonic() - started >= QUICK_FAILURE
            self.breaker.failed(exc, slow=slow)
            raise
        self.breaker.succeeded()

    def _publish(self, rows: Sequence[OutboxMessage], deadline: float) -> None:
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        reused = publisher is not None
        while True:
            if publisher is None:
                remaining = deadline - time.monotonic()
                connection = self.connection(connect_timeout=max(min(self.connect_timeout, remaining), 0.001))
                publisher = self._local.publisher = Publisher(connection, self.queue, self.profile, remaining)
            try:
                publisher.publish(rows, deadline)
                return
            except Exception:
                self.close()
                publisher = None
                if not reused or time.monotonic() >= deadline:
                    raise
                # The kept connection may simply be stale (broker restarted): one more try on a new one,
                # within what is left of the deadline. A message the broker did get before the failure is
                # published again; the inbox dedups it.
                reused = False

    def close(self) -> None:
        """Close this thread's publishing connection (within ``socket_timeout``; at once if it failed)."""
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        self._local.publisher = None
        if publisher is not None:
            publisher.close(self.socket_timeout)

    # -- consuming -------------------------------------------------------------

    def depth(self) -> int:
        """Messages ready in the queue: a passive declare (kombu counts them on Redis, SQS and Kafka too)."""
        conn = deadlines.connect(self.connection(), self.socket_timeout)
        try:
            _, ready, _ = self.queue(conn.default_channel).queue_declare(passive=True)
        except conn.channel_errors:
            return 0  # no such queue (yet): nothing waits in it
        finally:
            deadlines.close(conn, self.socket_timeout)
        return int(ready)

    def consume(self, *, time_limit: float | None, consumers: int) -> CeleryConsumer:
        """A consumer of this channel's queue (see :class:`.consumer.CeleryConsumer`).

        Before its first delivery the transport's checks run (see :mod:`.profiles`): one that fails
        raises :class:`~ecotone_django.exceptions.ConfigurationError`.
        """
        return CeleryConsumer(
            self.name,
            self.queue,
            self.profile,
            self._consumer_connection,
            self.prefetch_count,
            socket_timeout=self.socket_timeout,
            time_limit=time_limit,
            consumers=consumers,
        )
