"""Settling a batch acknowledges every message of it, on every transport.

AMQP's ``basic.ack`` with ``multiple`` settles all deliveries up to a tag at once; kombu's virtual
transports (Redis, SQS, Kafka) ignore ``multiple`` and settle only the message it is called on. A consumer
holding 10 deliveries (prefetch 10) that acknowledged them with one multiple ack would leave 9 unacked on
Redis: restored to the queue when the channel closes, and handled again. After the ack here, a fresh
consumer finds the queue empty.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ecotone_django.channels import Delivery, channels
from ecotone_django.channels.celery.protocol import task_message
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage
from tests.integration.broker_fixtures import (
    publish_raw,
    queue_depth,
    rabbit_queue,
    rabbit_url,
    redis_queue,
    redis_url,
)

__all__ = ["rabbit_queue", "redis_queue"]  # fixtures used below

PREFETCH = 10


def publish(url: str, queue: str, count: int) -> None:
    for i in range(count):
        envelope = Envelope("tests.testapp.messaging.RecordOnRedis", {"name": f"m{i}"}, {"tenant": "acme"})
        row = OutboxMessage(message_id=envelope.id, channel="x", handler="h", body=envelope.encode())
        headers, body = task_message(row)
        publish_raw(url, queue, body, headers=headers)


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


@pytest.fixture(params=["redis", "rabbit"])
def transport(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    if request.param == "redis":
        queue = request.getfixturevalue("redis_queue")
        yield "redis", redis_url(), queue
    else:
        queue = request.getfixturevalue("rabbit_queue")
        yield "rabbit", rabbit_url(), queue


def test_acking_a_batch_settles_every_message_of_it(transport: tuple[str, str, str]) -> None:
    channel, url, queue = transport
    publish(url, queue, PREFETCH)
    consumer, held = hold(channel, PREFETCH)
    assert len({d.envelope.id for d in held if d.envelope}) == PREFETCH

    consumer.ack(held)  # type: ignore[attr-defined]
    consumer.close()  # kombu's Redis channel restores what is still unacked when it closes
    assert queue_depth(url, queue) == 0

    again = channels[channel].consume(time_limit=None, consumers=1)  # type: ignore[attr-defined]
    try:
        assert again.receive(PREFETCH, timeout=1.0) == []
    finally:
        again.close()
