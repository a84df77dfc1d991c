"""Settling a batch acknowledges every message of it, on every transport (Redis, SQS on moto, RabbitMQ).

AMQP's ``basic.ack`` with ``multiple`` settles all deliveries up to a tag at once; kombu's virtual
transports (Redis, SQS, Kafka) ignore ``multiple`` and settle only the message it is called on. A consumer
holding 10 deliveries (prefetch 10) that acknowledged them with one multiple ack would leave 9 unacked on
Redis: restored to the queue when the channel closes, and handled again. After the ack here, a fresh
consumer finds the queue empty.
"""

from __future__ import annotations

import time

import pytest

from ecotone_django.channels import Delivery, channels
from ecotone_django.clock import now
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage
from tests.contract.fixtures import sqs_queue, sqs_server
from tests.integration.broker_fixtures import rabbit_queue, redis_queue

__all__ = ["rabbit_queue", "redis_queue", "sqs_queue", "sqs_server"]  # fixtures used below

PREFETCH = 10


def publish(channel: str, count: int) -> None:
    rows = []
    for i in range(count):
        envelope = Envelope("tests.testapp.messaging.RecordOnRedis", {"name": f"m{i}"}, {"tenant": "acme"})
        rows.append(
            OutboxMessage(
                message_id=envelope.id,
                channel=channel,
                handler="h",
                message_type=envelope.type,
                body=envelope.encode(),
                available_at=now(),
                pk=i + 1,
            )
        )
    channels[channel].publish(rows)  # type: ignore[attr-defined]


def hold(channel: str, count: int, deadline: float = 30.0) -> tuple[object, list[Delivery]]:
    """A consumer of ``channel`` holding ``count`` unsettled deliveries (its window grown to ``count``)."""
    consumer = channels[channel].consume(time_limit=None, consumers=1)  # type: ignore[attr-defined]
    held: list[Delivery] = []
    until = time.monotonic() + deadline
    while len(held) < count:
        assert time.monotonic() < until, f"held {len(held)} of {count} deliveries"
        held += consumer.receive(count - len(held), timeout=0.5)
        consumer.resize(count)
    assert consumer.window == count
    return consumer, held


@pytest.fixture(params=["redis", "sqs", "rabbit"])
def transport(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue(f"{request.param}_queue")
    return str(request.param)


def test_acking_a_batch_settles_every_message_of_it(transport: str) -> None:
    channel = transport
    publish(channel, PREFETCH)
    consumer, held = hold(channel, PREFETCH)
    assert len({d.envelope.id for d in held if d.envelope}) == PREFETCH

    consumer.ack(held)  # type: ignore[attr-defined]
    consumer.close()  # kombu's virtual channels restore what is still unacked when they close

    # Redis restores a closed channel's unacked messages at once; SQS makes them visible again after the
    # queue's visibility timeout (5 s in tests.celery_apps): watch the queue past it.
    watch = 7.0 if channel == "sqs" else 1.0
    again = channels[channel].consume(time_limit=None, consumers=1)  # type: ignore[attr-defined]
    try:
        until = time.monotonic() + watch
        while time.monotonic() < until:
            assert again.receive(PREFETCH, timeout=0.5) == [], f"{channel}: an acknowledged message came back"
    finally:
        again.close()
