"""``consume_channel --metrics-port``: scraped over HTTP, the counters match what was sent."""

from __future__ import annotations

import socket
import urllib.request
from collections import defaultdict

import pytest

from ecotone_django import command_bus
from ecotone_django.models import DeadLetter, OutboxMessage
from tests.helpers.processes import wait_for
from tests.integration.conftest import WorkerFactory
from tests.testapp.messaging import AlwaysFails, RecordAsync

parser = pytest.importorskip("prometheus_client.parser")

ALL = ["default", "big_corp", "enterprise_x"]
RECORD = "tests.testapp.messaging.record_async"
FAILS = "tests.testapp.messaging.always_fails"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of the endpoint: sample name → sorted labels → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def labels(handler: str, alias: str, **extra: str) -> tuple[tuple[str, str], ...]:
    found = {"ecotone_handler": handler, "ecotone_db_alias": alias, "messaging_destination_name": "db", **extra}
    return tuple(sorted(found.items()))


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_scraped_counters_match_what_was_sent(worker: WorkerFactory) -> None:
    port = free_port()
    proc = worker("db", "--metrics-port", str(port))
    assert f"metrics on port {port}" in proc.output()
    for i in range(5):
        command_bus.send(RecordAsync(f"shop-{i}"), metadata={"tenant": "shop-7"})
    for i in range(2):
        command_bus.send(RecordAsync(f"big-{i}"), metadata={"tenant": "big_corp"})
    command_bus.send(AlwaysFails("boom"), metadata={"tenant": "shop-7"})

    def drained() -> bool:
        return DeadLetter.objects.exists() and not any(OutboxMessage.objects.using(a).exists() for a in ALL)

    wait_for(drained, timeout=60, message="every message handled or dead")
    wait_for(lambda: sum(scrape(port)["ecotone_messages_handled_total"].values()) == 7, message="7 handled")
    samples = scrape(port)

    assert samples["ecotone_messages_handled_total"] == {
        labels(RECORD, "default"): 5.0,
        labels(RECORD, "big_corp"): 2.0,
    }
    assert samples["ecotone_messages_failed_total"] == {labels(FAILS, "default"): 3.0}
    assert samples["ecotone_messages_retried_total"] == {labels(FAILS, "default"): 2.0}
    assert samples["ecotone_messages_dead_lettered_total"] == {labels(FAILS, "default"): 1.0}
    durations = samples["ecotone_handling_duration_seconds_count"]
    assert durations[labels(RECORD, "default", ecotone_outcome="handled")] == 5.0
    assert durations[labels(FAILS, "default", ecotone_outcome="retry")] == 2.0
    assert durations[labels(FAILS, "default", ecotone_outcome="dead")] == 1.0
    assert not any("tenant" in name for key in samples["ecotone_messages_handled_total"] for name, _ in key)
    backlog = samples["ecotone_outbox_backlog"]
    assert backlog == {(("ecotone_db_alias", a),): 0.0 for a in ALL}
    assert set(samples["ecotone_outbox_oldest_age_seconds"]) == set(backlog)
    assert samples["ecotone_sagas"][(("ecotone_db_alias", "default"), ("ecotone_saga_status", "active"))] == 0.0
