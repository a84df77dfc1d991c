"""kombu's Kafka transport (``confluentkafka://``), with what a durable channel needs and it lacks.

:class:`CeleryChannel` connects through :class:`Transport` when the broker URL's scheme is
``confluentkafka``; the records it writes are the ones kombu's own transport (and so a Celery worker)
reads. What changes against ``kombu.transport.confluentkafka``:

* **Publishing is confirmed.** kombu produces and flushes without a delivery callback, so a record the
  broker refused (or one that timed out) is dropped silently. Here every record gets a delivery report;
  :meth:`Channel.wait_for_deliveries` flushes once per batch and raises if any record failed, so the
  outbox row stays and the relay tries again.
* **Records carry a key** (``partition_key`` property): Kafka keeps order per partition, and one key
  always lands on one partition.
* **Acks commit that record's offset, synchronously.** kombu commits the consumer's whole position,
  asynchronously; an ack here means the broker stored the offset. A requeue seeks back to the record
  itself instead of to whatever was committed last.
* **Topics exist before the first record**: creating a topic waits for the broker's answer.
* **A record that is not a kombu message** (written by some other producer) is handed over as a message
  without content type instead of raising in the consumer loop forever; the channel dead-letters it.

Kafka hands each partition of a topic to one consumer of the group at a time: consumers beyond the
number of partitions stand by without work (see ``CeleryChannel`` for how that is enforced).
"""

from __future__ import annotations

import uuid
from queue import Empty
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic
from kombu.transport import confluentkafka
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from ...exceptions import PublishNotConfirmedError

#: Seconds to wait for the broker to create a topic.
CREATE_TOPIC_TIMEOUT = 10.0


class Message(confluentkafka.Message):
    """A delivered record: remembers its partition and offset so that ack commits exactly this record."""

    def __init__(self, payload: dict[str, Any], channel: Any = None, **kwargs: Any) -> None:
        self.partition: int | None = payload.get("partition")
        self.offset: int | None = payload.get("offset")
        super().__init__(payload, channel=channel, **kwargs)


class QoS(confluentkafka.QoS):
    def _position(self, message: Message, after: bool) -> TopicPartition:
        assert message.partition is not None and message.offset is not None
        return TopicPartition(message.topic, message.partition, message.offset + (1 if after else 0))

    def ack(self, delivery_tag: str) -> None:
        message = self._not_yet_acked.pop(delivery_tag, None)
        if message is None:
            return
        consumer = self.channel._get_consumer(message.topic)
        consumer.commit(offsets=[self._position(message, after=True)], asynchronous=False)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if not requeue:
            self.ack(delivery_tag)
            return
        message = self._not_yet_acked.pop(delivery_tag, None)
        if message is None:
            return
        self.channel._get_consumer(message.topic).seek(self._position(message, after=False))


class Channel(confluentkafka.Channel):
    QoS = QoS
    Message = Message

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._failed_deliveries: list[str] = []
        super().__init__(*args, **kwargs)

    # -- producing -------------------------------------------------------------

    def _on_delivery(self, error: KafkaError | None, record: Any) -> None:
        if error is not None:
            self._failed_deliveries.append(f"topic {record.topic()!r}: {error.str()}")

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        queue = self.sanitize_queue_name(queue)
        key = message.get("properties", {}).pop("partition_key", None)
        producer = self._get_producer(queue)
        value = str_to_bytes(dumps(message))
        try:
            producer.produce(queue, value, key=str_to_bytes(key) if key else None, on_delivery=self._on_delivery)
        except BufferError:  # the local queue is full: deliver what is queued, then try once more
            producer.flush(CREATE_TOPIC_TIMEOUT)
            producer.produce(queue, value, key=str_to_bytes(key) if key else None, on_delivery=self._on_delivery)
        producer.poll(0)

    def wait_for_deliveries(self, timeout: float) -> None:
        """Return once the broker has every record produced so far; raise if one failed or time ran out."""
        pending = sum(producer.flush(timeout) for producer in self._kafka_producers.values())
        failed, self._failed_deliveries = self._failed_deliveries, []
        if pending:
            raise PublishNotConfirmedError(f"{pending} record(s) not delivered within {timeout:g} s")
        if failed:
            raise PublishNotConfirmedError(f"{len(failed)} record(s) refused: {'; '.join(failed[:3])}")

    # -- consuming -------------------------------------------------------------

    def _get(self, queue: str, timeout: Any = None, **kwargs: Any) -> dict[str, Any]:
        queue = self.sanitize_queue_name(queue)
        record = self._get_consumer(queue).poll(self.wait_time_seconds)
        if record is None:
            raise Empty()
        error = record.error()
        if error is not None:
            confluentkafka.logger.warning("kafka consumer of %r: %s", queue, error)
            raise Empty()
        position = {"topic": record.topic(), "partition": record.partition(), "offset": record.offset()}
        raw = record.value() or b""
        try:
            payload = loads(raw)
        except ValueError:
            payload = None
        if not (isinstance(payload, dict) and isinstance(payload.get("properties"), dict)):
            # Not written by kombu: hand it over as it is (no content type), never loop on it.
            payload = {
                "body": bytes_to_str(raw) if isinstance(raw, bytes) else raw,
                "properties": {"delivery_info": {"routing_key": queue}},
                "headers": {},
            }
        payload["properties"]["delivery_tag"] = str(uuid.uuid4())
        payload["properties"].setdefault("delivery_info", {})
        return {**payload, **position}

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        queue = self.sanitize_queue_name(queue)
        if queue in self.client.list_topics(timeout=CREATE_TOPIC_TIMEOUT).topics:
            return
        topic = NewTopic(
            queue,
            num_partitions=int(self.options.get("num_partitions", 1)),
            replication_factor=int(self.options.get("replication_factor", 1)),
            config=self.options.get("topic_config", {}),
        )
        try:
            self.client.create_topics([topic], operation_timeout=CREATE_TOPIC_TIMEOUT)[queue].result(
                CREATE_TOPIC_TIMEOUT
            )
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def partitions(self, queue: str) -> int:
        """How many partitions the topic behind ``queue`` has."""
        queue = self.sanitize_queue_name(queue)
        topic = self.client.list_topics(queue, timeout=CREATE_TOPIC_TIMEOUT).topics.get(queue)
        return len(topic.partitions) if topic is not None and topic.error is None else 0

    def close(self) -> None:
        # Not flushed: a record not yet confirmed belongs to a batch whose outbox rows were kept (the publish
        # raised), so dropping it loses nothing, while a flush could block a failing publisher for seconds.
        for producer in self._kafka_producers.values():
            producer.purge()
        super().close()


class Transport(confluentkafka.Transport):
    """``confluentkafka://host:port`` for :class:`~ecotone_django.channels.celery.CeleryChannel`."""

    Channel = Channel
