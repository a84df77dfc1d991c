"""The CeleryChannel on real RabbitMQ and Redis, proven with real worker processes.

What every channel guarantees — commit/rollback, redelivery after a killed worker, duplicates handled
once, dead letters, ordering, delays — is the transport contract, run on RabbitMQ and Redis (and the
database, SQS and Kafka) in ``tests/contract``. This module keeps what is particular to the brokers:
a sender killed between commit and publish, broker outages, a queue deleted behind the publisher's
back, pickles refused unread, a real Celery worker, retries held in the outbox, and measurements.

Every test here commits for real (``transaction=True``) and runs ``manage.py consume_channel`` (or
``relay_outbox``, or a real ``celery worker``) as separate processes; crashes are ``kill -9``; outages
stop the real broker. They run only in the PostgreSQL run of the suite (see ``broker_fixtures``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from kombu import Connection

from ecotone_django import command_bus
from ecotone_django.channels import channels
from ecotone_django.channels.celery import JSON, TASK_NAME, task_message
from ecotone_django.channels.celery.publisher import Publisher
from ecotone_django.clock import clock, now
from ecotone_django.messages import Envelope
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage
from ecotone_django.outbox import PUBLISH_LEASE, Relay
from ecotone_django.worker import Worker
from tests.helpers.django_compat import savepoint_create
from tests.helpers.processes import ManagedProcess, spawn_manage, wait_for
from tests.integration.broker_fixtures import (
    delete,
    get_one,
    publish_raw,
    queue_depth,
    rabbit_outage,
    rabbit_queue,
    rabbit_url,
    redis_outage,
    redis_queue,
    redis_url,
    spawn_celery_worker,
)
from tests.integration.conftest import ALL_DATABASES, stats_of, worker_env
from tests.testapp.messaging import FlakyOnRabbit, RecordOnRabbit, RecordOnRedis
from tests.testapp.models import Record

__all__ = ["rabbit_queue", "redis_queue"]  # fixtures used below

pytestmark = [pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)]

TENANT = "big_corp"  # a dedicated tenant database: messages and effects live in ``big_corp``


class Rollback(Exception):
    pass


def records(name: str, alias: str = TENANT) -> int:
    return Record.objects.using(alias).filter(name=name).count()


def anywhere(name: str) -> int:
    return sum(records(name, alias) for alias in ALL_DATABASES)


def send_rabbit(name: str, tenant: str = TENANT) -> None:
    command_bus.send(RecordOnRabbit(name), metadata={"tenant": tenant})


def handled(name: str, count: int = 1, alias: str = TENANT) -> Callable[[], bool]:
    return lambda: records(name, alias) >= count


def assert_each_once(alias: str, prefix: str, expected: int) -> None:
    counts = dict(
        Record.objects.using(alias)
        .filter(name__startswith=prefix)
        .values_list("name")
        .annotate(n=Count("id"))
        .values_list("name", "n")
    )
    assert len(counts) == expected, f"{expected - len(counts)} message(s) never handled"
    assert set(counts.values()) == {1}, {name: n for name, n in counts.items() if n != 1}


def send_redis(name: str, tenant: str = TENANT) -> None:
    command_bus.send(RecordOnRedis(name), metadata={"tenant": tenant})


def send_during_outage(send: Callable[[str], None], caplog: pytest.LogCaptureFixture) -> None:
    """50 sends while the broker is down: each returns at once, the rows wait in the outbox, one warning."""
    started = time.monotonic()
    for i in range(50):
        send(f"outage-{i:02}")
    sending = time.monotonic() - started
    assert sending < 10, f"sends stalled while the broker was down: {sending:.1f} s for 50"
    assert OutboxMessage.objects.using(TENANT).count() == 50
    assert len(outage_warnings(caplog, "failed")) == 1, [r.getMessage() for r in caplog.records]


def assert_all_arrive_once_after_the_outage(proc: ManagedProcess) -> None:
    wait_for(
        lambda: Record.objects.using(TENANT).filter(name__startswith="outage-").count() >= 50,
        timeout=90,
        message="all 50 messages to be relayed and handled after the outage",
    )
    assert proc.stop() == 0
    assert_each_once(TENANT, "outage-", 50)
    assert not OutboxMessage.objects.using(TENANT).exists()


def outage_warnings(caplog: pytest.LogCaptureFixture, fragment: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ecotone_django.outbox" and fragment in r.getMessage()]


# -- 1. the sender dies between commit and publish ------------------------------------------------------


@pytest.mark.rabbitmq
def test_a_sender_killed_between_commit_and_publish_is_relayed(rabbit_queue, worker):
    url = rabbit_url()
    sender = spawn_manage("send_and_die", "orphan", "--tenant", TENANT, env=worker_env())
    assert sender.wait(60) == -signal.SIGKILL, sender.output_tail()
    row = OutboxMessage.objects.using(TENANT).get()
    assert (row.channel, row.handler) == ("rabbit", "tests.testapp.messaging.record_on_rabbit")
    assert queue_depth(url, rabbit_queue) == 0, "the fast path must not have run"

    # The sender publishes without locking the row: for PUBLISH_LEASE the relay leaves it to the sender ...
    assert row.created_at < row.available_at <= row.created_at + PUBLISH_LEASE
    relay = spawn_manage("relay_outbox", "--once", env=worker_env())
    assert relay.wait(60) == 0, relay.output_tail()
    assert "relayed 0" in relay.output()
    # ... and publishes it once the lease has run out.
    relay = spawn_manage("relay_outbox", env=worker_env())
    wait_for(lambda: queue_depth(url, rabbit_queue) == 1, timeout=30, message="the relay to publish the orphan")
    assert relay.stop() == 0
    assert not OutboxMessage.objects.using(TENANT).exists()
    assert queue_depth(url, rabbit_queue) == 1

    proc = worker("rabbit", "--no-relay")
    wait_for(handled("orphan"), message="the orphaned message to be handled")
    assert proc.stop() == 0
    assert stats_of(proc.output())["handled"] == 1
    assert records("orphan") == 1


# -- 2. broker outages: the outbox holds the messages -------------------------------------------------


@pytest.mark.rabbitmq
def test_rabbitmq_down_sends_succeed_and_everything_arrives_once_it_is_back(rabbit_queue, worker, caplog):
    caplog.set_level(logging.WARNING, logger="ecotone_django.outbox")
    proc = worker("rabbit")
    send_rabbit("before")  # this process now keeps a publishing connection, which the outage breaks
    wait_for(handled("before"), message="the worker to handle a first message")
    caplog.clear()

    with rabbit_outage():
        send_during_outage(send_rabbit, caplog)

    assert_all_arrive_once_after_the_outage(proc)
    # With no relay running any more, a new send reaches the queue only through the sender's own fast path.
    send_rabbit("after")
    assert queue_depth(rabbit_url(), rabbit_queue) == 1
    assert outage_warnings(caplog, "works again"), "the fast path did not recover"


@pytest.mark.redis
def test_redis_down_sends_succeed_and_everything_arrives_once_it_is_back(redis_queue, worker, caplog):
    caplog.set_level(logging.WARNING, logger="ecotone_django.outbox")
    proc = worker("redis")
    command_bus.send(RecordOnRedis("before"), metadata={"tenant": TENANT})
    wait_for(handled("before"), message="the worker to handle a first message")
    caplog.clear()

    # Redis keeps nothing on disk: it is stopped and started again while the messages wait in the outbox.
    with redis_outage():
        send_during_outage(send_redis, caplog)

    assert_all_arrive_once_after_the_outage(proc)
    send_redis("after")
    assert queue_depth(redis_url(), redis_queue) == 1
    assert outage_warnings(caplog, "works again"), "the fast path did not recover"


@pytest.mark.rabbitmq
def test_a_queue_deleted_behind_the_publishers_back_loses_nothing(rabbit_queue, caplog):
    caplog.set_level(logging.WARNING, logger="ecotone_django.outbox")
    url = rabbit_url()
    send_rabbit("first")  # this process keeps a publishing connection with the queue declared on it
    delete(url, rabbit_queue)
    send_rabbit("second")  # unroutable now: returned by the broker, so published again on a new connection
    assert queue_depth(url, rabbit_queue) == 1
    with get_one(url, rabbit_queue) as message:
        assert Envelope.decode(json.loads(message.body)[0][0]).payload == {"name": "second"}
    assert not OutboxMessage.objects.using(TENANT).exists()
    assert not outage_warnings(caplog, "failed"), "the retry on a new connection should have been silent"


@pytest.mark.rabbitmq
def test_an_autocommit_send_publishes_first_and_writes_a_row_only_if_the_broker_is_down(rabbit_queue):
    url = rabbit_url()
    with CaptureQueriesContext(connections[TENANT]) as queries:
        send_rabbit("confirmed")
    # No transaction to be atomic with: confirmed by the broker, the message never touches the outbox.
    assert [q["sql"] for q in queries.captured_queries] == []
    assert queue_depth(url, rabbit_queue) == 1
    assert not OutboxMessage.objects.using(TENANT).exists()

    with transaction.atomic(using=TENANT):  # in a transaction the outbox row is written, published on commit
        send_rabbit("in a transaction")
        assert OutboxMessage.objects.using(TENANT).count() == 1
        assert queue_depth(url, rabbit_queue) == 1
    assert queue_depth(url, rabbit_queue) == 2
    assert not OutboxMessage.objects.using(TENANT).exists()

    with rabbit_outage():
        with CaptureQueriesContext(connections[TENANT]) as queries:
            send_rabbit("unconfirmed")
        # Not on the broker: send() returned only after a plain (flushed) commit of the row, due at once.
        [insert] = [q["sql"] for q in queries.captured_queries]
        assert insert.startswith("INSERT INTO") and "synchronous_commit" not in insert
        [row] = OutboxMessage.objects.using(TENANT).all()
        assert row.available_at <= now()
    assert Relay([TENANT]).run_once() == 1, "the relay publishes it as soon as the broker is back"
    assert not OutboxMessage.objects.using(TENANT).exists()
    assert queue_depth(url, rabbit_queue) == 3


@pytest.mark.rabbitmq
def test_rows_committed_together_are_published_as_one_batch_and_looked_up_only_after_a_rollback(rabbit_queue):
    def outbox_statements(block: Callable[[], None]) -> list[str]:
        with CaptureQueriesContext(connections[TENANT]) as queries, transaction.atomic(using=TENANT):
            block()
        return [q["sql"].split()[0] for q in queries.captured_queries if "ecotone_outbox" in q["sql"]]

    def three() -> None:
        for name in ("one", "two", "three"):
            send_rabbit(name)

    # Nothing rolled back: the rows are known to be committed; one publish, one DELETE for the batch.
    assert outbox_statements(three) == ["INSERT", "INSERT", "INSERT", "DELETE"]
    assert queue_depth(rabbit_url(), rabbit_queue) == 3

    def with_a_rollback() -> None:
        send_rabbit("kept")
        savepoint = savepoint_create(using=TENANT)
        send_rabbit("rolled back")
        transaction.savepoint_rollback(savepoint, using=TENANT)

    # A rollback after the rows were written: each is looked up before it is published (the second is gone).
    assert outbox_statements(with_a_rollback) == ["INSERT", "INSERT", "SELECT", "DELETE", "SELECT"]
    assert queue_depth(rabbit_url(), rabbit_queue) == 4
    assert not OutboxMessage.objects.using(TENANT).exists()


@pytest.mark.rabbitmq
def test_a_message_published_on_the_amqp_channel_is_the_one_kombus_producer_would_send(rabbit_queue):
    """The relay publishes on py-amqp's channel directly; the broker must get what kombu's Producer sends."""
    channel = channels["rabbit"]
    rows = _outbox_rows(0, 2)
    for row in rows:
        row.pk = 1
    got = []
    with Connection(rabbit_url(), connect_timeout=5) as conn:
        fetch = conn.default_channel.basic_get
        for direct, row in zip((True, False), rows, strict=True):
            publisher = Publisher(channel.connection(connect_timeout=5), channel.queue, channel.profile, 5)
            try:
                assert publisher.direct, "py-amqp on RabbitMQ takes the direct path"
                publisher.direct = direct
                publisher.publish([row], time.monotonic() + 5)
            finally:
                publisher.close(5)
            message = wait_for(lambda: fetch(rabbit_queue, no_ack=True), 10, message="a message")
            got.append(message)
    (direct_message, kombu_message), (direct_row, kombu_row) = got, rows
    assert direct_message.properties.pop("correlation_id").startswith(direct_row.message_id)
    assert kombu_message.properties.pop("correlation_id").startswith(kombu_row.message_id)
    direct_headers = direct_message.properties.pop("application_headers")
    kombu_headers = kombu_message.properties.pop("application_headers")
    assert direct_message.properties == kombu_message.properties
    assert direct_message.properties["delivery_mode"] == 2 and direct_message.properties["content_type"] == JSON
    assert direct_headers == task_message(direct_row)[0] and kombu_headers == task_message(kombu_row)[0]
    assert direct_message.body == task_message(direct_row)[1] and kombu_message.body == task_message(kombu_row)[1]


@pytest.mark.rabbitmq
def test_the_relay_takes_rows_in_one_statement_and_defers_the_flush_only_of_its_own_transaction(rabbit_queue):
    OutboxMessage.objects.using(TENANT).bulk_create(_outbox_rows(0, 3))
    with CaptureQueriesContext(connections[TENANT]) as queries:
        assert Relay([TENANT]).run_once() == 3
    # PostgreSQL: locked, deleted and returned by one statement; its commit does not wait for the WAL flush.
    [take] = [q["sql"] for q in queries.captured_queries if "'rabbit'" in q["sql"]]
    assert take.startswith("DELETE") and "SKIP LOCKED" in take and "synchronous_commit" in take
    assert queue_depth(rabbit_url(), rabbit_queue) == 3 and not OutboxMessage.objects.using(TENANT).exists()

    OutboxMessage.objects.using(TENANT).bulk_create(_outbox_rows(3, 1))
    with transaction.atomic(using=TENANT):  # inside the caller's transaction: the caller's commit is flushed
        assert Relay([TENANT]).run_once() == 1
        with connections[TENANT].cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
    assert queue_depth(rabbit_url(), rabbit_queue) == 4


# -- 3. garbage on the queue ----------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_garbage_goes_to_dead_letters_and_the_worker_keeps_going(rabbit_queue, worker, tmp_path):
    url = rabbit_url()
    unpickled = tmp_path / "unpickled"
    bomb = pickle.dumps(_Bomb(str(unpickled)))
    task = {"task": TASK_NAME, "id": "x", "lang": "py"}
    publish_raw(url, rabbit_queue, b"\xff\x00garbage", headers=task)
    publish_raw(url, rabbit_queue, bomb, headers=task, content_type="application/x-python-serialize")
    publish_raw(url, rabbit_queue, json.dumps({"hello": "world"}))
    publish_raw(url, rabbit_queue, json.dumps([[1, 2], {}, {}]), headers={**task, "task": "someone.else.task"})
    publish_raw(url, rabbit_queue, json.dumps([["{}", "h", "rabbit", 0], {}, {}]), headers=task)

    proc = worker("rabbit", "--no-relay")
    wait_for(
        lambda: DeadLetter.objects.using("default").count() >= 5 or not proc.is_running(),
        message="five dead letters",
    )
    assert proc.is_running(), proc.output_tail()
    send_rabbit("good")
    wait_for(handled("good"), message="a good message after the garbage")
    assert proc.is_running()
    assert not unpickled.exists(), "a pickle was loaded"

    reasons = list(DeadLetter.objects.using("default").order_by("id").values_list("reason", "channel"))
    assert [channel for _, channel in reasons] == ["rabbit"] * 5
    expected = [
        "task body is not UTF-8 JSON",
        "content type 'application/x-python-serialize' refused",
        "not a Celery task message: no 'task' header",
        "unknown task 'someone.else.task'",
        "undecodable message",
    ]
    for (reason, _), fragment in zip(reasons, expected, strict=True):
        assert fragment in reason, (fragment, reason)
    assert proc.stop() == 0
    assert stats_of(proc.output())["dead"] == 5


class _Bomb:
    """Unpickling this creates a directory: proof that a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (self.path,)


# -- 4. a real Celery worker runs the same messages --------------------------------------------------------


@pytest.mark.rabbitmq
def test_a_celery_worker_runs_the_same_messages(rabbit_queue):
    url = rabbit_url()
    send_rabbit("via-celery")
    assert queue_depth(url, rabbit_queue) == 1
    with spawn_celery_worker("tests.celery_worker_app", rabbit_queue, env=worker_env()) as proc:
        wait_for(handled("via-celery"), timeout=60, message=f"the celery worker to run the task\n{proc.output_tail()}")
        wait_for(lambda: queue_depth(url, rabbit_queue) == 0, message="the task to be acked")
        assert "succeeded" in proc.output() and "'handled'" in proc.output(), proc.output_tail()
        # The task is acked: stop at once. (Celery's event loop, without heartbeats, only notices SIGTERM at
        # its next timer, ~10 s later — a Celery trait, nothing this test is about.)
        proc.kill9()
    assert records("via-celery") == 1
    assert InboxEntry.objects.using(TENANT).filter(handler="tests.testapp.messaging.record_on_rabbit").count() == 1
    assert not DeadLetter.objects.using(TENANT).exists()


# -- 5. retries wait in the database, not in the broker -----------------------------------------------------


@pytest.mark.rabbitmq
def test_retries_on_a_broker_channel_wait_in_the_outbox_and_succeed_once(rabbit_queue, worker, tmp_path):
    url = rabbit_url()
    attempts = tmp_path / "attempts"
    flaky = FlakyOnRabbit("flaky", str(attempts), failures=2)
    slow_backoff = {"BACKOFF_SECONDS": 60, "MULTIPLIER": 1, "MAX_BACKOFF_SECONDS": 60, "MAX_ATTEMPTS": 3, "JITTER": 0}
    with override_settings(ECOTONE={**settings.ECOTONE, "RETRY": slow_backoff}):
        command_bus.send(flaky, metadata={"tenant": TENANT})
        assert queue_depth(url, rabbit_queue) == 1
        # The first attempt, in this process: it fails and its retry is stored, due in 60 s.
        stats = Worker(["rabbit"], limit=1, relay=False).run()
        assert stats.retried == 1
        retry = OutboxMessage.objects.using(TENANT).get()
        assert retry.attempts == 1 and "attempt 1 fails on purpose" in retry.last_error
        assert retry.available_at > now() + timedelta(seconds=50)
        assert queue_depth(url, rabbit_queue) == 0, "the retry must wait in the database, not on the queue"
        assert Relay([TENANT]).run_once() == 0, "not due yet"

        clock.advance(timedelta(seconds=61))
        assert Relay([TENANT]).run_once() == 1
        clock.reset()
        with get_one(url, rabbit_queue) as message:
            assert message.headers.get("eta") is None and message.headers.get("expires") is None
            assert message.content_type == JSON
            args = json.loads(message.body)[0]
            assert args[1:] == ["tests.testapp.messaging.flaky_on_rabbit", "rabbit", 1]
            assert Envelope.decode(args[0]).payload["name"] == "flaky"
            # back on the queue for the worker process below
    channels.reset()

    # Attempt 2 fails again (retried at once with the suite's zero backoff), attempt 3 succeeds.
    proc = worker("rabbit")
    wait_for(handled("flaky"), message="the third attempt to succeed")
    assert proc.stop() == 0
    assert attempts.read_text() == "3"
    assert records("flaky") == 1
    assert not DeadLetter.objects.using(TENANT).exists()
    assert not OutboxMessage.objects.using(TENANT).exists()


# -- measurements (printed, not asserted) ------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_measure_relay_publish_and_consume_rates(rabbit_queue, worker):
    """Relay vs raw kombu publishing (same messages, interleaved halves: the machine is shared), then consuming."""
    url = rabbit_url()
    count, consumed, halves = 2000, 1000, 2
    relay_seconds = raw_seconds = 0.0
    scratch = f"{rabbit_queue}_raw"
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        channel.queue_declare(queue=scratch, durable=True, auto_delete=False)
        producer = conn.Producer(channel)
        try:
            for half in range(halves):
                rows = _outbox_rows(half * count // halves, count // halves)
                OutboxMessage.objects.using(TENANT).bulk_create(rows, batch_size=500)
                started = time.perf_counter()
                assert Relay([TENANT], ["rabbit"]).run_once() == len(rows)
                relay_seconds += time.perf_counter() - started

                messages = [task_message(row) for row in rows]
                started = time.perf_counter()
                for headers, body in messages:
                    producer.publish(
                        body, exchange="", routing_key=scratch, headers=headers, content_type=JSON, delivery_mode=2
                    )
                raw_seconds += time.perf_counter() - started
        finally:
            channel.queue_delete(scratch)
    wait_for(lambda: queue_depth(url, rabbit_queue) == count, timeout=10, message=f"{count} messages on the queue")

    proc = worker("rabbit", "--no-relay")
    wait_for(handled("bench-0000"), timeout=60, message="the first benchmark message")
    started = time.perf_counter()
    wait_for(
        lambda: Record.objects.using(TENANT).filter(name__startswith="bench-").count() >= consumed,
        timeout=120,
        interval=0.02,
        message=f"{consumed} benchmark messages",
    )
    consume_seconds = time.perf_counter() - started
    proc.stop()
    relay_rate, raw_rate = count / relay_seconds, count / raw_seconds
    print(
        f"\nrelay: {relay_rate:,.0f} rows/s ({count} rows in {relay_seconds:.2f} s); "
        f"raw kombu publish with confirms one by one: {raw_rate:,.0f} msg/s; "
        f"ratio relay/raw {relay_rate / raw_rate:.2f}\n"
        f"consume_channel rabbit: {(consumed - 1) / consume_seconds:,.0f} messages/s handled"
    )


def _outbox_rows(first: int, count: int) -> list[OutboxMessage]:
    moment = now()
    rows = []
    for i in range(first, first + count):
        envelope = Envelope("tests.testapp.messaging.RecordOnRabbit", {"name": f"bench-{i:04}"}, {"tenant": TENANT})
        rows.append(
            OutboxMessage(
                message_id=envelope.id,
                channel="rabbit",
                handler="tests.testapp.messaging.record_on_rabbit",
                message_type=envelope.type,
                tenant=TENANT,
                body=envelope.encode(),
                available_at=moment,
                created_at=moment,
            )
        )
    return rows
