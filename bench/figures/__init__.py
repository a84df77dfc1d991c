"""The figures ``bench/run.py`` measures: each one a ratio of the product against a raw baseline, same run.

A figure function takes the :class:`Context` and returns a :class:`Figure`. Subjects and baselines run
interleaved (baseline, subject, baseline, subject, …) and the figure takes medians, so that the load
other processes put on the machine meanwhile hits both sides alike.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does: the full run (``make bench``) or the smoke run (``--quick``)."""

    rounds: int
    relay_rows: int
    celery_messages: int
    db_rows: int
    db_rounds: int  # minimal worker / consume_channel pairs, alternating which goes first
    latency_messages: int
    latency_interval: float
    noisy_backlogs: tuple[int, ...]
    noisy_rounds: int  # idle/loaded pairs at the largest backlog; the figure is the worst pair
    noisy_messages: int  # premium messages per burst
    noisy_interval: float
    delayed_big: int
    delayed_small: int
    delayed_polls: int
    rss_small: int
    rss_big: int
    scale_rows: int  # messages drained by 1, 2 and 4 worker processes
    scale_rounds: int
    wakeup_messages: int  # sends to an idle database-channel worker
    peer_requests: int  # the peer comparison's N per tool
    peer_latency_messages: int
    peer_latency_interval: float
    peer_crash_orders: int
    peer_stall_seconds: float


FULL = Sizes(
    rounds=3,
    relay_rows=10_000,  # 100 batches a round: fewer made the ratio swing between rounds
    celery_messages=4000,
    db_rows=10000,
    db_rounds=6,
    latency_messages=200,
    latency_interval=0.01,
    noisy_backlogs=(0, 10_000, 50_000, 100_000),
    noisy_rounds=5,
    noisy_messages=200,
    noisy_interval=0.02,
    delayed_big=1_000_000,
    delayed_small=1_000,
    delayed_polls=200,
    rss_small=1_000,
    rss_big=100_000,
    scale_rows=20_000,
    scale_rounds=2,
    wakeup_messages=100,
    peer_requests=20_000,
    peer_latency_messages=1_000,
    peer_latency_interval=0.01,
    peer_crash_orders=2_000,
    peer_stall_seconds=20.0,
)

QUICK = Sizes(
    rounds=1,
    relay_rows=500,
    celery_messages=500,
    db_rows=2000,
    db_rounds=2,
    latency_messages=50,
    latency_interval=0.01,
    noisy_backlogs=(0, 2_000, 10_000),
    noisy_rounds=2,
    noisy_messages=50,
    noisy_interval=0.02,
    delayed_big=100_000,
    delayed_small=1_000,
    delayed_polls=50,
    rss_small=1_000,
    rss_big=10_000,
    scale_rows=4_000,
    scale_rounds=1,
    wakeup_messages=30,
    peer_requests=1_000,
    peer_latency_messages=100,
    peer_latency_interval=0.01,
    peer_crash_orders=300,
    peer_stall_seconds=15.0,
)


@dataclass
class Context:
    sizes: Sizes
    quick: bool
    output: Path
    log: Callable[[str], None]
    #: Data one figure leaves for another (the single-queue worker's memory samples for worker_rss).
    extras: dict[str, Any] = field(default_factory=dict)
    #: Rounds that had to be repeated (e.g. another test suite closed every broker connection meanwhile).
    repeated: list[str] = field(default_factory=list)

    def attempt(self, what: str, step: Callable[[], T], tries: int = 4) -> T:
        """Run one round; repeat it (up to ``tries`` times) only if a connection failed under it.

        The machine is shared with other engineers' test suites, some of which close every RabbitMQ
        connection on purpose: a round whose own connection broke is repeated. Anything else — a message
        lost or handled twice, a queue that never drained, a worker that died — fails the figure at once.
        """
        for attempt in range(1, tries + 1):
            try:
                return step()
            except Exception as exc:
                if attempt == tries or not _connection_failure(exc):
                    raise
                self.repeated.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
                self.log(f"  {what} failed ({type(exc).__name__}: {exc}); repeating it")
                from django.db import connections

                from ..infra import wait_for_services

                connections.close_all()  # a database restarted under us leaves broken connections behind
                time.sleep(2)
                wait_for_services(timeout=120)
        raise AssertionError("unreachable")


def _connection_failure(exc: BaseException) -> bool:
    """A broken or refused connection, of the bench process or of a process it started (never a correctness failure)."""
    import amqp.exceptions
    import kombu.exceptions
    import psycopg
    from django.db import utils

    from ..infra import SERVICE_FAILURE, BenchError, CorrectnessError

    if isinstance(exc, CorrectnessError):
        return False
    if isinstance(exc, BenchError) and SERVICE_FAILURE.search(str(exc)):
        return True  # a worker or sender process of the round could not reach a restarted service
    retriable = (
        ConnectionError,
        TimeoutError,
        psycopg.OperationalError,
        utils.OperationalError,
        utils.InterfaceError,
        kombu.exceptions.OperationalError,
        amqp.exceptions.ConnectionError,
    )
    return isinstance(exc, retriable)


_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass
class Figure:
    """One line of results.json: ``value`` = ``measured`` / ``baseline``, judged against ``goal``.

    An ``absolute`` figure is judged on ``measured`` itself (e.g. a latency in ms, a count of lost
    messages); its baseline is context measured in the same run, not a divisor.
    """

    title: str
    goal: str  # ">= 1.0" or "<= 1.5"
    baseline: float
    measured: float
    unit: str
    baseline_name: str
    measured_name: str
    details: dict[str, Any] = field(default_factory=dict)
    absolute: bool = False

    @property
    def value(self) -> float:
        return self.measured if self.absolute else self.measured / self.baseline

    @property
    def met(self) -> bool:
        op, threshold = self.goal.split()
        return bool(_COMPARE[op](round(self.value, 6), float(threshold)))

    def as_json(self) -> dict[str, Any]:
        return {
            "value": round(self.value, 4),
            "goal": self.goal,
            "baseline": _round(self.baseline),
            "measured": _round(self.measured),
            "unit": self.unit,
            "met": self.met,
            "title": self.title,
            "baseline_is": self.baseline_name,
            "measured_is": self.measured_name,
            "value_is": "measured" if self.absolute else "measured / baseline",
            **self.details,
        }


def _round(value: float) -> float:
    return round(value, 4 if abs(value) < 10 else 1)
