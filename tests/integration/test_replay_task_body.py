"""A dead letter whose body is a Celery task body (as 0.1 wrote some) is replayed from the envelope inside it."""

from __future__ import annotations

import pytest

from ecotone_django.channels.celery.protocol import task_message
from ecotone_django.clock import now
from ecotone_django.messages import Envelope
from ecotone_django.models import DeadLetter, OutboxMessage
from ecotone_django.replay import replay
from tests.integration.conftest import ALL_DATABASES

HANDLER = "tests.testapp.messaging.record_async"


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_a_dead_letter_holding_a_task_body_is_replayable() -> None:
    envelope = Envelope("tests.testapp.messaging.RecordAsync", {"name": "stuck"}, {"tenant": "big_corp"})
    row = OutboxMessage(message_id=envelope.id, channel="db", handler=HANDLER, body=envelope.encode(), attempts=2)
    _, task_body = task_message(row)
    letter = DeadLetter.objects.using("big_corp").create(
        message_id=envelope.id,
        handler=HANDLER,
        channel="db",
        tenant="big_corp",
        reason="x",
        body=task_body,
        failed_at=now(),
    )
    replayed = replay(letter, "big_corp")
    assert (replayed.message_id, replayed._state.db, replayed.attempts) == (envelope.id, "big_corp", 0)
    assert Envelope.decode(replayed.body) == envelope
    assert not DeadLetter.objects.using("big_corp").exists()
