"""A RabbitMQ consumer handles the deliveries it holds in one transaction: what that must not change.

* One failing or duplicate message in a batch undoes only its own work; the others commit once.
* Messages that were waiting together are committed together (fewer transactions than messages).
* ``--limit`` stops after exactly that many; what the consumer held beyond it goes back to the queue.
* The window starts at one and stays there for slow handlers, so a second consumer gets the next
  message instead of it waiting behind the first consumer's slow one.

PostgreSQL and RabbitMQ only (as the other broker tests): the batching is the same on every database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connections

from ecotone_django import command_bus
from ecotone_django.models import DeadLetter, OutboxMessage
from tests.helpers.processes import wait_for
from tests.integration.broker_fixtures import (
    get_one,
    publish_raw,
    queue_depth,
    rabbit_queue,
    rabbit_url,
)
from tests.integration.conftest import stats_of
from tests.integration.test_celery_channel import TENANT, assert_each_once, records, send_rabbit
from tests.testapp.messaging import FlakyOnRabbit, SlowOnRabbit

__all__ = ["rabbit_queue"]  # fixtures used below

pytestmark = [pytest.mark.rabbitmq, pytest.mark.django_db(databases="__all__", transaction=True)]


def test_a_batch_commits_together_and_isolates_its_failures(rabbit_queue, worker, tmp_path):
    for i in range(30):
        send_rabbit(f"batch-{i:02}")
        if i == 10:
            command_bus.send(
                FlakyOnRabbit("batch-flaky", str(tmp_path / "attempts"), failures=1), metadata={"tenant": TENANT}
            )
        if i == 20:
            publish_raw(rabbit_url(), rabbit_queue, b"not json", headers={"task": "ecotone_django.handle"})
    assert queue_depth(rabbit_url(), rabbit_queue) == 32

    proc = worker("rabbit")
    wait_for(lambda: records("batch-flaky") == 1, timeout=60, message="the flaky message to succeed on its retry")
    wait_for(lambda: queue_depth(rabbit_url(), rabbit_queue) == 0, message="the queue to drain")
    assert proc.stop() == 0

    assert_each_once(TENANT, "batch-", 31)
    assert (tmp_path / "attempts").read_text() == "2"  # failed once, in its batch; the rest were not re-run
    assert DeadLetter.objects.using("default").filter(reason__contains="not valid JSON").count() == 1
    assert not OutboxMessage.objects.using(TENANT).exists()
    with connections[TENANT].cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT xmin::text) FROM ecotone_inbox WHERE handler = %s",
            ["tests.testapp.messaging.record_on_rabbit"],
        )
        rows, transactions = cursor.fetchone()
    assert rows == 30
    assert transactions < rows / 2, f"{rows} messages in {transactions} transactions: they were not batched"


def test_a_duplicate_delivery_in_a_batch_is_handled_once(rabbit_queue, worker):
    send_rabbit("dup")
    with get_one(rabbit_url(), rabbit_queue) as message:  # the exact bytes, published four times below
        body, headers = message.body, message.headers
        message.ack()
    for _ in range(4):
        publish_raw(rabbit_url(), rabbit_queue, body, headers=headers)
    send_rabbit("dup-after")

    proc = worker("rabbit", "--no-relay")
    wait_for(lambda: records("dup-after") == 1, message="the message after the duplicates")
    wait_for(lambda: queue_depth(rabbit_url(), rabbit_queue) == 0, message="the queue to drain")
    assert proc.stop() == 0
    assert records("dup") == 1
    assert stats_of(proc.output())["duplicates"] == 3


def test_limit_takes_exactly_that_many_and_requeues_the_rest(rabbit_queue, worker):
    for i in range(40):
        send_rabbit(f"limit-{i:02}")
    assert queue_depth(rabbit_url(), rabbit_queue) == 40
    proc = worker("rabbit", "--no-relay", "--limit", "25")
    wait_for(lambda: not proc.is_running(), timeout=60, message="the worker to stop at its limit")
    assert proc.stop() == 0
    assert sum(records(f"limit-{i:02}") for i in range(40)) == 25
    assert queue_depth(rabbit_url(), rabbit_queue) == 15  # back in the queue, none lost
    assert_each_once(TENANT, "limit-", 25)


def test_a_slow_handler_does_not_keep_the_next_message_from_an_idle_consumer(rabbit_queue, worker, tmp_path):
    release = tmp_path / "release"
    first, second = tmp_path / "first-started", tmp_path / "second-started"
    busy = worker("rabbit", "--no-relay")
    for name, started in (("slow-1", first), ("slow-2", second)):
        command_bus.send(SlowOnRabbit(name, str(started), str(release)), metadata={"tenant": TENANT})
    wait_for(first.exists, message="the first slow handler to start")
    # Had the busy consumer taken both, the second would wait for the first; an idle consumer takes it now.
    idle = worker("rabbit", "--no-relay")
    wait_for(second.exists, timeout=30, message="the second slow message to start on the other consumer")
    assert first.read_text() != second.read_text(), "both ran in one process"
    Path(release).write_text("go")
    wait_for(lambda: records("slow-2") == 1 and records("slow-1") == 1, message="both slow messages")
    assert busy.stop() == 0
    assert idle.stop() == 0
