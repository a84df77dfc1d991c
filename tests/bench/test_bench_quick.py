"""``bench/run.py --quick`` runs end to end and writes every figure with the documented keys.

A smoke test of the benchmark harness, not a timed test: it never checks a goal, only that each
figure was measured. It runs on PostgreSQL and RabbitMQ (``ECOTONE_TEST_DB=postgres``), in a
subprocess, with databases and queues of its own (``ECOTONE_BENCH_ID``). The peer comparison's figures
need the bench extra (the peers): ``test_bench_peers.py`` covers that harness with what the test extra
installs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.helpers.processes import REPO_ROOT
from tests.helpers.services import require

FIGURES = (
    "relay_vs_raw_publish",
    "celery_handling_vs_bare_task",
    "db_channel_vs_minimal_worker",
    "db_channel_scale_out",
    "db_channel_idle_wakeup",
    "latency_p50_vs_raw_roundtrip",
    "noisy_neighbor_p99_ratio",
    "delayed_poll_cost_1m_vs_1k",
    "worker_rss_100k_vs_1k",
)
KEYS = ("value", "goal", "baseline", "measured", "unit", "met")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.skipif(
        os.environ.get("ECOTONE_TEST_DB") != "postgres",
        reason="the benchmark measures PostgreSQL and RabbitMQ: run with ECOTONE_TEST_DB=postgres",
    ),
]


def test_quick_run_writes_every_figure(tmp_path):
    require("postgres")
    require("rabbitmq")
    env = {**os.environ, "ECOTONE_BENCH_ID": f"t{os.getpid()}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [sys.executable, "bench/run.py", "--quick", "--output", str(tmp_path), "--only", *FIGURES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, f"bench/run.py --quick failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(FIGURES) <= set(results), f"missing figures: {sorted(set(FIGURES) - set(results))}"
    for name in FIGURES:
        entry = results[name]
        assert all(key in entry for key in KEYS), f"{name} lacks {[k for k in KEYS if k not in entry]}"
        assert isinstance(entry["met"], bool), name
        for key in ("value", "baseline", "measured"):
            assert isinstance(entry[key], int | float) and math.isfinite(entry[key]) and entry[key] > 0, (name, key)
        if entry["value_is"] == "measured":  # an absolute figure: the baseline is context
            assert entry["value"] == pytest.approx(entry["measured"], rel=0.01), name
        else:
            assert entry["value"] == pytest.approx(entry["measured"] / entry["baseline"], rel=0.01), name
        assert isinstance(entry["goal"], str) and entry["goal"].split()[0] in (">=", "<="), name
        assert isinstance(entry["unit"], str) and entry["unit"], name
    assert results["worker_rss_100k_vs_1k"]["quick"] is True  # the smaller quick numbers are said so
    # The noisy-neighbour control: a third, again idle, burst per round, its ratios reported beside the figure.
    noisy = results["noisy_neighbor_p99_ratio"]
    control = noisy["control_idle_vs_idle"]
    assert len(control["round_ratios"]) == noisy["rounds"] == len(noisy["round_ratios"])
    assert all(r > 0 for r in control["round_ratios"]) and control["pooled_ratio"] > 0
    assert control["worst"] == pytest.approx(max(control["round_ratios"]), abs=0.001)
    # The database figure's pairs: one sample a side per round, each side first in every other round.
    db = results["db_channel_vs_minimal_worker"]
    assert db["rounds"] >= 2
    assert len(db["samples"]["baseline"]) == len(db["samples"]["measured"]) == db["rounds"]

    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert all(f"`{name}`" in report for name in FIGURES)
    assert "{{" not in report  # every verdict placeholder of bench/analysis.md filled in from results.json
    for name in FIGURES:  # the analysis states each figure's verdict as results.json has it
        word = "met" if results[name]["met"] else "not met"
        assert f"`{name}` ({word}" in report, name
    assert (tmp_path / "noisy_neighbor.png").stat().st_size > 0
