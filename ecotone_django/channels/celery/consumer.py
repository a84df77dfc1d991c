"""The consumer of a :class:`~ecotone_django.channels.celery.CeleryChannel`, built on kombu directly.

It hands the worker what the broker delivered and settles it as told: ``ack`` after the outcome
committed, ``requeue`` when the database is unreachable. On RabbitMQ it takes every delivery that has
already arrived, up to the worker's limit, without waiting for more; when an ack settles everything
the consumer holds it is one ``basic.ack`` with ``multiple``. The window (prefetch) is the channel's
(global) ``basic.qos``, so that it can change under a running consumer; it starts at one for every
connection and :meth:`CeleryConsumer.resize` moves it.

No wait on the broker is unbounded (:mod:`.deadlines`): the connect and the handshake have
``connect_timeout``; every other socket wait (an ack, ``basic.qos``, a queue check, a close) has
``socket_timeout``; and on RabbitMQ the connection carries AMQP heartbeats, checked on every receive, so
that an idle consumer whose broker stopped answering (a black-holed route: no error, no data) notices
within about twice the heartbeat. A connection that failed is dropped without the close handshake; the
worker reconnects with backoff, and the broker requeues what the lost connection held.
"""

from __future__ import annotations

import contextlib
import logging
import select
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.message import Message

from ...exceptions import BrokerConnectionError, ConfigurationError
from ..base import Delivery
from . import deadlines
from .protocol import JSON, read_task

if TYPE_CHECKING:
    from kombu import Queue

    from .profiles import TransportProfile

__all__ = ["CeleryConsumer"]

logger = logging.getLogger("ecotone_django.channels.celery")


class CeleryConsumer:
    """One worker thread's consumer of a Celery channel's queue (see :class:`~..base.BrokerConsumer`)."""

    def __init__(
        self,
        name: str,
        queue: Queue,
        profile: TransportProfile,
        connect: Callable[[], Connection],
        max_window: int,
        *,
        time_limit: float | None,
        consumers: int,
        socket_timeout: float,
    ) -> None:
        self.name = name
        self.socket_timeout = socket_timeout
        self.queue = queue
        self.profile = profile
        self.connect = connect
        self._max_window = max_window
        self.time_limit = time_limit
        self.consumers = consumers
        self._checked = False
        self._conn: Connection | None = None
        self._kombu_channel: Any = None
        self._consumer: Consumer | None = None
        self._buffer: list[Message] = []  # delivered by the broker, not yet handed out
        self._held: dict[Any, Message] = {}  # handed out, not yet settled: delivery tag → message
        self._window = 1

    @property
    def window(self) -> int:
        return self._window

    @property
    def max_window(self) -> int:
        return self._max_window

    # -- connection ------------------------------------------------------------

    def _open(self) -> Connection:
        conn = self.connect()
        self._conn = conn
        deadlines.connect(conn, self.socket_timeout)
        if not self._checked:
            self.profile.check_consumer(
                self.name, self.queue.name, conn, time_limit=self.time_limit, consumers=self.consumers
            )
            self._checked = True
        self._window = 1
        self._kombu_channel = conn.channel()
        self._kombu_channel.basic_qos(0, self._window, True)
        self._consumer = Consumer(self._kombu_channel, [self.queue], on_message=self._buffer.append, accept=[JSON])
        self._consumer.consume()
        return conn

    def close(self, *, failed: bool = False) -> None:
        """Close the connection (what it holds unacknowledged goes back to the queue): politely within
        ``socket_timeout``, or at once without a word to the broker if it ``failed``."""
        conn, self._conn = self._conn, None
        self._consumer = self._kombu_channel = None
        self._buffer.clear()
        self._held.clear()
        if conn is None:
            return
        if failed:
            deadlines.abandon(conn)
        else:
            deadlines.close(conn, self.socket_timeout)

    def _lost(self, exc: Exception) -> BrokerConnectionError | None:
        """A lost connection as the worker should see it (and closed); ``None`` for any other error."""
        conn = self._conn
        errors: tuple[type[BaseException], ...] = (KombuOperationalError,)
        if conn is not None:
            # A channel the broker closed counts too: RabbitMQ closes a consumer's channel that held a
            # delivery past its consumer_timeout (and requeues the delivery; the inbox dedups its second copy).
            errors += (*conn.recoverable_connection_errors, *conn.connection_errors, *conn.channel_errors)
        if not isinstance(exc, errors):
            return None
        self.close(failed=True)
        return BrokerConnectionError(f"broker connection for {self.name!r} lost ({exc})")

    @contextlib.contextmanager
    def _reconnecting(self) -> Iterator[None]:
        """Turn a lost connection inside the block into BrokerConnectionError; the next receive reconnects."""
        try:
            yield
        except Exception as exc:
            if (lost := self._lost(exc)) is None:
                raise
            raise lost from exc

    # -- receiving -------------------------------------------------------------

    def receive(self, limit: int, timeout: float) -> list[Delivery]:
        conn = self._conn
        try:
            if conn is None:
                conn = self._open()
            elif self._driver == "amqp":
                conn.heartbeat_check()  # sends ours when due; raises once the broker's have stopped
            if not self._buffer:  # deliveries can arrive during basic.qos: those are handed out first
                try:
                    conn.drain_events(timeout=timeout)
                except TimeoutError:
                    return []
            self._take_buffered(conn, limit)
        except ConfigurationError:
            self.close()
            raise
        except TimeoutError as exc:  # a socket wait past its deadline: the broker stopped answering
            self.close(failed=True)
            raise BrokerConnectionError(f"broker connection for {self.name!r} timed out ({exc})") from exc
        except Exception as exc:
            if (lost := self._lost(exc)) is None:
                raise
            raise lost from exc
        taken, self._buffer[:] = list(self._buffer), []
        for message in taken:
            self._held[message.delivery_tag] = message
        return [read_task(message, self.name) for message in taken]

    def _take_buffered(self, conn: Connection, limit: int) -> None:
        """Add the deliveries that have already arrived, up to ``limit``, without waiting for more.

        Only on AMQP, where the socket tells whether a frame is waiting; elsewhere a batch is what one
        ``drain_events`` delivered.
        """
        if conn.transport.driver_type != "amqp":
            return
        transport = getattr(conn.connection, "transport", None)
        sock = getattr(transport, "sock", None)
        while len(self._buffer) < limit and sock is not None:
            if not getattr(transport, "_read_buffer", b"") and not select.select([sock], [], [], 0)[0]:
                return
            try:
                conn.drain_events(timeout=0.05)  # a frame is there; the rest of a message follows at once
            except TimeoutError:
                return

    def resize(self, wanted: int) -> None:
        """Move the window towards ``wanted``: up by doubling at most, down at once, never by less than half.

        Unacknowledged deliveries wait for this consumer while another may be idle, so the window starts
        at one and follows what the worker asks for. ``basic.qos`` is a round trip: only a change by half
        or more is sent.
        """
        current = self._window
        if wanted > current:
            wanted = min(wanted, current * 2)
        elif wanted * 2 > current:
            return
        if wanted != current and self._kombu_channel is not None:
            with self._reconnecting():
                self._kombu_channel.basic_qos(0, wanted, True)
            self._window = wanted

    # -- settling --------------------------------------------------------------

    def _settle(self, deliveries: Sequence[Delivery]) -> list[Message]:
        return [message for d in deliveries if (message := self._held.pop(d.tag.delivery_tag, None)) is not None]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        everything = len(deliveries) > 1 and len(deliveries) == len(self._held)
        messages = self._settle(deliveries)
        with self._reconnecting():
            if everything and not self._held and self._driver == "amqp":
                # Every delivery this consumer holds is settled: one ack for all of them.
                max(messages, key=lambda m: m.delivery_tag).ack(multiple=True)
                return
            for message in messages:
                message.ack()

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._reconnecting():
            for message in self._settle(deliveries):
                message.requeue()

    def pending(self) -> bool:
        """Deliveries held or buffered here, or messages ready in the queue (a passive declare, which kombu
        answers on Redis, SQS and Kafka too); ``True`` while disconnected, as the queue cannot be asked."""
        if self._held or self._buffer:
            return True
        if self._kombu_channel is None:
            return True
        with self._reconnecting():
            _, ready, _ = self.queue(self._kombu_channel).queue_declare(passive=True)
        return bool(ready)

    @property
    def _driver(self) -> str | None:
        return self._conn.transport.driver_type if self._conn is not None else None
