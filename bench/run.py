"""``make bench`` / ``python bench/run.py [--quick] [--output DIR] [--only NAME ...]``.

Measures ecotone_django on the local PostgreSQL and RabbitMQ against raw baselines and against the
peers a Django team would install instead (``bench/peers/``), all taken in the same run, then writes
``results.json`` (figure name → value, goal, baseline, measured, unit, met, details), ``run.json`` (the
run's machine, load and duration), ``BENCHMARKS.md`` and its plots.
Without ``--output`` the JSON files and the plot go to ``bench/`` and the report to ``BENCHMARKS.md`` at
the repository root; ``--report-only`` rewrites the report from the JSON files without measuring.

It creates its own databases (``ecotone_bench_default``, ``ecotone_bench_big_corp``, and one per peer
tool) and queues (``ecotone_bench_*``) and drops them at the end (``--keep`` leaves the first two).
``ECOTONE_BENCH_ID`` namespaces all of them, so that two runs never meet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python bench/run.py` puts bench/ first, not the repository
    sys.path.insert(0, str(REPO_ROOT))


def _figures() -> dict[str, Callable[[Any], Any]]:
    from bench.figures import dbchannel, latency, peers, scale, tasks, throughput

    return {
        "relay_vs_raw_publish": throughput.relay_vs_raw_publish,
        "celery_handling_vs_bare_task": throughput.celery_handling_vs_bare_task,
        "db_channel_vs_minimal_worker": dbchannel.db_channel_vs_minimal_worker,
        "db_channel_scale_out": dbchannel.db_channel_scale_out,
        "db_channel_idle_wakeup": dbchannel.db_channel_idle_wakeup,
        "latency_p50_vs_raw_roundtrip": latency.latency_p50_vs_raw_roundtrip,
        "noisy_neighbor_p99_ratio": latency.noisy_neighbor_p99_ratio,
        "delayed_poll_cost_1m_vs_1k": scale.delayed_poll_cost_1m_vs_1k,
        "worker_rss_100k_vs_1k": scale.worker_rss_100k_vs_1k,
        "peers_db_throughput_vs_best": peers.peers_db_throughput,
        "peers_db_p99_vs_best": peers.peers_db_p99,
        "peers_broker_throughput_vs_best": peers.peers_broker_throughput,
        "peers_broker_p99_vs_best": peers.peers_broker_p99,
        "peers_broker_p99_vs_minimal": peers.peers_broker_p99_vs_minimal,
        "peers_ours_lost_doubled": peers.peers_ours_lost_doubled,
        "tasks_vs_db_worker": tasks.tasks_vs_db_worker,
    }


FIGURE_NAMES = (
    "relay_vs_raw_publish",
    "celery_handling_vs_bare_task",
    "db_channel_vs_minimal_worker",
    "db_channel_scale_out",
    "db_channel_idle_wakeup",
    "latency_p50_vs_raw_roundtrip",
    "noisy_neighbor_p99_ratio",
    "delayed_poll_cost_1m_vs_1k",
    "worker_rss_100k_vs_1k",
    "peers_db_throughput_vs_best",
    "peers_db_p99_vs_best",
    "peers_broker_throughput_vs_best",
    "peers_broker_p99_vs_best",
    "peers_broker_p99_vs_minimal",
    "peers_ours_lost_doubled",
    "tasks_vs_db_worker",
)
PEER_NAMES = ("procrastinate", "django_tasks_db", "dbos", "celery", "dramatiq")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run with small numbers (a few minutes)")
    parser.add_argument("--output", type=Path, default=None, help="directory for results.json, BENCHMARKS.md, plots")
    parser.add_argument("--only", nargs="+", choices=FIGURE_NAMES, default=None, help="measure only these figures")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases and queues afterwards")
    parser.add_argument(
        "--peers",
        nargs="+",
        choices=PEER_NAMES,
        default=None,
        help="compare with these peers only (default: all; our two channels are always measured)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: write BENCHMARKS.md again from results.json and run.json (after editing analysis.md)",
    )
    return parser.parse_args(argv)


def _machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def _setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django
    from django.core.management import call_command
    from django.db import connections

    from bench.config import DATABASE_NAMES

    django.setup()
    connections.close_all()  # when repeated: the databases were just dropped and made again
    for alias in DATABASE_NAMES:
        call_command("migrate", database=alias, verbosity=0, interactive=False)


def _setup(infra: Any) -> None:
    infra.wait_for_services(timeout=120)
    infra.create_databases()
    _setup_django()
    infra.declare_queues()


def _teardown(infra: Any) -> None:
    from django.db import connections

    connections.close_all()
    infra.drop_databases()
    infra.delete_queues()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"  # this process and every worker it starts
    from bench import infra
    from bench.figures import FULL, QUICK, Context
    from bench.report import write_report

    output = args.output.resolve() if args.output else None
    json_dir = output or REPO_ROOT / "bench"
    report_path = (output or REPO_ROOT) / "BENCHMARKS.md"
    json_dir.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    ctx = Context(sizes=QUICK if args.quick else FULL, quick=args.quick, output=json_dir, log=log)
    if args.peers:
        ctx.extras["peer_tools"] = list(args.peers)
    if args.report_only:
        previous = json.loads((json_dir / "results.json").read_text())
        write_report(previous, json.loads((json_dir / "run.json").read_text()), ctx, report_path)
        log(f"wrote {report_path}")
        return 0
    machine = _machine()
    started = time.monotonic()
    results: dict[str, Any] = {}
    failed = False
    try:
        ctx.attempt("setting up the bench databases and queues", lambda: _setup(infra))
        figures = _figures()
        for name in args.only or FIGURE_NAMES:
            log(f"== {name}")
            t0 = time.monotonic()
            try:
                figure = figures[name](ctx)
            except Exception as exc:
                failed = True
                traceback.print_exc()
                results[name] = {
                    "value": None,
                    "goal": None,
                    "baseline": None,
                    "measured": None,
                    "unit": None,
                    "met": False,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                }
            else:
                results[name] = figure.as_json()
                log(
                    f"   {name} = {figure.value:.3f} (goal {figure.goal}: {'met' if figure.met else 'NOT met'}); "
                    f"baseline {figure.baseline:,.2f} {figure.unit}, measured {figure.measured:,.2f} {figure.unit}"
                )

            results[name]["quick"] = args.quick
            results[name]["seconds"] = round(time.monotonic() - t0, 1)
            results[name]["loadavg_1m"] = round(os.getloadavg()[0], 2)
    finally:
        if not args.keep:
            try:
                ctx.attempt("dropping the bench databases and queues", lambda: _teardown(infra))
            except Exception as exc:  # the results are still worth writing
                log(f"could not drop the bench databases and queues: {type(exc).__name__}: {exc}")
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    run = {
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine,
        "repeated": ctx.repeated,
    }
    # results.json maps each figure name to its entry and nothing else; the run's own facts go to run.json.
    (json_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (json_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    write_report(results, run, ctx, report_path)
    log(f"wrote {json_dir / 'results.json'} and {report_path} in {run['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
