"""``python -m bench.tasks_vs_db_worker [--tasks N] [--paced N --interval S] [--json FILE]``.

The same ``django.tasks`` task through our OutboxBackend (worker: ``consume_channel peer_db``) and through
django-tasks-db (worker: ``db_worker``), one after the other in the same run, each in its own PostgreSQL
database. The task writes one row (the peer comparison's ``Shipment``); each request creates an ``Order``
and enqueues the task in the same ``atomic()`` block.

1. **drain**: ``--tasks`` requests with no worker running, then one worker process drains the backlog:
   tasks per second from the first task's start to the last one's finish;
2. **paced**: the worker idle and warm, ``--paced`` requests ``--interval`` apart: enqueue → finished, p50
   and p99, from each backend's own result rows (``enqueued_at``, ``finished_at``: the same definition).

Both phases check that every task finished ``SUCCESSFUL`` once (one ``Shipment`` per order).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.infra import BenchError, Proc, percentile, wait_until
from bench.peers.config import TOOL_ENV, TOOLS, Tool
from bench.peers.harness import ToolRun
from bench.peers.tools import worker_command

SETTINGS = "bench.tasks_settings"
#: Each side: the peer tool whose database and worker command it uses, and its result table.
SIDES = {
    "ecotone_tasks": (TOOLS["ecotone_db"], "ecotone_task_result"),
    "django_tasks_db": (TOOLS["django_tasks_db"], "django_tasks_database_dbtaskresult"),
}
WORKERS = {
    "ecotone_tasks": [sys.executable, "manage.py", "consume_channel", "peer_db"],
    "django_tasks_db": list(worker_command(TOOLS["django_tasks_db"])),  # as in the peer comparison
}


def _env(tool: Tool) -> dict[str, str | None]:
    return {"DJANGO_SETTINGS_MODULE": SETTINGS, TOOL_ENV: tool.name}


def produce(count: int, interval: float) -> None:
    """The requests (run in a child process with the side's settings)."""
    import django

    django.setup()
    from django.db import transaction

    from bench.peers.shop.models import Order
    from bench.tasks_jobs import ship_order

    tick = time.monotonic()
    for _ in range(count):
        with transaction.atomic():
            order = Order.objects.create(with_task=True)
            ship_order.enqueue(order.id)
        if interval:
            tick += interval
            time.sleep(max(0.0, tick - time.monotonic()))


class Side:
    def __init__(self, name: str, log: Any) -> None:
        self.name = name
        self.tool, self.table = SIDES[name]
        self.log = log
        self.run = ToolRun(self.tool, None, log)  # type: ignore[arg-type]

    def setup(self) -> None:
        self.run.setup()

    def requests(self, count: int, interval: float = 0.0, worker: Proc | None = None) -> None:
        args = ["--produce", str(count), "--interval", str(interval)]
        proc = Proc.module("bench.tasks_vs_db_worker", *args, env=_env(self.tool))
        code = proc.wait(600 + count * interval)
        if code != 0:
            raise BenchError(f"{self.name} requests failed ({code}):\n{proc.output()[-3000:]}")
        proc.stop()

    def worker(self) -> Proc:
        return Proc(WORKERS[self.name], env=_env(self.tool))

    def rows(self) -> list[tuple[str, float, float, float]]:
        assert self.run.db is not None
        sql = (
            f"SELECT status, extract(epoch from enqueued_at), extract(epoch from started_at), "
            f"extract(epoch from finished_at) FROM {self.table} ORDER BY enqueued_at"
        )
        return [(s, float(e), float(st or 0), float(f or 0)) for s, e, st, f in self.run.db.execute(sql).fetchall()]

    def finished(self) -> int:
        assert self.run.db is not None
        row = self.run.db.execute(f"SELECT count(*) FROM {self.table} WHERE finished_at IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    def check_once(self, expected: int) -> None:
        tally = self.run.tally(0)
        statuses = {s for s, *_ in self.rows()}
        if tally.lost or tally.doubled or tally.orders != expected or statuses != {"SUCCESSFUL"}:
            raise BenchError(f"{self.name}: {tally} statuses {statuses}")

    def truncate_results(self) -> None:
        assert self.run.db is not None
        self.run.db.execute(f"TRUNCATE {self.table}")


def measure(name: str, tasks: int, paced: int, interval: float, log: Any) -> dict[str, Any]:
    side = Side(name, log)
    try:
        side.setup()
        t0 = time.monotonic()
        side.requests(tasks)
        enqueue_seconds = time.monotonic() - t0
        with side.worker() as proc:
            wait_until(lambda: side.finished() >= tasks, 600, f"{tasks} {name} tasks finished", proc, 0.2)
        rows = side.rows()
        side.check_once(tasks)
        first_start, last_finish = min(r[2] for r in rows), max(r[3] for r in rows)
        rate = (len(rows) - 1) / (last_finish - first_start)
        side.truncate_results()
        with side.worker() as proc:
            side.requests(paced, interval, proc)
            wait_until(lambda: side.finished() >= paced, 120, f"{paced} paced {name} tasks", proc, 0.05)
        latencies = [(f - e) * 1000 for _, e, _, f in side.rows()]
        side.check_once(tasks + paced)
        return {
            "tasks": tasks,
            "enqueue_per_s": round(tasks / enqueue_seconds, 1),
            "drain_per_s": round(rate, 1),
            "paced": paced,
            "interval_s": interval,
            "p50_ms": round(percentile(latencies, 0.5), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
        }
    finally:
        side.run.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--paced", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--produce", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce is not None:
        produce(args.produce, args.interval)
        return 0
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    results = {}
    for name in args.sides.split(","):
        started = time.monotonic()
        results[name] = measure(name, args.tasks, args.paced, args.interval, print)
        r = results[name]
        print(
            f"{name:16} enqueue {r['enqueue_per_s']:8,.0f}/s  drain {r['drain_per_s']:8,.0f}/s"
            f"  enqueue→finished p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms"
            f"  ({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
