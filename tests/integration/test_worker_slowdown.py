"""After many consecutive failures a channel takes one message at a time until one succeeds."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from ecotone_django import command_bus
from ecotone_django.worker import Worker
from tests.testapp.messaging import AlwaysFails, RecordAsync

DATABASES = ["default", "big_corp", "enterprise_x"]


def slow_settings() -> dict[str, Any]:
    ecotone = dict(settings.ECOTONE)
    ecotone["WORKER"] = {**ecotone["WORKER"], "SLOW_AFTER_FAILURES": 3, "CLAIM_SIZE": 10, "POLL_INTERVAL": 0.001}
    ecotone["RETRY"] = {**ecotone["RETRY"], "MAX_ATTEMPTS": 100}
    return ecotone


@pytest.mark.django_db(databases=DATABASES)
def test_consecutive_failures_shrink_the_claim_to_one_until_a_success() -> None:
    with override_settings(ECOTONE=slow_settings()):
        for i in range(5):
            command_bus.send(AlwaysFails(f"f{i}"), metadata={"tenant": "acme"})
        worker = Worker(["db"], relay=False)
        assert worker.consume_database_batch("default") == 5  # a healthy channel claims a batch
        assert worker.failing
        assert worker.consume_database_batch("default") == 1  # retries come back one at a time
        assert worker.consume_database_batch("default") == 1
        command_bus.send(RecordAsync("ok"), metadata={"tenant": "acme"})
        while worker.failing:  # the success is reached one message at a time, then the batch size returns
            assert worker.consume_database_batch("default") == 1
        assert worker.stats.handled == 1
        assert worker.consume_database_batch("default") == 5


@pytest.mark.django_db(databases=DATABASES)
def test_slow_handlers_claim_one_message_at_a_time(tmp_path: Any) -> None:
    from tests.testapp.messaging import Slow

    release = tmp_path / "release"
    release.write_text("go")  # handlers return at once, but the worker measured them as slow below
    with override_settings(ECOTONE=slow_settings()):
        for i in range(4):
            command_bus.send(Slow(f"s{i}", str(tmp_path / f"started{i}"), str(release)), metadata={"tenant": "acme"})
        worker = Worker(["db"], relay=False)
        assert worker.claim_limit() == 10  # nothing measured yet: the configured CLAIM_SIZE
        worker._seconds_per_message = 0.5  # handlers took half a second each
        assert worker.claim_limit() == 1
        assert worker.consume_database_batch("default") == 1
