"""``deadletter``, ``ecotone_status`` and ``ecotone_cleanup`` against the real tenant databases."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from ecotone_django.clock import clock, now
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage, SagaState
from ecotone_django.replay import ReplayError, replay
from ecotone_django.worker import Worker
from tests.integration.conftest import ALL_DATABASES
from tests.testapp.messaging import RecordAsync
from tests.testapp.models import Record

RECORD_ASYNC = "tests.testapp.messaging.record_async"

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES)


def run(*args: str, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


def record_async_body(name: str, tenant: str) -> str:
    return Envelope(type=message_name(RecordAsync), payload={"name": name}, headers={"tenant": tenant}).encode()


def letter(alias: str, *, name: str = "x", tenant: str | None = None, **fields: Any) -> DeadLetter:
    tenant = tenant or ("small" if alias == "default" else alias)
    values: dict[str, Any] = {
        "message_type": message_name(RecordAsync),
        "handler": RECORD_ASYNC,
        "channel": "db",
        "tenant": tenant,
        "reason": f"failed 3 time(s): RuntimeError: boom {name}",
        "exception_type": "RuntimeError",
        "exception_message": f"boom {name}",
        "traceback": f'Traceback (most recent call last):\n  File "handlers.py", line 7\nRuntimeError: boom {name}\n',
        "body": record_async_body(name, tenant),
        "attempts": 3,
        "failed_at": now(),
        **fields,
    }
    return DeadLetter.objects.using(alias).create(**values)


# -- deadletter list -------------------------------------------------------------------------------


def test_list_shows_letters_of_every_database_with_their_database():
    shared = letter("default", name="in-shared")
    dedicated = letter("big_corp", name="in-big-corp")

    lines = run("deadletter", "list").splitlines()

    assert lines[0].split() == ["ID", "MESSAGE", "TYPE", "HANDLER", "DATABASE", "REASON"]
    rows = {line.split()[3]: line.split() for line in lines[1:]}
    assert set(rows) == {"default", "big_corp"}
    assert rows["default"][:3] == [str(shared.pk), message_name(RecordAsync), RECORD_ASYNC]
    assert rows["big_corp"][0] == str(dedicated.pk)
    assert "boom in-big-corp" in " ".join(rows["big_corp"])


def test_list_database_narrows_to_one_database():
    letter("default", name="in-shared")
    letter("big_corp", name="in-big-corp")

    output = run("deadletter", "list", database="big_corp")

    assert "boom in-big-corp" in output
    assert "in-shared" not in output


def test_list_without_letters_says_so():
    assert run("deadletter", "list").strip() == "No dead letters."


def test_unknown_database_is_a_clear_error():
    with pytest.raises(CommandError, match=r"unknown database 'nope'.*default, big_corp, enterprise_x"):
        run("deadletter", "list", database="nope")


# -- deadletter show -------------------------------------------------------------------------------


def test_show_prints_reason_traceback_and_pretty_envelope():
    dead = letter("enterprise_x", name="shown")

    output = run("deadletter", "show", str(dead.pk))

    assert "Database:" in output and "enterprise_x" in output
    assert "failed 3 time(s): RuntimeError: boom shown" in output
    assert "RuntimeError: boom shown" in output.split("Traceback:")[1]
    envelope = output.split("Envelope:\n")[1]
    assert '\n  "payload": {\n    "name": "shown"\n  }' in envelope
    assert json.loads(envelope) == json.loads(dead.body)


def test_an_id_in_two_databases_needs_database():
    letter("default", name="shared-twin", id=4242)
    letter("big_corp", name="dedicated-twin", id=4242)

    with pytest.raises(CommandError, match="4242 exists in default, big_corp; choose one with --database"):
        run("deadletter", "show", "4242")
    assert "boom dedicated-twin" in run("deadletter", "show", "4242", database="big_corp")


@pytest.mark.parametrize("action", ["show", "replay", "delete"])
def test_unknown_id_is_a_clear_error(action: str):
    with pytest.raises(CommandError, match="no dead letter with id 999999 in default, big_corp, enterprise_x"):
        run("deadletter", action, "999999")


@pytest.mark.parametrize("action", ["show", "replay", "delete"])
def test_an_id_is_required(action: str):
    with pytest.raises(CommandError, match=f"deadletter {action} needs a dead letter id"):
        run("deadletter", action)


# -- deadletter replay -----------------------------------------------------------------------------


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_replay_moves_the_letter_to_the_outbox_of_its_database_and_a_worker_handles_it():
    dead = letter("big_corp", name="again")

    output = run("deadletter", "replay", str(dead.pk))

    assert f"Replayed dead letter {dead.pk} in big_corp" in output
    assert not DeadLetter.objects.using("big_corp").exists()
    row = OutboxMessage.objects.using("big_corp").get()
    assert (row.handler, row.channel, row.attempts, row.tenant) == (RECORD_ASYNC, "db", 0, "big_corp")
    assert row.message_id == Envelope.decode(dead.body).id  # same id: the inbox still guards against a double run
    assert not OutboxMessage.objects.using("default").exists()

    Worker(["db"], stop_when_empty=True, relay=False).run()

    assert Record.objects.using("big_corp").filter(name="again", handler="record_async").count() == 1
    assert not OutboxMessage.objects.using("big_corp").exists()


def test_replay_of_an_undecodable_letter_fails_and_keeps_it():
    dead = letter("default", body="{not json")

    with pytest.raises(CommandError, match="not a valid envelope"):
        run("deadletter", "replay", str(dead.pk))
    assert DeadLetter.objects.using("default").filter(pk=dead.pk).exists()
    assert not OutboxMessage.objects.using("default").exists()


def test_replay_of_a_letter_whose_handler_is_gone_fails_and_keeps_it():
    dead = letter("big_corp", handler="tests.testapp.messaging.removed_long_ago")

    with pytest.raises(CommandError, match=r"'tests\.testapp\.messaging\.removed_long_ago' is no longer registered"):
        run("deadletter", "replay", str(dead.pk))
    assert DeadLetter.objects.using("big_corp").filter(pk=dead.pk).exists()


def test_replay_refuses_a_letter_whose_tenant_now_lives_in_another_database():
    dead = letter("default", tenant="big_corp")  # e.g. stored before big_corp got its own database

    with pytest.raises(CommandError, match="tenant 'big_corp' now maps to database 'big_corp'"):
        run("deadletter", "replay", str(dead.pk))
    assert DeadLetter.objects.using("default").filter(pk=dead.pk).exists()
    assert not OutboxMessage.objects.using("big_corp").exists()


def test_replay_of_a_letter_deleted_meanwhile_enqueues_nothing():
    stale = letter("big_corp")
    DeadLetter.objects.using("big_corp").filter(pk=stale.pk).delete()  # e.g. another operator replayed it

    with pytest.raises(ReplayError, match="is gone from 'big_corp'"):
        replay(stale, "big_corp")
    assert not OutboxMessage.objects.using("big_corp").exists()


def test_replay_all_replays_every_database():
    for alias in ALL_DATABASES:
        letter(alias)
    letter("big_corp", name="second")

    assert "Replayed 4 dead letter(s)." in run("deadletter", "replay", all=True)

    assert not any(DeadLetter.objects.using(alias).exists() for alias in ALL_DATABASES)
    assert [OutboxMessage.objects.using(alias).count() for alias in ALL_DATABASES] == [1, 2, 1]


def test_replay_all_with_database_leaves_other_databases_alone():
    letter("default")
    letter("big_corp")

    assert "Replayed 1 dead letter(s)." in run("deadletter", "replay", all=True, database="big_corp")

    assert DeadLetter.objects.using("default").count() == 1
    assert not DeadLetter.objects.using("big_corp").exists()


def test_replay_all_reports_letters_it_cannot_replay_and_keeps_them():
    letter("default")
    bad = letter("big_corp", body="garbage")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="1 dead letter\\(s\\) could not be replayed"):
        call_command("deadletter", "replay", all=True, stdout=out, stderr=err)

    assert "Replayed 1 dead letter(s)." in out.getvalue()
    assert f"dead letter {bad.pk} cannot be replayed" in err.getvalue()
    assert list(DeadLetter.objects.using("big_corp").values_list("pk", flat=True)) == [bad.pk]
    assert OutboxMessage.objects.using("default").count() == 1


def test_replay_takes_an_id_or_all_not_both():
    dead = letter("default")
    with pytest.raises(CommandError, match="not both"):
        run("deadletter", "replay", str(dead.pk), all=True)
    assert DeadLetter.objects.using("default").exists()


# -- deadletter delete -----------------------------------------------------------------------------


def test_delete_removes_only_that_letter():
    doomed = letter("big_corp", name="doomed", id=77)
    twin = letter("default", name="twin", id=77)

    output = run("deadletter", "delete", "77", database="big_corp")

    assert "Deleted dead letter 77 from big_corp." in output
    assert not DeadLetter.objects.using("big_corp").filter(pk=doomed.pk).exists()
    assert DeadLetter.objects.using("default").filter(pk=twin.pk).exists()


# -- ecotone_status --------------------------------------------------------------------------------


def outbox(alias: str, channel: str, available_at: Any, tenant: str = "") -> OutboxMessage:
    envelope = Envelope(type=message_name(RecordAsync), payload={"name": "s"}, headers={"tenant": tenant})
    return OutboxMessage.objects.using(alias).create(
        message_id=envelope.id,
        channel=channel,
        handler=RECORD_ASYNC,
        message_type=envelope.type,
        tenant=tenant,
        body=envelope.encode(),
        available_at=available_at,
        created_at=now(),
    )


def saga(alias: str, saga_id: str, status: str) -> SagaState:
    return SagaState.objects.using(alias).create(
        saga_type="tests.OrderSaga", saga_id=saga_id, status=status, state={}, created_at=now(), updated_at=now()
    )


def by_alias(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {db["alias"]: db for db in status["databases"]}


def backlog_of(db: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["channel"]: b for b in db["backlog"]}


def test_status_json_counts_due_and_delayed_backlog_per_database():
    moment = now()
    outbox("default", "db", moment - timedelta(minutes=5))
    outbox("default", "db", moment - timedelta(seconds=1))
    outbox("default", "db", moment + timedelta(hours=1))
    outbox("big_corp", "rabbit", moment - timedelta(seconds=90), tenant="big_corp")
    outbox("big_corp", "db", moment + timedelta(minutes=1), tenant="big_corp")
    letter("big_corp")
    letter("big_corp")
    saga("enterprise_x", "a", SagaState.ACTIVE)
    saga("enterprise_x", "b", SagaState.ACTIVE)
    saga("enterprise_x", "c", SagaState.COMPLETED)

    status = json.loads(run("ecotone_status", json=True))

    channels = {c["name"]: c for c in status["channels"]}
    assert channels["orders"]["kind"] == "dynamic"
    assert set(channels["orders"]["targets"]) == {"rabbit", "db"}
    assert channels["db"]["backend"] == "ecotone_django.channels.DatabaseChannel"
    dbs = by_alias(status)
    assert list(dbs) == ALL_DATABASES
    default_db = backlog_of(dbs["default"])["db"]
    assert (default_db["due"], default_db["delayed"]) == (2, 1)
    assert 300 <= default_db["oldest_due_age_seconds"] < 400
    assert dbs["default"]["outbox_lag_seconds"] is None  # no broker rows pending there
    big_corp = backlog_of(dbs["big_corp"])
    assert (big_corp["rabbit"]["due"], big_corp["rabbit"]["delayed"]) == (1, 0)
    assert (big_corp["db"]["due"], big_corp["db"]["delayed"], big_corp["db"]["oldest_due_age_seconds"]) == (0, 1, None)
    assert 90 <= dbs["big_corp"]["outbox_lag_seconds"] < 200
    assert [dbs[a]["dead_letters"] for a in ALL_DATABASES] == [0, 2, 0]
    assert dbs["enterprise_x"]["sagas"] == {"active": 2, "completed": 1}
    assert dbs["default"]["sagas"] == {"active": 0, "completed": 0}


def test_status_text_is_an_aligned_table():
    moment = now()
    outbox("big_corp", "db", moment - timedelta(seconds=30), tenant="big_corp")
    outbox("big_corp", "db", moment + timedelta(hours=2), tenant="big_corp")
    outbox("big_corp", "db", moment + timedelta(hours=2), tenant="big_corp")
    letter("default")
    saga("default", "a", SagaState.COMPLETED)

    lines = run("ecotone_status").splitlines()

    backlog = lines[lines.index("Backlog (outbox / queue rows)") + 1 :]
    header = backlog[0]
    assert header.split() == ["DATABASE", "CHANNEL", "KIND", "DUE", "DELAYED", "OLDEST", "DUE"]
    row = next(line for line in backlog if line.split()[:2] == ["big_corp", "db"])
    assert row.split()[2:5] == ["database", "1", "2"]
    assert row.split()[5].endswith("s")  # oldest due age, e.g. "30s"
    # Numbers are right-aligned under their headers.
    assert row[: header.index("DUE") + len("DUE")].endswith(" 1")
    assert row[: header.index("DELAYED") + len("DELAYED")].endswith(" 2")
    summary = lines[lines.index("Databases") + 1 :]
    assert summary[0].split() == [
        "DATABASE",
        "DEAD",
        "LETTERS",
        "OUTBOX",
        "LAG",
        "SAGAS",
        "ACTIVE",
        "SAGAS",
        "COMPLETED",
    ]
    assert next(line for line in summary if line.split()[0] == "default").split() == ["default", "1", "-", "0", "1"]


# -- ecotone_cleanup -------------------------------------------------------------------------------


def inbox_rows(alias: str) -> set[str]:
    return set(InboxEntry.objects.using(alias).values_list("key", flat=True))


def test_cleanup_deletes_only_inbox_rows_past_retention_in_every_database():
    for alias in ALL_DATABASES:
        InboxEntry.objects.using(alias).create(key=f"old-{alias}", handler="h", handled_at=now())
    clock.advance(timedelta(days=8))  # INBOX_RETENTION defaults to 7 days; the autouse fixture resets the clock
    for alias in ALL_DATABASES:
        InboxEntry.objects.using(alias).create(key=f"new-{alias}", handler="h", handled_at=now())

    output = run("ecotone_cleanup")

    assert "big_corp: 1 inbox row(s) older than 7 days" in output
    assert "Deleted 3 inbox row(s)." in output
    assert [inbox_rows(alias) for alias in ALL_DATABASES] == [{f"new-{alias}"} for alias in ALL_DATABASES]


def test_cleanup_dry_run_deletes_nothing():
    InboxEntry.objects.using("big_corp").create(key="old", handler="h", handled_at=now())
    clock.advance(timedelta(days=8))

    output = run("ecotone_cleanup", dry_run=True)

    assert "Would delete 1 inbox row(s)." in output
    assert inbox_rows("big_corp") == {"old"}


def test_cleanup_database_narrows_and_rejects_unknown_aliases():
    for alias in ("default", "big_corp"):
        InboxEntry.objects.using(alias).create(key="old", handler="h", handled_at=now())
    clock.advance(timedelta(days=8))

    run("ecotone_cleanup", "--database", "big_corp")

    assert (inbox_rows("default"), inbox_rows("big_corp")) == ({"old"}, set())
    with pytest.raises(CommandError, match="unknown database\\(s\\) nope"):
        run("ecotone_cleanup", "--database", "nope")
