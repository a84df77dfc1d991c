"""The peer comparison's harness (``python -m bench.peers``) at tiny numbers: our two channels, Celery
and the broker family's yardstick (bare psycopg and kombu).

Celery is a dependency of the package, so this runs wherever ``make test`` does; the other peers
(procrastinate, django-tasks-db, DBOS, dramatiq) come with the bench extra and are measured by
``make bench``. A smoke test, not a timed one: every phase measured, nothing lost or doubled on our
side (crashes included), and the crash of the requester right after its COMMIT lands where it should —
before Celery's on-commit publish, so that Celery loses that order's task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.processes import REPO_ROOT
from tests.helpers.services import require

TOOLS = ("ecotone_db", "ecotone_rabbit", "celery", "minimal_broker")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.skipif(
        os.environ.get("ECOTONE_TEST_DB") != "postgres",
        reason="the peer comparison runs on PostgreSQL and RabbitMQ: run with ECOTONE_TEST_DB=postgres",
    ),
]


def test_peer_harness_measures_us_and_celery(tmp_path):
    require("postgres")
    require("rabbitmq")
    env = {**os.environ, "ECOTONE_BENCH_ID": f"p{os.getpid()}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    out = tmp_path / "peers.json"
    args = ["--tools", ",".join(TOOLS), "--requests", "120", "--latency-messages", "20", "--crash-orders", "60"]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.peers", *args, "--stall-seconds", "10", "--json", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"bench.peers failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    results = json.loads(out.read_text())
    assert set(results) == set(TOOLS)
    for name, tool in results.items():
        assert tool["error"] is None, (name, tool["error"])
        assert tool["yardstick"] is (name == "minimal_broker"), name
        # The yardstick has no relay for a row a crash leaves behind: it skips the crash phase.
        phases = {"drain", "latency"} if tool["yardstick"] else {"drain", "latency", "crash"}
        assert set(tool["phases"]) == phases, name
        assert tool["rate"] > 0 and 0 < tool["p50_ms"] <= tool["p99_ms"], name
        assert tool["request_us"] > 0 and tool["request_without_enqueue_us"] > 0, name
        assert tool["phases"]["drain"]["orders"] == 120, name  # the baseline requests enqueue nothing
        if "crash" in phases:
            assert tool["phases"]["crash"]["orders"] == 60, name
    # The yardstick handles every order exactly once in the phases it runs.
    for phase, counts in results["minimal_broker"]["phases"].items():
        assert (counts["lost"], counts["doubled"]) == (0, 0), ("minimal_broker", phase, counts)
    for name in ("ecotone_db", "ecotone_rabbit"):
        for phase, counts in results[name]["phases"].items():
            assert (counts["lost"], counts["doubled"]) == (0, 0), (name, phase, counts)
    # The requester died after COMMIT and before the on-commit hook that would have published the task.
    assert results["celery"]["phases"]["crash"]["lost"] >= 1
