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
    latency_messages: int
    latency_interval: float
    noisy_backlogs: tuple[int, ...]
    noisy_rounds: int  # idle/loaded pairs for the ratio (the largest backlog)
    noisy_messages: int  # premium messages per burst
    noisy_interval: float
    delayed_big: int
    delayed_small: int
    delayed_polls: int
    rss_small: int
    rss_big: int


FULL = Sizes(
    rounds=3,
    relay_rows=4000,
    celery_messages=4000,
    db_rows=10000,
    latency_messages=200,
    latency_interval=0.01,
    noisy_backlogs=(0, 10_000, 50_000, 100_000),
    noisy_rounds=3,
    noisy_messages=200,
    noisy_interval=0.02,
    delayed_big=1_000_000,
    delayed_small=1_000,
    delayed_polls=200,
    rss_small=1_000,
    rss_big=100_000,
)

QUICK = Sizes(
    rounds=1,
    relay_rows=500,
    celery_messages=500,
    db_rows=2000,
    latency_messages=50,
    latency_interval=0.01,
    noisy_backlogs=(0, 2_000, 10_000),
    noisy_rounds=1,
    noisy_messages=50,
    noisy_interval=0.02,
    delayed_big=100_000,
    delayed_small=1_000,
    delayed_polls=50,
    rss_small=1_000,
    rss_big=10_000,
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
        """Run one round; repeat it (up to ``tries`` times) if it fails, e.g. on a broker connection closed under it.

        The machine is shared with other engineers' test suites, some of which close every RabbitMQ
        connection on purpose. A round that fails every time still fails the figure.
        """
        for attempt in range(1, tries + 1):
            try:
                return step()
            except Exception as exc:
                if attempt == tries:
                    raise
                self.repeated.append(f"{what}: {type(exc).__name__}: {exc}"[:300])
                self.log(f"  {what} failed ({type(exc).__name__}: {exc}); repeating it")
                from django.db import connections

                from ..infra import wait_for_services

                connections.close_all()  # a database restarted under us leaves broken connections behind
                time.sleep(2)
                wait_for_services(timeout=120)
        raise AssertionError("unreachable")


_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass
class Figure:
    """One line of results.json: ``value`` = ``measured`` / ``baseline``, judged against ``goal``."""

    title: str
    goal: str  # ">= 1.0" or "<= 1.5"
    baseline: float
    measured: float
    unit: str
    baseline_name: str
    measured_name: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return self.measured / self.baseline

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
            **self.details,
        }


def _round(value: float) -> float:
    return round(value, 4 if abs(value) < 10 else 1)
