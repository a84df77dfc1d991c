"""The rollback contract, with Django's private transaction state and without it (``ecotone_django.transactions``).

Every test runs in both modes of ``ECOTONE["TRANSACTION_INTERNALS"]``: ``"auto"`` (on a supported
Django: the hook list and the late, bulk-released savepoints) and ``"avoid"`` (``atomic()`` per
message, and committed rows looked up before they are published). Either way:

* a rolled-back ``atomic()`` block sends nothing;
* a rolled-back manual savepoint (``savepoint()`` / ``savepoint_rollback()``) publishes nothing it dropped;
* a handler failure inside a batch undoes only that message: its rows, its ``on_commit`` hooks, its sends.

The messages go to the real RabbitMQ; the savepoints are the database's own, so this runs on every engine.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings
from kombu import Connection, Queue

from ecotone_django import command_bus, transactions
from ecotone_django.channels import channels
from ecotone_django.clock import now
from ecotone_django.exceptions import ConfigurationError
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import OutboxMessage
from ecotone_django.worker import Worker
from tests.helpers.django_compat import savepoint_create
from tests.helpers.services import require
from tests.integration.broker_fixtures import delete, purge, queue_name, rabbit_url
from tests.testapp.messaging import AlwaysFails, RecordAsync, RecordOnRabbit
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases="__all__", transaction=True)

TENANT = "big_corp"


class Boom(Exception):
    pass


@pytest.fixture(params=["auto", "avoid"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    with override_settings(ECOTONE={**settings.ECOTONE, "TRANSACTION_INTERNALS": request.param}):
        yield request.param


@pytest.fixture
def rabbit(mode: str) -> Iterator[str]:
    """The ``rabbit`` channel's queue, empty; deleted afterwards."""
    require("rabbitmq")
    name = queue_name("rabbit")
    purge(rabbit_url(), name)
    yield name
    channels.reset()
    delete(rabbit_url(), name)


def published(queue: str) -> list[str]:
    """Take every message off ``queue``: the names the RecordOnRabbit commands carry, in queue order."""
    names = []
    with Connection(rabbit_url(), connect_timeout=5) as conn:
        simple = conn.SimpleQueue(Queue(queue, durable=True), no_ack=True)
        try:
            while True:
                try:
                    message = simple.get(block=True, timeout=0.5)
                except simple.Empty:
                    break
                envelope = Envelope.decode(json.loads(message.body)[0][0])
                names.append(envelope.payload["name"])
        finally:
            simple.close()
    return names


def send(name: str) -> None:
    command_bus.send(RecordOnRabbit(name), metadata={"tenant": TENANT})


def test_the_mode_is_the_one_asked_for(mode: str) -> None:
    assert transactions.use_internals(TENANT) is (mode == "auto")


def test_a_rolled_back_atomic_block_sends_nothing(rabbit: str) -> None:
    with pytest.raises(Boom), transaction.atomic(using=TENANT):
        send("whole transaction rolled back")
        raise Boom
    with transaction.atomic(using=TENANT):
        send("kept")
        with pytest.raises(Boom), transaction.atomic(using=TENANT):
            send("inner block rolled back")
            raise Boom
        send("kept too")
    assert published(rabbit) == ["kept", "kept too"]
    assert not OutboxMessage.objects.using(TENANT).exists()


def test_a_rolled_back_manual_savepoint_publishes_nothing_it_dropped(rabbit: str) -> None:
    with transaction.atomic(using=TENANT):
        send("before")
        savepoint = savepoint_create(using=TENANT)
        send("dropped")
        transaction.savepoint_rollback(savepoint, using=TENANT)
        send("after")
    assert published(rabbit) == ["before", "after"]
    assert not OutboxMessage.objects.using(TENANT).exists()


def _message(name: str, ran: list[str], *, fail: bool) -> None:
    """One message of a batch: a row, an on_commit hook and a send, then maybe a failure."""
    try:
        with transactions.message_block(TENANT):
            Record.objects.using(TENANT).create(name=name)
            transaction.on_commit(lambda: ran.append(name), using=TENANT)
            send(name)
            if fail:
                raise Boom(name)
    except Boom:
        pass


def test_a_failure_in_a_batch_undoes_only_that_message(rabbit: str) -> None:
    ran: list[str] = []
    with transaction.atomic(using=TENANT):
        _message("first", ran, fail=False)
        _message("second", ran, fail=True)
        _message("third", ran, fail=False)
        _message("fourth", ran, fail=True)
        assert not connections[TENANT].needs_rollback
        assert ran == []
    assert sorted(Record.objects.using(TENANT).values_list("name", flat=True)) == ["first", "third"]
    assert ran == ["first", "third"]
    assert published(rabbit) == ["first", "third"]
    assert not OutboxMessage.objects.using(TENANT).exists()


def _queue(name: str, message: type, handler: str, at: datetime) -> None:
    envelope = Envelope(message_name(message), {"name": name}, {"tenant": "free_tier"})
    OutboxMessage.objects.using("default").create(
        message_id=envelope.id,
        channel="db",
        handler=f"tests.testapp.messaging.{handler}",
        message_type=envelope.type,
        tenant="free_tier",
        body=envelope.encode(),
        available_at=at,
        created_at=now(),
    )


def test_a_failing_handler_in_a_worker_batch_undoes_only_its_message(mode: str) -> None:
    start = now() - timedelta(minutes=1)
    _queue("a", RecordAsync, "record_async", start)
    _queue("explodes", AlwaysFails, "always_fails", start + timedelta(seconds=1))
    _queue("b", RecordAsync, "record_async", start + timedelta(seconds=2))
    worker = Worker(["db"], relay=False)
    assert worker.consume_database_batch("default") == 3
    assert (worker.stats.handled, worker.stats.retried) == (2, 1)
    assert sorted(Record.objects.using("default").values_list("name", flat=True)) == ["a", "b"]
    [retry] = OutboxMessage.objects.using("default").all()
    assert (retry.handler, retry.attempts) == ("tests.testapp.messaging.always_fails", 1)


@pytest.fixture
def unshaped_state() -> Iterator[Any]:
    """The default connection's savepoint list replaced by something that is not a list, for one test."""
    connection = connections["default"]
    original = connection.savepoint_ids
    transactions._shape_ok.clear()
    connection.savepoint_ids = collections.deque(original)
    try:
        yield connection
    finally:
        connection.savepoint_ids = list(connection.savepoint_ids)
        transactions._shape_ok.clear()


def test_an_unexpected_shape_falls_back_to_the_public_api(
    unshaped_state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ecotone_django.transactions"):
        assert transactions.use_internals("default") is False
    assert "not shaped as expected" in caplog.text
    ran: list[str] = []
    with transaction.atomic(using="default"):
        block = transactions.message_block("default")
        assert not isinstance(block, transactions._LateSavepoint)
        with pytest.raises(Boom), block:
            Record.objects.using("default").create(name="undone")
            transaction.on_commit(lambda: ran.append("undone"), using="default")
            raise Boom
    assert ran == [] and not Record.objects.using("default").exists()


def test_an_unexpected_shape_is_an_error_where_the_internals_are_required(unshaped_state: Any) -> None:
    with (
        override_settings(ECOTONE={**settings.ECOTONE, "TRANSACTION_INTERNALS": "use"}),
        pytest.raises(ConfigurationError, match="TRANSACTION_INTERNALS"),
    ):
        transactions.use_internals("default")
