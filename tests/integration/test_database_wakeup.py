"""An idle database-channel worker wakes on the sender's commit (PostgreSQL LISTEN/NOTIFY), not at its next poll.

The worker here polls once a minute, so every message handled within seconds was announced by a
notification. Polling stays the safety net on every engine (the other integration tests poll every 0.05 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from ecotone_django import command_bus, outbox
from ecotone_django.storage.outbox import wakeup_name
from ecotone_django.worker import Worker
from tests.helpers.processes import wait_for
from tests.integration.conftest import ALL_DATABASES
from tests.testapp.messaging import RecordAsync
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
postgres_only = pytest.mark.skipif(settings.ENGINE != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")

POLL_INTERVAL = 60.0
#: Far below the poll interval, far above a notification's milliseconds on a loaded machine.
WAKE_WITHIN = 5.0


@pytest.fixture
def idle_worker() -> Iterator[Worker]:
    """A worker on channel ``db`` that polls once a minute, running in a thread until the test ends."""
    with override_settings(ECOTONE={**settings.ECOTONE, "WORKER": {"POLL_INTERVAL": POLL_INTERVAL}}):
        worker = Worker(["db"], relay=False)
        thread = threading.Thread(target=worker.run, name="idle-worker", daemon=True)
        thread.start()
        try:
            yield worker
        finally:
            worker.stop()
            thread.join(WAKE_WITHIN)
            assert not thread.is_alive(), "stop() must end an idle wait at once"


def handled(name: str) -> bool:
    return Record.objects.using("default").filter(name=name).exists()


def listening_pids() -> list[int]:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %%'")
        return [pid for (pid,) in cursor.fetchall()]


def send(name: str) -> None:
    with transaction.atomic(using="default"):
        command_bus.send(RecordAsync(name), metadata={"tenant": "free_tier"})


@postgres_only
def test_an_idle_worker_starts_a_message_when_its_sender_commits(idle_worker: Worker) -> None:
    wait_for(listening_pids, WAKE_WITHIN, 0.01, "the worker to listen")
    for i in range(3):  # after the first, the worker has surely gone back to its idle wait
        send(f"woken-{i}")
        wait_for(lambda i=i: handled(f"woken-{i}"), WAKE_WITHIN, 0.01, f"woken-{i} handled before the next poll")


@postgres_only
def test_a_rolled_back_send_wakes_nobody_and_a_lost_listener_comes_back(idle_worker: Worker) -> None:
    (pid,) = wait_for(listening_pids, WAKE_WITHIN, 0.01, "the worker to listen")
    with pytest.raises(RuntimeError), transaction.atomic(using="default"):
        command_bus.send(RecordAsync("rolled-back"), metadata={"tenant": "free_tier"})
        raise RuntimeError
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(lambda: set(listening_pids()) - {pid}, WAKE_WITHIN, 0.01, "the worker to listen again")
    send("after-reconnect")
    wait_for(lambda: handled("after-reconnect"), WAKE_WITHIN, 0.01, "a message handled after the listener came back")
    assert not handled("rolled-back")


def test_every_channel_name_makes_a_valid_notification_name() -> None:
    assert wakeup_name("orders") == "ecotone.orders"
    long_or_odd = ["x" * 200, 'quote"d', "spaced name", "ünïcode"]
    names = {wakeup_name(name) for name in long_or_odd}
    assert len(names) == len(long_or_odd)
    assert all(len(name.encode()) <= 63 and '"' not in name for name in names)


def test_a_database_found_empty_waits_its_turn_while_another_keeps_the_worker_busy() -> None:
    """Empty claims in the quiet databases cost a transaction each; they wait ``quiet`` s, or a notification."""
    for i in range(12):
        command_bus.send(RecordAsync(f"busy-{i}"), metadata={"tenant": "free_tier"})  # "default"
    worker = Worker(["db"], relay=False)
    worker.claim_size = 3
    worker.wakeup.quiet = POLL_INTERVAL
    quiet = [alias for alias in worker.aliases if alias != "default"]
    captured = {alias: CaptureQueriesContext(connections[alias]) for alias in quiet}
    with ExitStack() as stack:
        for context in captured.values():
            stack.enter_context(context)
        while Record.objects.using("default").count() < 12:
            assert worker._poll_databases()
    for alias, context in captured.items():  # one look in the first round, none while "default" was busy
        claims = [q["sql"] for q in context.captured_queries if "ecotone_outbox" in q["sql"]]
        assert len(claims) == 1, (alias, claims)
    if settings.ENGINE != "postgres":
        return
    worker.wakeup.start(worker.aliases)
    try:
        wait_for(listening_pids, WAKE_WITHIN, 0.01, "the worker to listen")
        command_bus.send(RecordAsync("premium"), metadata={"tenant": "big_corp"})
        wait_for(lambda: worker.wakeup.worth_a_look("big_corp"), WAKE_WITHIN, 0.01, "the notification")
        assert worker._poll_databases()
        assert Record.objects.using("big_corp").filter(name="premium").exists()
    finally:
        worker.wakeup.close()


@postgres_only
def test_a_send_a_few_milliseconds_after_a_notified_one_notifies_too() -> None:
    """Requests a few milliseconds apart each wake an idle worker; only a tighter stream leaves some out.

    A send left out waits for the next notification or the poll, so that window is as short as the
    commit lock's protection allows (``outbox.NOTIFY_INTERVAL``).
    """

    def notifies(last_notified_ago: float) -> bool:
        outbox._local.notified = {("default", "db"): time.monotonic() - last_notified_ago}
        with CaptureQueriesContext(connections["default"]) as queries:
            send(f"paced-{last_notified_ago}")
        [insert] = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "ecotone_outbox"')]
        return "pg_notify" in insert

    assert notifies(0.003), "a send 3 ms after a notified one must notify (a request every few ms)"
    assert not notifies(0.0005), "within a tight stream, sends leave the NOTIFY out (the commit lock)"
