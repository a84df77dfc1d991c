"""Leaks: a long run of messages through one worker, on each channel kind, with flat resource use.

``ECOTONE_LEAK_MESSAGES`` messages (``make chaos`` sets 200,000) go through one ``consume_channel`` process
on the database channel and on RabbitMQ. The worker's RSS, open file descriptors and database connections
after the last message stay within 1.1 times their values after the first 1,000. Skipped unless the
variable is set (it takes minutes), and outside the PostgreSQL run.

The messages are fed in chunks, keeping at most ``BACKLOG`` waiting, straight into the queue table (database
channel) or through the channel's confirmed publisher (RabbitMQ): what is measured is the worker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
from django.conf import settings
from django.db import connections

from ecotone_django.channels import channels
from ecotone_django.clock import now
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import OutboxMessage
from tests.helpers.processes import ManagedProcess
from tests.integration.conftest import ALL_DATABASES, WorkerFactory
from tests.testapp.messaging import RecordAsync, RecordOnRabbit
from tests.testapp.models import Record

MESSAGES = int(os.environ.get("ECOTONE_LEAK_MESSAGES", "0"))
BACKLOG = 10_000
CHUNK = 2_000
FIRST = 1_000
TENANT = "big_corp"

pytestmark = [
    pytest.mark.skipif(settings.ENGINE != "postgres", reason="runs in the ECOTONE_TEST_DB=postgres run"),
    pytest.mark.skipif(MESSAGES < 2 * FIRST, reason="set ECOTONE_LEAK_MESSAGES (make chaos sets 200000)"),
    pytest.mark.django_db(databases=ALL_DATABASES, transaction=True),
    pytest.mark.timeout(3900),
]


@dataclass(frozen=True)
class Sample:
    handled: int
    rss_kb: int
    fds: int
    connections: int
    at: float

    def line(self) -> str:
        rss = self.rss_kb / 1024
        return f"{self.handled:>8} handled: RSS {rss:6.1f} MiB, {self.fds:3} fds, {self.connections} db conns"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def database_connections(mine: set[int]) -> int:
    """Backends connected to this run's test databases, other than this process's own."""
    names = [connections[alias].settings_dict["NAME"] for alias in ALL_DATABASES]
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s)", [names])
        return len({pid for (pid,) in cursor.fetchall()} - mine)


def own_backends() -> set[int]:
    pids = set()
    for alias in ALL_DATABASES:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pids.add(cursor.fetchone()[0])
    return pids


def sample(proc: ManagedProcess, handled: int, mine: set[int]) -> Sample:
    return Sample(
        handled, rss_kb(proc.pid), len(os.listdir(f"/proc/{proc.pid}/fd")), database_connections(mine), time.monotonic()
    )


def rows(cls: type, handler: str, channel: str, start: int, count: int) -> list[OutboxMessage]:
    moment = now()
    made = []
    for i in range(start, start + count):
        envelope = Envelope(message_name(cls), {"name": f"leak-{i:07}"}, {"tenant": TENANT})
        made.append(
            OutboxMessage(
                message_id=envelope.id,
                channel=channel,
                handler=handler,
                message_type=envelope.type,
                tenant=TENANT,
                body=envelope.encode(),
                available_at=moment,
                created_at=moment,
            )
        )
    return made


def feed_database(start: int, count: int) -> None:
    batch = rows(RecordAsync, "tests.testapp.messaging.record_async", "db", start, count)
    OutboxMessage.objects.using(TENANT).bulk_create(batch, batch_size=1000)


def feed_rabbit(start: int, count: int) -> None:
    batch = rows(RecordOnRabbit, "tests.testapp.messaging.record_on_rabbit", "rabbit", start, count)
    for first in range(0, count, 500):
        channels["rabbit"].publish(batch[first : first + 500])  # type: ignore[attr-defined]


def run_through_one_worker(proc: ManagedProcess, feed: object) -> tuple[Sample, Sample, Sample, float]:
    """Feed MESSAGES messages; the samples after FIRST, the largest RSS seen, after the last; the rate."""
    mine = own_backends()
    fed = handled = 0
    first: Sample | None = None
    peak: Sample | None = None
    deadline = time.monotonic() + 3600
    while handled < MESSAGES:
        assert proc.is_running(), proc.output_tail()
        assert time.monotonic() < deadline, f"only {handled} of {MESSAGES} handled within an hour"
        if fed < MESSAGES and fed - handled < BACKLOG:
            count = min(CHUNK, MESSAGES - fed)
            feed(fed, count)  # type: ignore[operator]
            fed += count
        handled = Record.objects.using(TENANT).count()
        if first is None and handled >= FIRST:
            first = sample(proc, handled, mine)
            print(first.line())
        if first is not None:
            current = sample(proc, handled, mine)
            if peak is None or current.rss_kb > peak.rss_kb:
                peak = current
        time.sleep(0.25)
    last = sample(proc, handled, mine)
    assert first is not None and peak is not None
    return first, peak, last, (last.handled - first.handled) / (last.at - first.at)


def check(kind: str, first: Sample, peak: Sample, last: Sample, rate: float) -> None:
    print(f"{kind}: {rate:.0f} msg/s; peak RSS at {peak.line()}")
    print(f"{kind}: {first.line()}  →  {last.line()}")
    assert last.rss_kb <= 1.1 * first.rss_kb, f"{kind}: RSS grew {last.rss_kb / first.rss_kb:.2f}x"
    assert last.fds <= 1.1 * first.fds, f"{kind}: open fds {first.fds} → {last.fds}"
    assert last.connections <= max(first.connections * 1.1, first.connections), (first, last)


def test_no_leak_on_the_database_channel(worker: WorkerFactory) -> None:
    proc = worker("db", "--no-relay")
    check("database channel", *run_through_one_worker(proc, feed_database))
    assert proc.stop() == 0


def test_no_leak_on_rabbitmq(worker: WorkerFactory, rabbit_queue: str) -> None:
    proc = worker("rabbit", "--no-relay")
    check("RabbitMQ", *run_through_one_worker(proc, feed_rabbit))
    assert proc.stop() == 0
