"""Broker deliveries whose tenant database is down: moved to the back of their queue, not retried in place.

A broker hands a requeued message back at the head of its queue, so a worker that requeued the messages of
a tenant whose database is down would get them again at once, fail again and hold up every other tenant on
that queue. Instead, while that database is in its backoff (:class:`~ecotone_django.backoff.Backoff`), its
deliveries are *parked*: published again to the same channel (confirmed, and signed like any publish), then
acknowledged. The other tenants' messages go first; the parked ones come round again and are handled once
the database is back. A crash between the publish and the ack leaves two copies; the inbox handles one.
Nothing is written to a database, so a parked message never lands in another tenant's tables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .channels import BrokerChannel, BrokerConsumer, Delivery, channels
from .clock import now
from .exceptions import ConfigurationError
from .models import OutboxMessage
from .tenancy import tenant_of

__all__ = ["park"]

logger = logging.getLogger("ecotone_django.worker")


def _row(delivery: Delivery) -> OutboxMessage | None:
    envelope = delivery.envelope
    if envelope is None or not isinstance(delivery.body, str):
        return None
    moment = now()
    return OutboxMessage(
        message_id=envelope.id,
        channel=delivery.channel,
        handler=delivery.handler_id,
        message_type=envelope.type,
        tenant=tenant_of(envelope) or "",
        body=delivery.body,
        available_at=moment,
        attempts=delivery.attempts,
        created_at=moment,
    )


def park(consumer: BrokerConsumer, deliveries: Sequence[Delivery]) -> None:
    """Publish ``deliveries`` again at the back of their channel's queue, then ack them; requeue what cannot be."""
    stuck: list[Delivery] = []
    by_channel: dict[str, list[tuple[Delivery, OutboxMessage]]] = {}
    for delivery in deliveries:
        row = _row(delivery)
        if row is None:
            stuck.append(delivery)
        else:
            by_channel.setdefault(delivery.channel, []).append((delivery, row))
    for name, pairs in by_channel.items():
        moved = [delivery for delivery, _ in pairs]
        try:
            channel = channels[name]
            if not isinstance(channel, BrokerChannel):
                raise ConfigurationError(f"{name!r} is not a broker channel")
            channel.publish([row for _, row in pairs])
        except Exception as exc:  # the broker did not take them (or no such channel): back where they were
            logger.warning("%s: parking %d message(s) failed (%s); requeued", name, len(moved), exc)
            stuck += moved
        else:
            consumer.ack(moved)
    if stuck:
        consumer.requeue(stuck)
