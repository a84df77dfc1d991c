"""What ``manage.py demo`` is made of: worker processes it starts and kills, and a report read from the databases.

Nothing here counts outcomes in memory: every number of the final table comes from the tenant
databases — the orders' stages and timestamps, the side-effect tables (charges, refunds,
shipments, cancellations, notifications) and ecotone_django's dead letters and retries.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from ecotone_django.models import DeadLetter, OutboxMessage
from example_project.fulfillment.models import Shipment
from example_project.notifications.models import Notification
from example_project.orders.messages import OrderStage
from example_project.orders.models import Cancellation, Order
from example_project.payments import gateway
from example_project.payments.models import Charge, Refund

OUTCOMES = ("completed", "cancelled", "refunded")


# -- worker processes -------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    """``manage.py consume_channel CHANNEL`` in its own process (and session), output to ``log``."""

    number: int
    channel: str
    log: Path
    env: Mapping[str, str]
    popen: subprocess.Popen[bytes] = field(init=False)
    _log_file: IO[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in reap()
        self.popen = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "consume_channel", self.channel],
            cwd=settings.BASE_DIR,
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C of the demo reaches the demo; it stops the workers itself
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_bytes().decode("utf-8", errors="replace")

    def is_ready(self) -> bool:
        return "consuming" in self.output()

    def kill9(self) -> None:
        """A crash: no cleanup, whatever the worker was in the middle of."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.reap(timeout=10)

    def terminate(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

    def reap(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            code = self.popen.wait()
        self._log_file.close()
        return code

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def __str__(self) -> str:
        return f"worker {self.number} ({self.channel}, pid {self.pid})"


def wait_until_ready(workers: Iterable[WorkerProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(workers)
    while pending:
        for worker in list(pending):
            if worker.is_ready():
                pending.remove(worker)
            elif worker.popen.poll() is not None:
                raise RuntimeError(f"{worker} exited with {worker.popen.returncode}:\n{worker.tail()}")
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"{pending[0]} not ready after {timeout:g} s:\n{pending[0].tail()}")
        time.sleep(0.05)


# -- reading the outcome from the databases ---------------------------------------------------


@dataclass
class TenantResult:
    tenant: str
    database: str
    channel: str
    placed: int
    outcomes: dict[str, int]
    paid_late: int
    lost: int
    doubled: int
    latencies: list[float]

    @property
    def settled(self) -> int:
        return sum(self.outcomes.values())

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile of the completed orders' latency, in seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ids(model: type, alias: str, prefix: str) -> set[str]:
    return set(model.objects.using(alias).filter(order_id__startswith=prefix).values_list("order_id", flat=True))  # type: ignore[attr-defined]


def classify(stage: str, order_id: str, facts: Mapping[str, set[str]]) -> str | None:
    """The order's settled outcome, or ``None`` while it is not settled (or inconsistent).

    An outcome counts only when every table agrees: a completed order was charged, shipped, not
    refunded and notified; a refunded one charged, refunded, not shipped, notified; a cancelled
    one cancelled, not shipped, not charged (or charged late and refunded), notified. An order the
    fake gateway pays (at once or late) is not settled before its charge exists.
    """
    charged, refunded, shipped = (order_id in facts[k] for k in ("charge", "refund", "shipment"))
    cancelled, notified = order_id in facts["cancellation"], order_id in facts["notification"]
    if not notified or (not charged and gateway.fate(order_id) is not gateway.Fate.NEVER):
        return None
    if stage == OrderStage.COMPLETED and charged and shipped and not refunded and not cancelled:
        return "completed"
    if stage == OrderStage.REFUNDED and charged and refunded and not shipped and not cancelled:
        return "refunded"
    if stage == OrderStage.CANCELLED and cancelled and not shipped and (refunded or not charged):
        return "cancelled"
    return None


def read_results(
    placed: Mapping[str, Sequence[str]], prefix: str, since: datetime, *, with_doubles: bool = True
) -> list[TenantResult]:
    """Per tenant: how the orders this run placed (ids starting with ``prefix``) stand in the databases."""
    ecotone: dict[str, Any] = settings.ECOTONE
    tenancy, dynamic = ecotone["TENANCY"], ecotone["CHANNELS"]["orders"]["OPTIONS"]
    by_alias: dict[str, list[str]] = {}
    for tenant in placed:
        by_alias.setdefault(tenancy["CONNECTIONS"].get(tenant, tenancy["DEFAULT_CONNECTION"]), []).append(tenant)
    results: list[TenantResult] = []
    for alias, tenants in by_alias.items():
        facts = {
            "charge": _ids(Charge, alias, prefix),
            "refund": _ids(Refund, alias, prefix),
            "shipment": _ids(Shipment, alias, prefix),
            "cancellation": _ids(Cancellation, alias, prefix),
            "notification": _ids(Notification, alias, prefix),
        }
        rows = Order.objects.using(alias).filter(order_id__startswith=prefix)
        orders = {o[0]: o[1:] for o in rows.values_list("order_id", "tenant", "stage", "placed_at", "finished_at")}
        for tenant in tenants:
            outcomes = dict.fromkeys(OUTCOMES, 0)
            paid_late = 0
            latencies: list[float] = []
            for order_id in placed[tenant]:
                row = orders.get(order_id)
                if row is None or row[0] != tenant:
                    continue
                outcome = classify(row[1], order_id, facts)
                if outcome is None:
                    continue
                outcomes[outcome] += 1
                if outcome == "cancelled" and order_id in facts["refund"]:
                    paid_late += 1
                if outcome == "completed" and row[3] is not None:
                    latencies.append((row[3] - row[2]).total_seconds())
            doubled = 0
            if with_doubles:
                # A second charge/refund/shipment/cancellation/notification of one order violates its
                # UNIQUE constraint: the handler fails, is retried, and is dead-lettered in the end.
                doubled = (
                    DeadLetter.objects.using(alias)
                    .filter(tenant=tenant, failed_at__gte=since, exception_type__contains="IntegrityError")
                    .count()
                    + OutboxMessage.objects.using(alias)
                    .filter(tenant=tenant, created_at__gte=since, last_error__startswith="IntegrityError")
                    .count()
                )
            results.append(
                TenantResult(
                    tenant=tenant,
                    database=alias,
                    channel=str(dynamic["mapping"].get(tenant, dynamic["default"])),
                    placed=len(placed[tenant]),
                    outcomes=outcomes,
                    paid_late=paid_late,
                    lost=len(placed[tenant]) - sum(outcomes.values()),
                    doubled=doubled,
                    latencies=latencies,
                )
            )
    order = list(placed)
    return sorted(results, key=lambda r: order.index(r.tenant))


def dead_letters(aliases: Iterable[str], since: datetime) -> list[str]:
    """One line per dead letter written during the run."""
    lines = []
    for alias in aliases:
        for letter in DeadLetter.objects.using(alias).filter(failed_at__gte=since).order_by("id"):
            lines.append(f"{alias}: {letter.tenant or '-'} {letter.handler} — {letter.reason}")
    return lines


# -- the table --------------------------------------------------------------------------------

COLUMNS = (
    ("tenant", 13, "<"),
    ("database", 13, "<"),
    ("channel", 15, "<"),
    ("placed", 7, ">"),
    ("completed", 10, ">"),
    ("cancelled", 10, ">"),
    ("refunded", 9, ">"),
    ("lost", 5, ">"),
    ("doubled", 8, ">"),
    ("p50_ms", 7, ">"),
    ("p99_ms", 7, ">"),
)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else str(round(seconds * 1000))


def table(results: Sequence[TenantResult]) -> list[str]:
    def line(values: Sequence[object]) -> str:
        return "  ".join(f"{value!s:{align}{width}}" for value, (_, width, align) in zip(values, COLUMNS, strict=True))

    def row(r: TenantResult) -> list[object]:
        o = r.outcomes
        return [r.tenant, r.database, r.channel, r.placed, o["completed"], o["cancelled"], o["refunded"], r.lost,
                r.doubled, _ms(r.percentile(50)), _ms(r.percentile(99))]  # fmt: skip

    total = TenantResult(
        tenant="ALL",
        database="",
        channel="",
        placed=sum(r.placed for r in results),
        outcomes={k: sum(r.outcomes[k] for r in results) for k in OUTCOMES},
        paid_late=sum(r.paid_late for r in results),
        lost=sum(r.lost for r in results),
        doubled=sum(r.doubled for r in results),
        latencies=[x for r in results for x in r.latencies],
    )
    header = line([name for name, _, _ in COLUMNS])
    return [header, "-" * len(header), *(line(row(r)) for r in results), "-" * len(header), line(row(total))]
