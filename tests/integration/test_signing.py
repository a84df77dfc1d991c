"""Signed messages on a real RabbitMQ queue, consumed by a real ``consume_channel`` process.

The worker runs with ``ECOTONE["SIGNING"]`` (``ECOTONE_TEST_SIGNING``); forged messages are put on its
queue with kombu directly, as anyone who can publish to the broker could. None of them is handled, each
becomes a dead letter in the default database, never in the tenant database it names, and the worker
goes on handling signed messages, those signed with the current key and with an older one alike.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings

from ecotone_django import command_bus
from ecotone_django.channels.celery import task_message
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage
from ecotone_django.signing import KEY_ID_HEADER, SIGNATURE_HEADER
from tests.helpers.processes import wait_for
from tests.integration.broker_fixtures import publish_raw, queue_depth, rabbit_queue, rabbit_url, spawn_celery_worker
from tests.integration.conftest import ALL_DATABASES, worker_env
from tests.settings import ECOTONE
from tests.testapp.messaging import RecordOnRabbit
from tests.testapp.models import Record

__all__ = ["rabbit_queue"]

pytestmark = [pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)]

OLD = {"KEYS": {"k1": "first secret"}, "CURRENT": "k1"}
ROTATED = {"KEYS": {"k2": "second secret", "k1": "first secret"}, "CURRENT": "k2"}
INTRUDER = {"KEYS": {"k2": "a guessed secret"}, "CURRENT": "k2"}


def signing(keys: dict[str, Any] | None) -> Any:
    return override_settings(ECOTONE={**ECOTONE, "SIGNING": keys} if keys else ECOTONE)


def send(name: str, tenant: str = "big_corp") -> None:
    command_bus.send(RecordOnRabbit(name), metadata={"tenant": tenant})


def forged(name: str, keys: dict[str, Any] | None, tamper: Callable[[dict[str, Any], list[Any]], None]) -> None:
    """A RecordOnRabbit task for tenant big_corp, signed with ``keys`` (or not), altered, then published raw."""
    envelope = Envelope(message_name(RecordOnRabbit), {"name": name}, {"tenant": "big_corp"})
    row = OutboxMessage(
        message_id=envelope.id,
        channel="rabbit",
        handler="tests.testapp.messaging.record_on_rabbit",
        message_type=envelope.type,
        tenant="big_corp",
        body=envelope.encode(),
        attempts=0,
    )
    with signing(keys):
        headers, body = task_message(row)
    args = json.loads(body)
    tamper(headers, args[0])
    publish_raw(rabbit_url(), str(rabbit_queue_name()), json.dumps(args), headers=headers)


def rabbit_queue_name() -> str:
    return str(ECOTONE["CHANNELS"]["rabbit"]["OPTIONS"]["queue"])


def records(name: str, alias: str = "big_corp") -> int:
    return Record.objects.using(alias).filter(name=name).count()


def untouched(headers: dict[str, Any], args: list[Any]) -> None:
    return None


def test_forged_messages_are_dead_lettered_in_the_default_database_and_signed_ones_handled(rabbit_queue, worker):
    handler = "tests.testapp.messaging.record_on_rabbit"
    with signing(OLD):
        send("signed-with-the-old-key")  # a message published before the rotation, still queued
    forged("unsigned", None, untouched)
    forged("unknown-key", OLD, lambda h, a: h.update({KEY_ID_HEADER: "k9"}))
    forged("wrong-secret", INTRUDER, untouched)
    forged("tenant-swapped", ROTATED, lambda h, a: a.__setitem__(0, a[0].replace("big_corp", "enterprise_x")))
    forged("signature-dropped", ROTATED, lambda h, a: h.pop(SIGNATURE_HEADER))

    proc = worker("rabbit", "--no-relay", env={"ECOTONE_TEST_SIGNING": json.dumps(ROTATED)})
    with signing(ROTATED):
        send("signed-with-the-current-key")
    wait_for(
        lambda: (
            (DeadLetter.objects.using("default").count() >= 5 and records("signed-with-the-current-key"))
            or not proc.is_running()
        ),
        message="five dead letters and the signed message handled",
    )
    assert proc.is_running(), proc.output_tail()
    assert records("signed-with-the-old-key") == 1  # old key ids keep verifying
    assert records("signed-with-the-current-key") == 1

    dead = list(DeadLetter.objects.using("default").values_list("reason", "handler", "channel"))
    assert len(dead) == 5, dead
    assert all(reason.startswith("bad signature") for reason, _, _ in dead), dead
    assert {(h, c) for _, h, c in dead} == {(handler, "rabbit")}
    reasons = sorted(reason for reason, _, _ in dead)
    assert sum("not signed" in r for r in reasons) == 2
    assert sum("unknown key id 'k9'" in r for r in reasons) == 1
    assert sum("does not match" in r for r in reasons) == 2
    for alias in ("big_corp", "enterprise_x"):
        assert not DeadLetter.objects.using(alias).exists(), alias  # never in the database a message claims
    for name in ("unsigned", "unknown-key", "wrong-secret", "tenant-swapped", "signature-dropped"):
        assert sum(records(name, alias) for alias in ALL_DATABASES) == 0, name
    assert InboxEntry.objects.using("enterprise_x").count() == 0


def test_a_celery_worker_checks_the_signature_too(rabbit_queue):
    with signing(ROTATED):
        send("celery-signed")
    forged("celery-forged", INTRUDER, untouched)
    env = worker_env({"ECOTONE_TEST_SIGNING": json.dumps(ROTATED)})
    with spawn_celery_worker("tests.celery_worker_app", rabbit_queue, env=env) as proc:
        wait_for(
            lambda: records("celery-signed") == 1 and DeadLetter.objects.using("default").exists(),
            timeout=60,
            message=f"the celery worker to run both tasks\n{proc.output_tail()}",
        )
        wait_for(lambda: queue_depth(rabbit_url(), rabbit_queue) == 0, message="both tasks acked")
        proc.kill9()  # acked: no need to wait for Celery's shutdown
    letter = DeadLetter.objects.using("default").get()
    assert letter.reason.startswith("bad signature") and "does not match" in letter.reason, letter.reason
    assert sum(records("celery-forged", alias) for alias in ALL_DATABASES) == 0
    assert not DeadLetter.objects.using("big_corp").exists()
