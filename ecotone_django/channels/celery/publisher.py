"""A thread's publishing connection of a :class:`~ecotone_django.channels.celery.CeleryChannel`.

Publishing returns only once the broker has every message of the batch. On RabbitMQ that means
publisher confirms, collected for the whole batch (one round trip per batch, not per message) and
``mandatory`` routing, so a queue deleted behind our back is an error, not a silent drop; on Redis the
batch goes out as one pipeline; on SQS each message is one synchronous ``SendMessage``; on Kafka every
record gets a delivery report, awaited once per batch (:mod:`.kafka`). A failed publish raises.

Every publish has a deadline (``publish_timeout``): the socket waits of its writes and of its confirms
get what is left of it (:mod:`.deadlines`), so a broker that stops answering fails the publish in that
time, not never. A broker that *blocks* the connection (a RabbitMQ resource alarm:
``connection.blocked``) fails it at once. A publisher whose publish failed is closed without the close
handshake (:func:`.deadlines.abandon`): its broker may never answer one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import amqp
from kombu import Producer

from ...exceptions import BrokerBlockedError, PublishNotConfirmedError
from . import deadlines
from .protocol import JSON, task_message

if TYPE_CHECKING:
    from kombu import Connection, Queue

    from ...models import OutboxMessage
    from .profiles import TransportProfile

__all__ = ["PUBLISH_TIMEOUT", "Publisher"]

logger = logging.getLogger("ecotone_django.channels.celery")

#: Seconds a publish may take, from its start to the broker's last confirm (connecting included).
PUBLISH_TIMEOUT = 2.0
#: The argument types of ``basic.publish``: ticket, exchange, routing key, mandatory, immediate.
_PUBLISH_ARGS = "Bssbb"


class Publisher:
    """One thread's broker connection, with the queue declared and (on AMQP) publisher confirms on.

    ``timeout`` bounds the connection and the queue declaration; :meth:`publish` takes its own deadline.
    """

    def __init__(self, connection: Connection, queue: Queue, profile: TransportProfile, timeout: float) -> None:
        self.queue_name = queue.name
        self.profile = profile
        self.connection = connection
        self.blocked: str | None = None  # the broker's reason while it blocks this connection
        self.broken = False
        try:
            deadlines.connect(self.connection, timeout)  # fail now; the relay is the retry loop
            if (amqp := deadlines.amqp_connection(self.connection)) is not None:
                amqp.on_blocked = self._on_blocked
                amqp.on_unblocked = self._on_unblocked
            self.channel = self.connection.channel()
            queue(self.channel).declare()
            self.producer = Producer(self.channel, auto_declare=False)
            self.confirms = self.connection.transport.driver_type == "amqp"
            # py-amqp (RabbitMQ): publish on the channel itself, see _send.
            self.direct = self.confirms and isinstance(self.channel, amqp.Channel)
            self.batches = not self.confirms and self.producer.supports_batch_publish
            # Kafka (.kafka): delivery reports, awaited once per batch.
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
            self.broken = True
            self.close()
            raise

    # py-amqp calls these while we drain the connection.
    def _on_blocked(self, reason: str = "") -> None:
        self.blocked = reason or "no reason given"

    def _on_unblocked(self) -> None:
        self.blocked = None

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

    def publish(self, rows: Sequence[OutboxMessage], deadline: float) -> None:
        """Publish ``rows``; raise unless the broker has all of them by ``deadline`` (``time.monotonic()``)."""
        try:
            self._refused.clear()
            if self.blocked is not None:
                raise BrokerBlockedError(f"the broker blocks publishing ({self.blocked})")
            deadlines.bound(self.connection, deadline - time.monotonic())
            if self.batches:
                with self.producer.batch(max_size=max(len(rows), 1)):
                    self._send(rows)
            else:
                self._send(rows)
            if self.confirms:
                self._wait_for_confirms(len(rows), deadline)
            elif self.deliveries is not None:
                self.deliveries(max(deadline - time.monotonic(), 0.001))
        except BaseException:
            self.broken = True
            raise

    def _send(self, rows: Sequence[OutboxMessage]) -> None:
        if self.direct:
            self._send_direct(rows)
            return
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

    def _send_direct(self, rows: Sequence[OutboxMessage]) -> None:
        """Publish on the py-amqp channel: the message kombu's ``Producer.publish`` builds, property for
        property (the body encoded, ``priority`` 0), without the layers it passes each message through
        (its declare, retry, serializer and batch checks): 25 to 35 us of a 100 to 160 us publish in a
        microbenchmark here, a small part of what the relay spends per row.

        Each message goes out as its ``basic.publish`` method frame, not through ``Channel.basic_publish``:
        that one first reads the socket for a ``connection.blocked`` notice, before every message (a read
        that finds nothing, and two changes of the socket's timeout). This publisher reads such a notice
        where it waits for the batch's confirms, right after, and fails the publish then
        (:class:`~ecotone_django.exceptions.BrokerBlockedError`). Batches of 100 confirmed messages, here:
        9,400 to 10,800 messages/s through ``basic_publish``, 11,200 to 13,000 this way.
        """
        send, queue_name = self.channel.send_method, self.queue_name
        for row in rows:
            headers, body = task_message(row)
            message = amqp.Message(
                body.encode(),
                priority=0,
                content_type=JSON,
                content_encoding="utf-8",
                application_headers=headers,
                delivery_mode=2,
                correlation_id=headers["id"],
                **self.profile.message_properties(row),
            )
            send(amqp.spec.Basic.Publish, _PUBLISH_ARGS, (0, "", queue_name, True, False), message)
            self._sequence += 1
            self._unconfirmed.add(self._sequence)

    def _wait_for_confirms(self, count: int, deadline: float) -> None:
        while self._unconfirmed:
            if self.blocked is not None:
                raise BrokerBlockedError(
                    f"{len(self._unconfirmed)} of {count} message(s) not confirmed: "
                    f"the broker blocks publishing ({self.blocked})"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishNotConfirmedError(f"{len(self._unconfirmed)} of {count} message(s) not confirmed in time")
            try:
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue  # the loop raises with the count
        if self._refused:
            raise PublishNotConfirmedError("; ".join(self._refused[:3]))

    def close(self, timeout: float = 0.0) -> None:
        """Close politely within ``timeout`` s; a publisher whose last publish failed is dropped at once."""
        if self.broken or timeout <= 0:
            deadlines.abandon(self.connection)
        else:
            deadlines.close(self.connection, timeout)
