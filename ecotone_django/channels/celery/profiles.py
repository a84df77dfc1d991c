"""What :class:`~ecotone_django.channels.celery.CeleryChannel` adds per kombu transport (its profile).

One :class:`TransportProfile` per broker kind, picked from the scheme of the Celery app's
``broker_url``. A profile supplies defaults for ``broker_transport_options`` (the app's own options
win), the kombu transport class when ours replaces kombu's, properties for each published message, and
the checks a consumer runs before it takes its first message.

| transport | ordering | what the profile adds |
|---|---|---|
| RabbitMQ ``amqp://`` | FIFO per queue (one consumer) | prefetch 32, handled per transaction; confirms |
| Redis ``redis://`` | FIFO per list | the channel's connect and socket timeouts |
| SQS ``sqs://`` | none (standard queue) | long polling on; visibility timeout above the time limit |
| Kafka ``confluentkafka://`` | FIFO per partition (key → partition) | confirmed produce, commit on ack, |
| | | consumers ≤ partitions |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ...exceptions import ConfigurationError

if TYPE_CHECKING:
    from kombu import Connection

    from ...models import OutboxMessage

#: The envelope header that names a Kafka record's key; without it the tenant is the key.
PARTITION_KEY_HEADER = "partition_key"


@dataclass(frozen=True)
class TransportProfile:
    """The defaults and checks of one kind of broker (the base class: nothing to add)."""

    name: str
    #: Transport options used unless ``broker_transport_options`` sets them.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: A consumer's prefetch unless the channel's OPTIONS set ``prefetch_count``.
    prefetch_count: int = 1

    @property
    def transport_cls(self) -> type | None:
        """A kombu transport class to use instead of the one the URL's scheme names."""
        return None

    def message_properties(self, row: OutboxMessage) -> dict[str, Any]:
        """Extra kombu message properties for a published row."""
        return {}

    def deadline_options(self, connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
        """Transport options that put the channel's deadlines on the transport's own client (py-amqp gets
        them from :mod:`.deadlines` instead); ``broker_transport_options`` win over these."""
        return {}

    def check_consumer(
        self, name: str, queue_name: str, conn: Connection, *, time_limit: float | None, consumers: int
    ) -> None:
        """Raise ConfigurationError if ``consumers`` threads whose handlers may run ``time_limit`` s must not
        consume channel ``name`` (its queue ``queue_name``) as configured."""


class RedisProfile(TransportProfile):
    """Redis: redis-py waits for ever on a socket unless told (kombu's own advice is to set a timeout)."""

    def deadline_options(self, connect_timeout: float, socket_timeout: float) -> dict[str, Any]:
        return {"socket_connect_timeout": connect_timeout, "socket_timeout": socket_timeout}


class SqsProfile(TransportProfile):
    """Amazon SQS (or ElasticMQ, LocalStack, moto): at-least-once, no order, redelivery by visibility timeout.

    A received message stays invisible for the queue's ``VisibilityTimeout``; a consumer that dies
    lets it reappear after that. A handler still running when it expires would see its message handed
    to another consumer (the inbox makes that harmless, but it is wasted work), so a consumer refuses to
    start with a ``--time-limit`` that is not below the queue's visibility timeout. Long polling is on
    (``wait_time_seconds`` 10 unless set; 0 is refused).
    """

    def check_consumer(
        self, name: str, queue_name: str, conn: Connection, *, time_limit: float | None, consumers: int
    ) -> None:
        kombu_channel: Any = conn.default_channel
        wait = int(kombu_channel.wait_time_seconds or 0)
        if not 1 <= wait <= 20:
            raise ConfigurationError(
                f"channel {name!r} (SQS): broker_transport_options['wait_time_seconds'] is {wait}; "
                "use 1-20 so that consumers long-poll"
            )
        url = kombu_channel._new_queue(queue_name)
        attributes = kombu_channel.sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        visibility = int(attributes["Attributes"]["VisibilityTimeout"])
        if time_limit is not None and time_limit >= visibility:
            raise ConfigurationError(
                f"channel {name!r} (SQS): the queue's visibility timeout ({visibility} s) must be above the "
                f"handler time limit ({time_limit:g} s), or a message still being handled is delivered again; "
                "raise broker_transport_options['visibility_timeout'] (and the queue's VisibilityTimeout) "
                "or lower --time-limit"
            )


class KafkaProfile(TransportProfile):
    """Kafka through :mod:`ecotone_django.channels.celery.kafka`: FIFO per partition, one consumer per partition.

    Records are keyed by the envelope's ``partition_key`` header, else by the tenant, so one tenant's
    messages keep their order. Every consumer of a channel is a member of the consumer group
    ``<queue>-consumer-group``; Kafka gives each partition to one member, so consumers beyond the number
    of partitions only stand by. Scale by creating the topic with more partitions
    (``num_partitions``) and starting up to that many consumers in total; a worker refuses to start with
    more consumer threads (``--concurrency``) than the topic has partitions, and with a
    ``--time-limit`` that reaches ``max.poll.interval.ms`` (past which Kafka takes the partition away).
    """

    @property
    def transport_cls(self) -> type:
        from .kafka import Transport  # noqa: PLC0415  (confluent-kafka is optional: the "kafka" extra)

        return Transport

    def message_properties(self, row: OutboxMessage) -> dict[str, Any]:
        try:
            headers = json.loads(row.body).get("headers") or {}
        except (ValueError, AttributeError):
            headers = {}
        key = headers.get(PARTITION_KEY_HEADER) or row.tenant
        return {"partition_key": str(key)} if key else {}

    def check_consumer(
        self, name: str, queue_name: str, conn: Connection, *, time_limit: float | None, consumers: int
    ) -> None:
        kombu_channel: Any = conn.default_channel
        kombu_channel._new_queue(queue_name)
        partitions = kombu_channel.partitions(queue_name)
        if consumers > partitions:
            raise ConfigurationError(
                f"channel {name!r} (Kafka): --concurrency {consumers} but topic "
                f"{queue_name!r} has {partitions} partition(s); Kafka gives each partition to one "
                "consumer, the others would only stand by. Start at most as many consumers as partitions "
                "(broker_transport_options['num_partitions'] sets it for new topics)"
            )
        consumer_config = {**kombu_channel.common_config, **(kombu_channel.options.get("kafka_consumer_config") or {})}
        max_poll = float(consumer_config.get("max.poll.interval.ms", 300_000)) / 1000
        if time_limit is not None and time_limit >= max_poll:
            raise ConfigurationError(
                f"channel {name!r} (Kafka): the handler time limit ({time_limit:g} s) must be below "
                f"max.poll.interval.ms ({max_poll:g} s), or Kafka takes the partition away mid-handler"
            )


_PLAIN = TransportProfile("broker")
#: RabbitMQ: a consumer handles the deliveries it holds in one transaction (a savepoint each), so the
#: window is the batch. 32 keeps a batch within the 64 subtransactions PostgreSQL caches per transaction.
_RABBITMQ = TransportProfile("RabbitMQ", prefetch_count=32)
_PROFILES: dict[str, TransportProfile] = {
    "amqp": _RABBITMQ,
    "amqps": _RABBITMQ,
    "pyamqp": _RABBITMQ,
    "redis": RedisProfile("Redis"),
    "rediss": RedisProfile("Redis"),
    "sqs": SqsProfile("SQS", {"wait_time_seconds": 10, "polling_interval": 0}),
    "confluentkafka": KafkaProfile("Kafka", {"wait_time_seconds": 1, "polling_interval": 0}),
}


def profile_for(broker_url: str | None) -> TransportProfile:
    """The profile for a Celery ``broker_url`` (by its scheme; unknown schemes get no extras)."""
    scheme = urlsplit(str(broker_url or "").split(";")[0]).scheme.lower()
    return _PROFILES.get(scheme, _PLAIN)
