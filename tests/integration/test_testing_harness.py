"""The ``ecotone`` fixture / MessagingHarness: in-process runs, the test clock, recordings."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ecotone_django import CommandBus, asynchronous, command_handler
from ecotone_django.channels import channels
from ecotone_django.clock import clock, now
from ecotone_django.signals import message_sent
from ecotone_django.testing import HarnessError, MessagingHarness, registry_of, use_registry
from tests.helpers.processes import REPO_ROOT
from tests.testapp.messaging import Chain, CountRecords, Happened, RecordAsync, RecordOnRabbit, RecordSync
from tests.testapp.models import Record

ALL = ["default", "big_corp", "enterprise_x"]


def names(using: str = "default") -> list[str]:
    return sorted(Record.objects.using(using).values_list("name", flat=True))


@pytest.mark.django_db(databases=ALL)
def test_records_commands_and_events_in_order_with_their_headers(ecotone: MessagingHarness) -> None:
    ecotone.send(Chain("c"), metadata={"tenant": "enterprise_x", "request": "r-1"})
    ecotone.publish(Happened("h"), metadata={"tenant": "enterprise_x"})

    chain, child = ecotone.recorded_commands
    assert (chain.message, child.message) == (Chain("c"), RecordAsync("c.child"))
    assert chain.headers["request"] == "r-1" and "request" not in child.headers
    assert child.headers["tenant"] == "enterprise_x" and child.headers["causation_id"] == chain.message_id
    assert child.headers["correlation_id"] == chain.message_id
    assert [r.message for r in ecotone.recorded_events] == [Happened("h")]
    assert [r.kind for r in ecotone.recorded] == ["command", "command", "event"]


@pytest.mark.django_db(databases=ALL)
def test_run_handles_every_database_channel_until_quiet(ecotone: MessagingHarness) -> None:
    ecotone.send(Chain("a"), metadata={"tenant": "shop"})
    ecotone.send(RecordAsync("b"), metadata={"tenant": "big_corp"})
    assert names() == ["a"]

    assert ecotone.run() == 2
    assert names() == ["a", "a.child"] and names("big_corp") == ["b"]
    assert ecotone.run() == 0


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_broker_channel_messages_stay_in_the_database_and_run_in_process(ecotone: MessagingHarness) -> None:
    assert not channels["rabbit"].is_broker
    ecotone.send(RecordOnRabbit("r"), metadata={"tenant": "big_corp"})  # committed at once: no broker publish
    [row] = ecotone.pending()
    assert (row.channel, row.tenant) == ("rabbit", "big_corp")

    assert ecotone.run() == 1
    assert names("big_corp") == ["r"] and not ecotone.pending()


def test_leaving_the_harness_restores_brokers_observers_and_the_clock() -> None:
    harness = MessagingHarness().start()
    clock.advance(timedelta(hours=1))
    harness.stop()

    assert channels["rabbit"].is_broker
    assert not message_sent.disconnect(harness._observe)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)
    with pytest.raises(HarnessError, match="not active"):
        harness.run()


@pytest.mark.django_db(databases=ALL)
def test_advance_fires_delayed_messages_once_they_are_due(ecotone: MessagingHarness) -> None:
    ecotone.send(RecordAsync("in-5-min"), metadata={"tenant": "shop", "delay": timedelta(minutes=5)})
    ecotone.send(RecordAsync("at-noon"), metadata={"tenant": "shop", "deliver_at": now() + timedelta(hours=1)})
    assert ecotone.run() == 0

    assert ecotone.advance(timedelta(minutes=4)) == 0
    assert ecotone.advance(timedelta(minutes=2)) == 1
    assert names() == ["in-5-min"]
    assert ecotone.advance(timedelta(hours=1)) == 1
    assert names() == ["at-noon", "in-5-min"]
    with pytest.raises(HarnessError, match="forward"):
        ecotone.advance(timedelta(minutes=-1))


@pytest.mark.django_db(databases=ALL)
def test_query_and_synchronous_send_answer(ecotone: MessagingHarness) -> None:
    pk = ecotone.send(RecordSync("q"), metadata={"tenant": "shop"})
    assert Record.objects.get(pk=pk).name == "q"
    assert ecotone.query(CountRecords("q"), metadata={"tenant": "shop"}) == 1
    assert [r.kind for r in ecotone.recorded] == ["command", "query"]


@pytest.mark.django_db(databases=ALL)
def test_dead_letters_lists_what_failed_after_its_retries(ecotone: MessagingHarness) -> None:
    ecotone.publish(Happened("e"), metadata={"tenant": "big_corp"})
    assert ecotone.run() == 1 + 3  # healthy once, failing three times (RETRY MAX_ATTEMPTS)

    [letter] = ecotone.dead_letters()
    assert letter.handler.endswith("Subscribers.failing") and letter.attempts == 3
    assert Record.objects.using("big_corp").filter(handler="healthy").count() == 1


@pytest.mark.django_db(databases=["default"])
def test_databases_the_test_may_not_use_are_skipped(ecotone: MessagingHarness) -> None:
    ecotone.send(RecordAsync("only-default"), metadata={"tenant": "shop"})
    assert ecotone.run() == 1
    assert names() == ["only-default"] and ecotone.dead_letters() == [] and ecotone.pending() == []


@dataclass(frozen=True)
class Ping:
    n: int


@asynchronous("db")
@command_handler
def ping_forever(command: Ping, bus: CommandBus) -> None:
    bus.send(Ping(command.n + 1))


@pytest.mark.django_db(databases=ALL)
def test_a_message_loop_is_reported_instead_of_running_forever(ecotone: MessagingHarness) -> None:
    with use_registry(registry_of(ping_forever)):
        ecotone.send(Ping(0), metadata={"tenant": "shop"})
        with pytest.raises(HarnessError, match="not quiet after 25 messages"):
            ecotone.run(max_messages=25)
    assert [r.message.n for r in ecotone.recorded_commands][-1] == 25


def test_the_plugin_is_registered_and_imports_no_django_models() -> None:
    script = (
        "import sys, importlib.metadata as m\n"
        "assert any(e.value == 'ecotone_django.testing' for e in m.entry_points(group='pytest11'))\n"
        "import ecotone_django.testing\n"
        "loaded = [n for n in sys.modules if n.startswith(('django.db', 'ecotone_django.models', 'django.conf'))]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
