"""A thread's publishing connection of a :class:`~ecotone_django.channels.celery.CeleryChannel`.

Publishing returns only once the broker has every message of the batch. On RabbitMQ that means
publisher confirms, collected for the whole batch (one round trip per batch, not per message) and
``mandatory`` routing, so a queue deleted behind our back is an error, not a silent drop; on Redis the
batch goes out as one pipeline; on SQS each message is one synchronous ``SendMessage``; on Kafka every
record gets a delivery report, awaited once per batch (:mod:`.kafka`). A failed publish raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kombu import Producer

from ...exceptions import PublishNotConfirmedError
from .protocol import JSON, task_message

if TYPE_CHECKING:
    from kombu import Connection, Queue

    from ...models import OutboxMessage
    from .profiles import TransportProfile

__all__ = ["CONFIRM_TIMEOUT", "Publisher"]

logger = logging.getLogger("ecotone_django.channels.celery")

#: Seconds to wait for the broker to confirm a published batch.
CONFIRM_TIMEOUT = 10.0


class Publisher:
    """One thread's broker connection, with the queue declared and (on AMQP) publisher confirms on."""

    def __init__(self, connection: Connection, queue: Queue, profile: TransportProfile) -> None:
        self.queue_name = queue.name
        self.profile = profile
        self.connection = connection
        try:
            self.connection.ensure_connection(max_retries=0)  # fail now; the relay is the retry loop
            self.channel = self.connection.channel()
            queue(self.channel).declare()
            self.producer = Producer(self.channel, auto_declare=False)
            self.confirms = self.connection.transport.driver_type == "amqp"
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
