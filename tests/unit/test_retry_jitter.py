"""Messages that failed at the same instant are retried spread over the jitter span, not all at once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings

from ecotone_django.clock import now
from ecotone_django.discovery import get_registry
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage
from ecotone_django.retry import schedule_retry

HANDLER = "tests.testapp.messaging.record_async"


@pytest.mark.django_db
def test_failures_of_one_instant_are_retried_at_different_times() -> None:
    retry = {"MAX_ATTEMPTS": 5, "BACKOFF_SECONDS": 60, "MULTIPLIER": 1, "MAX_BACKOFF_SECONDS": 60, "JITTER": 0.5}
    with override_settings(ECOTONE={**settings.ECOTONE, "RETRY": retry}):
        before = now()
        handler = get_registry().get(HANDLER)
        for i in range(50):
            envelope = Envelope("tests.testapp.messaging.RecordAsync", {"name": f"r{i}"}, {"tenant": "acme"})
            schedule_retry(envelope, handler, "db", 1, RuntimeError("the database was down"))
        after = now()
    due = sorted(row.available_at for row in OutboxMessage.objects.using("default").all())
    assert len(due) == 50
    assert before + timedelta(seconds=30) <= due[0] and due[-1] <= after + timedelta(seconds=60)
    # Without jitter they would all fall due within the few milliseconds the loop took.
    assert due[-1] - due[0] > timedelta(seconds=20), (due[0], due[-1])
