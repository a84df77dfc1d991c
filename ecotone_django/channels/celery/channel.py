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
on RabbitMQ, 1 on the other transports).
The broker URL and ``broker_transport_options`` come from the Celery app.
On Redis, a message a crashed consumer held comes back only after the
transport's ``visibility_timeout`` (kombu's default: one hour); on SQS after the
queue's visibility timeout (kombu creates queues with 30 minutes); on Kafka once
the group has noticed the consumer is gone (``session.timeout.ms``).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string
from kombu import Connection, Exchange, Queue

from ...conf import get_config
from ...exceptions import ConfigurationError
from ..base import BrokerChannel
from .consumer import CeleryConsumer
from .profiles import TransportProfile, profile_for
from .publisher import Publisher

if TYPE_CHECKING:
    from ...models import OutboxMessage

__all__ = ["CONNECT_TIMEOUT", "CeleryChannel"]

#: Seconds to wait for a TCP connection to the broker.
CONNECT_TIMEOUT = 5.0


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
        # Confirms are collected per batch by the Publisher, not awaited after each message.
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
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        reused = publisher is not None
        while True:
            if publisher is None:
                publisher = self._local.publisher = Publisher(self.connection(), self.queue, self.profile)
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
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        self._local.publisher = None
        if publisher is not None:
            publisher.close()

    # -- consuming -------------------------------------------------------------

    def depth(self) -> int:
        """Messages ready in the queue: a passive declare (kombu counts them on Redis, SQS and Kafka too)."""
        with self.connection() as conn:
            conn.ensure_connection(max_retries=0)
            try:
                _, ready, _ = self.queue(conn.default_channel).queue_declare(passive=True)
            except conn.channel_errors:
                return 0  # no such queue (yet): nothing waits in it
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
            self.connection,
            self.prefetch_count,
            time_limit=time_limit,
            consumers=consumers,
        )
