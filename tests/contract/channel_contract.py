"""The transport contract: what every channel backend guarantees, proven with real worker processes.

:class:`ChannelContract` is abstract: a backend's test class subclasses it and says which channel it
tests by returning a :class:`ChannelUnderTest` from ``create_channel()``::

    class TestSqsChannel(ChannelContract):
        def create_channel(self) -> ChannelUnderTest: return SqsChannel()

The contract's handlers (``tests.contract.handlers``) run on the ``contract`` dynamic channel, which
picks the channel under test from the ``channel_under_test`` header, so every backend runs the very same
handlers. Each test commits for real (``transaction=True``) and runs ``manage.py consume_channel`` as
a separate process; crashes are ``kill -9``.

What every backend guarantees:

1. a committed message is delivered; a rolled-back one never leaves the database;
2. a message a killed worker held is delivered again and its effect happens once;
3. the same bytes delivered three times are handled once (the inbox);
4. a message that cannot be handled — bytes that are no message, an unknown task, an undecodable
   envelope, a handler that always fails — ends as a dead letter with its reason, and the worker goes on;
5. ordering as documented for the backend (``ChannelUnderTest.ordered``): FIFO for one consumer where
   the backend keeps order, every message exactly once everywhere;
6. a delayed message waits in the database, not on the broker, and is handled once it is due.
"""

from __future__ import annotations

import abc
import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.db import transaction
from django.db.models import Count

from ecotone_django import command_bus
from ecotone_django.channels import channels
from ecotone_django.channels.celery import JSON, TASK_NAME
from ecotone_django.clock import now
from ecotone_django.messages import Envelope, message_name, uuid7
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage
from tests.contract.handlers import Doomed, Hold, Note
from tests.helpers.django_compat import savepoint_create
from tests.helpers.processes import ManagedProcess, wait_for
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, stats_of
from tests.testapp.models import Record

TENANT = "big_corp"  # a dedicated tenant database: the messages and their effects live in ``big_corp``
NOTE = "tests.contract.handlers.note"
DOOMED = "tests.contract.handlers.doomed"
HEADER = "channel_under_test"


def count(model: Any, **filters: Any) -> int:
    return sum(model.objects.using(alias).filter(**filters).count() for alias in ALL_DATABASES)


def envelope_for(message: object, channel: str) -> Envelope:
    return Envelope(message_name(type(message)), {"name": message.name}, {"tenant": TENANT, HEADER: channel})  # type: ignore[attr-defined]


def unsaved_row(envelope: Envelope, handler: str, channel: str) -> OutboxMessage:
    moment = now()
    return OutboxMessage(
        message_id=envelope.id,
        channel=channel,
        handler=handler,
        message_type=envelope.type,
        tenant=TENANT,
        body=envelope.encode(),
        available_at=moment,
        created_at=moment,
    )


class ChannelUnderTest(abc.ABC):
    """One concrete channel as the contract drives it."""

    #: The channel's name in the test settings.
    name: ClassVar[str]
    #: A fixture the channel needs (its queue, its server), requested before the test runs.
    fixture: ClassVar[str | None] = None
    #: One consumer handles messages in the order they were committed.
    ordered: ClassVar[bool] = True

    @property
    def is_broker(self) -> bool:
        return channels[self.name].is_broker

    @abc.abstractmethod
    def waiting(self) -> int:
        """Messages a worker could take from the channel right now."""

    @abc.abstractmethod
    def deliver_copies(self, envelope: Envelope, handler: str, copies: int) -> None:
        """Put ``copies`` deliveries of exactly the same message on the channel (a duplicated publish)."""

    @abc.abstractmethod
    def poison(self) -> list[str]:
        """Put messages on the channel that no handler can take; return the reasons their dead letters give."""


class DatabaseChannelUnderTest(ChannelUnderTest):
    name = "db"

    def waiting(self) -> int:
        return count(OutboxMessage, channel=self.name, available_at__lte=now())

    def deliver_copies(self, envelope: Envelope, handler: str, copies: int) -> None:
        rows = [unsaved_row(envelope, handler, self.name) for _ in range(copies)]
        OutboxMessage.objects.using(TENANT).bulk_create(rows)

    def poison(self) -> list[str]:
        moment = now()
        unknown = Envelope(message_name(Note), {"name": "orphan"}, {"tenant": TENANT})
        for body, handler in (("{not json", NOTE), (unknown.encode(), "tests.contract.handlers.no_such_handler")):
            OutboxMessage.objects.using(TENANT).create(
                message_id=str(uuid7()),
                channel=self.name,
                handler=handler,
                message_type="",
                tenant=TENANT,
                body=body,
                available_at=moment,
                created_at=moment,
            )
        return ["undecodable message", "no handler"]


class BrokerChannelUnderTest(ChannelUnderTest):
    """A CeleryChannel: raw messages go on its queue through kombu, with the channel's own transport."""

    def connection(self) -> Any:
        return channels[self.name].connection()  # type: ignore[attr-defined]

    @property
    def queue(self) -> str:
        return str(channels[self.name].queue_name)  # type: ignore[attr-defined]

    def publish_raw(self, body: bytes | str, headers: dict[str, Any] | None, content_type: str = JSON) -> None:
        with self.connection() as conn:
            conn.Producer().publish(
                body,
                exchange="",
                routing_key=self.queue,
                headers=dict(headers or {}),
                content_type=content_type,
                content_encoding="utf-8",
                delivery_mode=2,
            )
            wait = getattr(conn.default_channel, "wait_for_deliveries", None)
            if wait is not None:
                wait(10)

    def waiting(self) -> int:
        with self.connection() as conn:
            channel = conn.default_channel
            if hasattr(channel, "_size"):  # kombu's virtual transports (Redis, SQS): the list or queue size
                return int(channel._size(self.queue))
            return int(channel.queue_declare(queue=self.queue, passive=True).message_count)

    def deliver_copies(self, envelope: Envelope, handler: str, copies: int) -> None:
        row = unsaved_row(envelope, handler, self.name)
        channels[self.name].publish([row] * copies)  # type: ignore[attr-defined]

    def poison(self) -> list[str]:
        task = {"task": TASK_NAME, "id": "poison", "lang": "py"}
        self.publish_raw(b"\xff\x00garbage", task)
        self.publish_raw(json.dumps({"hello": "world"}), None)
        self.publish_raw(json.dumps([[1, 2], {}, {}]), {**task, "task": "someone.else.task"})
        self.publish_raw(json.dumps([["{}", NOTE, self.name, 0], {}, {}]), task)
        return [
            "task body is not UTF-8 JSON",
            "not a Celery task message: no 'task' header",
            "unknown task 'someone.else.task'",
            "undecodable message",
        ]


class RabbitMQChannelUnderTest(BrokerChannelUnderTest):
    name = "rabbit"
    fixture = "rabbit_queue"


class RedisChannelUnderTest(BrokerChannelUnderTest):
    name = "redis"
    fixture = "redis_queue"


class SqsChannelUnderTest(BrokerChannelUnderTest):
    """A standard SQS queue keeps no order: the contract checks every message arrives once."""

    name = "sqs"
    fixture = "sqs_queue"
    ordered = False

    def poison(self) -> list[str]:
        reasons = super().poison()
        with self.connection() as conn:  # not a kombu message at all: plain text sent by some other program
            channel = conn.default_channel
            channel.sqs().send_message(QueueUrl=channel._new_queue(self.queue), MessageBody="plain text, not kombu")
        return [*reasons, "content type None refused"]


class KafkaChannelUnderTest(BrokerChannelUnderTest):
    """Kafka keeps order per partition; the channel keys records by tenant, so one tenant's messages keep it."""

    name = "kafka"
    fixture = "kafka_queue"

    def waiting(self) -> int:
        """Records after the group's committed offset, counted by reading them up to the partition's end.

        Not ``high watermark - committed``: Tansu reports the high watermark of a multi-record batch as its
        first offset + 1, so the difference undercounts whatever was produced in one batch.
        """
        from confluent_kafka import Consumer, KafkaError, TopicPartition

        with self.connection() as conn:
            channel = conn.default_channel
            channel._new_queue(self.queue)
            config = {**channel.common_config, "enable.auto.commit": False, "enable.partition.eof": True}
            group = Consumer({**config, "group.id": f"{self.queue}-consumer-group"})
            peek = Consumer({**config, "group.id": f"{self.queue}-peek"})
            try:
                waiting = 0
                for partition in range(channel.partitions(self.queue)):
                    [committed] = group.committed([TopicPartition(self.queue, partition)], timeout=10)
                    peek.assign([TopicPartition(self.queue, partition, max(committed.offset, 0))])
                    while True:
                        record = peek.poll(10)
                        assert record is not None, f"no end of partition {partition} within 10 s"
                        if record.error() is None:
                            waiting += 1
                        elif record.error().code() == KafkaError._PARTITION_EOF:
                            break
                return waiting
            finally:
                group.close()
                peek.close()

    def poison(self) -> list[str]:
        from confluent_kafka import Producer

        reasons = super().poison()
        with self.connection() as conn:  # a record some other producer wrote: not kombu's JSON at all
            producer = Producer(conn.default_channel.common_config)
            producer.produce(self.queue, b"\x00 not kombu")
            assert producer.flush(10) == 0
        return [*reasons, "content type None refused"]


def _records(prefix: str) -> dict[str, int]:
    rows = Record.objects.using(TENANT).filter(name__startswith=prefix).values_list("name").annotate(n=Count("id"))
    return dict(rows.values_list("name", "n"))


def _wait(predicate: Any, what: str, *procs: ManagedProcess, timeout: float = 60) -> None:
    try:
        wait_for(predicate, timeout=timeout, message=what)
    except AssertionError as exc:
        outputs = "\n".join(f"--- {p!r} ---\n{p.output_tail()}" for p in procs)
        raise AssertionError(f"{exc}\n{outputs}") from None


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
class ChannelContract(abc.ABC):
    """Every channel backend passes these tests; a backend's class only implements ``create_channel``."""

    @abc.abstractmethod
    def create_channel(self) -> ChannelUnderTest:
        """The channel under test."""

    @pytest.fixture
    def channel(self, request: pytest.FixtureRequest) -> ChannelUnderTest:
        under_test = self.create_channel()
        if under_test.fixture is not None:
            request.getfixturevalue(under_test.fixture)
        return under_test

    def send(self, channel: ChannelUnderTest, message: object, **metadata: Any) -> None:
        command_bus.send(message, metadata={"tenant": TENANT, HEADER: channel.name, **metadata})

    # -- 1. commit / rollback ---------------------------------------------------------------------------

    def test_a_committed_message_is_delivered_and_a_rolled_back_one_never_leaves(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        with pytest.raises(RuntimeError, match="abort"), transaction.atomic(using=TENANT):
            self.send(channel, Note("rolled-back"))
            assert OutboxMessage.objects.using(TENANT).count() == 1  # written in the transaction...
            raise RuntimeError("abort")
        assert count(OutboxMessage) == 0  # ...and gone with it
        assert channel.waiting() == 0, "a rolled-back message reached the channel"

        with transaction.atomic(using=TENANT):
            self.send(channel, Note("committed"))
            if channel.is_broker:
                assert channel.waiting() == 0, "published before the commit"
        assert channel.waiting() == 1, "the committed message is not on the channel"

        proc = worker(channel.name)
        _wait(lambda: _records("committed"), "the committed message to be handled", proc)
        self.send(channel, Note("marker"))  # sent last: once it is handled, the channel has nothing older
        _wait(lambda: _records("marker"), "the marker to be handled", proc)
        assert proc.stop() == 0
        assert stats_of(proc.output())["handled"] == 2
        assert _records("committed") == {"committed": 1}
        assert count(Record, name="rolled-back") == 0
        assert channel.waiting() == 0

    def test_a_message_sent_in_a_rolled_back_savepoint_never_leaves_and_its_siblings_do(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        with transaction.atomic(using=TENANT):
            self.send(channel, Note("before"))
            with contextlib.suppress(RuntimeError), transaction.atomic(using=TENANT):
                self.send(channel, Note("in an atomic savepoint"))
                raise RuntimeError("abort the inner block")
            savepoint = savepoint_create(using=TENANT)  # not an atomic() block: Django drops no hook
            self.send(channel, Note("in a manual savepoint"))
            transaction.savepoint_rollback(savepoint, using=TENANT)
            self.send(channel, Note("after"))
        assert channel.waiting() == 2, "a rolled-back message reached the channel, or a committed one did not"

        proc = worker(channel.name)
        _wait(lambda: len(_records("")) >= 2, "the two committed messages to be handled", proc)
        self.send(channel, Note("marker"))  # sent last: once it is handled, the channel has nothing older
        _wait(lambda: _records("marker"), "the marker to be handled", proc)
        assert proc.stop() == 0
        assert _records("") == {"before": 1, "after": 1, "marker": 1}

    # -- 2. a worker killed mid-handler -------------------------------------------------------------------

    def test_a_message_a_killed_worker_held_is_delivered_again_and_handled_once(
        self, channel: ChannelUnderTest, worker: WorkerFactory, tmp_path: Path
    ) -> None:
        started, release = tmp_path / "started", tmp_path / "release"
        first = worker(channel.name, "--no-relay")
        self.send(channel, Hold("held", str(started), str(release)))
        _wait(started.exists, "the first worker to enter the handler", first)
        assert started.read_text() == str(first.pid)
        assert first.kill9() == -9
        assert count(Record, name="held") == 0, "the killed worker's transaction must not have committed"
        assert count(InboxEntry) == 0

        started.unlink()
        release.touch()  # the next run of the handler finishes at once
        second = worker(channel.name, "--no-relay")
        _wait(lambda: count(Record, name="held") == 1, "the message to be delivered again and handled", second)
        assert started.read_text() == str(second.pid), "not delivered again to the new worker"
        assert second.stop() == 0
        assert stats_of(second.output())["handled"] == 1
        assert Record.objects.using(TENANT).filter(name="held").count() == 1
        assert InboxEntry.objects.using(TENANT).count() == 1

    # -- 3. duplicates --------------------------------------------------------------------------------------

    def test_the_same_bytes_delivered_three_times_are_handled_once(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        envelope = envelope_for(Note("dup"), channel.name)
        channel.deliver_copies(envelope, NOTE, 3)
        assert channel.waiting() == 3, channel.waiting()

        proc = worker(channel.name, "--limit", "3", "--no-relay", ready=False)
        assert proc.wait(90) == 0, proc.output_tail()
        stats = stats_of(proc.output())
        assert (stats["handled"], stats["duplicates"]) == (1, 2), stats
        assert _records("dup") == {"dup": 1}
        assert list(InboxEntry.objects.using(TENANT).values_list("key", "handler")) == [(envelope.id, NOTE)]
        assert channel.waiting() == 0

    # -- 4. poison ------------------------------------------------------------------------------------------

    def test_messages_no_handler_can_take_become_dead_letters_and_the_worker_goes_on(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        from ecotone_django.conf import get_config

        reasons = channel.poison()
        self.send(channel, Doomed("doomed"))  # fails every attempt: retried through the database, then dead
        expected = len(reasons) + 1
        proc = worker(channel.name)
        _wait(lambda: count(DeadLetter) >= expected or not proc.is_running(), f"{expected} dead letters", proc)
        assert proc.is_running(), proc.output_tail()
        self.send(channel, Note("good"))
        _wait(lambda: _records("good"), "a good message after the bad ones", proc)
        assert proc.stop() == 0

        letters = [letter for alias in ALL_DATABASES for letter in DeadLetter.objects.using(alias).order_by("id")]
        assert len(letters) == expected, [letter.reason for letter in letters]
        assert {letter.channel for letter in letters} == {channel.name}
        for fragment in reasons:
            assert any(fragment in letter.reason for letter in letters), (fragment, [x.reason for x in letters])
        [doomed] = [letter for letter in letters if letter.handler == DOOMED]
        max_attempts = get_config().retry.max_attempts
        assert doomed.attempts == max_attempts and "doomed fails on purpose" in doomed.reason, doomed.reason
        assert doomed.tenant == TENANT and DeadLetter.objects.using(TENANT).filter(handler=DOOMED).exists()
        assert count(OutboxMessage) == 0

    # -- 5. ordering ----------------------------------------------------------------------------------------

    def test_one_consumer_gets_messages_in_the_documented_order_each_once(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        names = [f"seq-{i:02}" for i in range(20)]
        with transaction.atomic(using=TENANT):
            for name in names:
                self.send(channel, Note(name))
        proc = worker(channel.name)
        _wait(lambda: len(_records("seq-")) == len(names), "every message to be handled", proc)
        assert proc.stop() == 0
        handled = list(Record.objects.using(TENANT).filter(name__startswith="seq-").order_by("id").values_list("name"))
        handled_names = [name for (name,) in handled]
        assert sorted(handled_names) == names, "a message was lost or handled twice"
        if channel.ordered:
            assert handled_names == names

    # -- 6. delays ------------------------------------------------------------------------------------------

    def test_a_delayed_message_waits_in_the_database_and_is_handled_once_due(
        self, channel: ChannelUnderTest, worker: WorkerFactory
    ) -> None:
        proc = worker(channel.name)
        self.send(channel, Note("later"), delay=timedelta(seconds=2))
        row = OutboxMessage.objects.using(TENANT).get()
        assert row.available_at > now() + timedelta(seconds=1)
        assert channel.waiting() == 0, "a delayed message must wait in the database, not on the channel"
        _wait(lambda: _records("later"), "the delayed message to be handled once due", proc)
        handled_at = Record.objects.using(TENANT).get(name="later").created_at
        assert handled_at >= row.available_at, f"handled at {handled_at}, due at {row.available_at}"
        assert count(OutboxMessage) == 0
        assert proc.stop() == 0
