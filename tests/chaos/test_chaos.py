"""The fault suite, bounded: ``python -m tests.chaos.driver`` as a subprocess, its verdict read from the databases.

``make test`` collects it in the PostgreSQL run only (it needs PostgreSQL and RabbitMQ) at a bounded size —
about 300 orders and every kind of fault at least once, a few minutes at most. ``make chaos`` runs it at full
size. ``ECOTONE_CHAOS_ARGS`` adds driver options after the bounded defaults (later options win), e.g.::

    ECOTONE_CHAOS_ARGS="--orders 2000 --rate 40" pytest tests/chaos/test_chaos.py
    ECOTONE_CHAOS_ARGS="--faults=-postgres_restart,-rabbitmq_restart" make test   # no server restarts

Under ``CI=true`` every fault runs (CI runs the suites one after another: there is no one to disturb). Locally
the driver is ``--polite``: before a server restart (PostgreSQL, RabbitMQ) it waits up to 30 s for someone
else's tests or benchmarks on the machine to finish, and skips the restart if they do not — they would fail
with it. The test runs last in its session and closes this process's connections afterwards (see conftest).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.chaos.driver import parse_args
from tests.chaos.faults import Fault
from tests.helpers.processes import REPO_ROOT
from tests.helpers.services import in_ci, require

ENGINE = os.environ.get("ECOTONE_TEST_DB", "sqlite")

#: About 300 orders in 20 s, a fault every 1.5 to 4 s while they flow, every kind at least once; a payment
#: timeout of 1 s, so that timeouts race payments (cancellations, late refunds) as much as under a real outage.
BOUNDED = (
    "--orders", "300", "--rate", "15", "--seed", "1", "--timeout", "300", "--payment-timeout", "1",
    "--gap", "1.5", "4", "--pause", "3", "8", "--outage", "2", "5",
)  # fmt: skip


def driver_args() -> list[str]:
    args = [*BOUNDED, *shlex.split(os.environ.get("ECOTONE_CHAOS_ARGS", ""))]
    if not in_ci():
        args.append("--polite")
    return args


def run_driver(args: list[str], limit: float) -> tuple[int, str]:
    """Run the driver, echoing its output as it comes (``pytest -s`` shows it live; else on failure)."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}  # the driver uses the example's
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.driver", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as driver:
        watchdog = threading.Timer(limit, driver.kill)  # the driver has its own --timeout; this is the backstop
        watchdog.start()
        try:
            assert driver.stdout is not None
            for line in driver.stdout:
                lines.append(line)
                sys.stdout.write(line)
        finally:
            watchdog.cancel()
        returncode = driver.wait()
    return returncode, "".join(lines)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(0)  # bounded by the driver's own --timeout (plus setup), enforced below
@pytest.mark.skipif(ENGINE != "postgres", reason="the fault suite runs in the ECOTONE_TEST_DB=postgres run")
def test_nothing_is_lost_or_done_twice_under_faults(tmp_path: Path, fresh_connections_afterwards: None) -> None:
    require("postgres")
    require("rabbitmq")
    args = driver_args()
    options = parse_args(args)
    report = tmp_path / "report.json"
    returncode, output = run_driver([*args, "--report-json", str(report)], limit=options.timeout + 300)
    assert returncode == 0, f"the chaos driver exited with {returncode}:\n{output[-8000:]}"
    assert report.exists(), output[-4000:]
    verdict = json.loads(report.read_text())
    assert verdict["violations"] == [], output[-8000:]
    numbers = verdict["report"]
    assert (numbers["lost"], numbers["doubled"], numbers["rows in another tenant's database"]) == (0, 0, 0)
    assert numbers["orders placed"] == options.orders
    assert numbers["poison messages dead-lettered"] == f"{options.poison} of {options.poison}"
    # Every enabled kind of fault happened (or, locally, was skipped because others' tests were running).
    for fault in options.fault_list:
        happened = verdict["faults"][fault.value] + verdict["skipped"][fault.value]
        assert happened >= 1, f"{fault} was never injected:\n{output[-4000:]}"
        if in_ci() or not fault.disruptive:
            assert verdict["faults"][fault.value] >= 1, fault
    assert {e["fault"] for e in verdict["events"]} <= {f.value for f in Fault}
