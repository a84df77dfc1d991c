"""The peer comparison: the same workload through each tool, one after the other, on this machine.

For each tool, in its own database (and RabbitMQ queue):

1. **requests**: ``--requests`` requests flat out, no worker running (each creates an Order and enqueues
   its processing in the same transaction; one in four creates an Order only, for the enqueue's cost);
2. **drain**: one worker process handles that backlog: handled per second from the first to the last
   handler start;
3. **latency**: the worker idle and warm, requests paced ``interval`` apart: commit → handler start;
4. **crash**: requests flat out by a process that SIGKILLs itself right after its last commit, then a
   worker SIGKILLed mid-backlog and started again: lost and doubled effects, read from the database.
   A yardstick (``Tool.yardstick``: bare code with no recovery, not a peer) skips this phase.

Lost and doubled are counted in every phase; a peer's loss is a finding, reported as measured.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..config import postgres_params
from ..infra import SERVICE_FAILURE, BenchError, Proc, broker, celery_queue, median, percentile, wait_until
from .config import TOOL_ENV, TOOLS, Tool
from .tools import RECOVERY_SECONDS, SETTINGS, broker_queues, worker_command, worker_env

#: The phases every tool goes through; lost and doubled are counted in each.
PHASES = {"drain", "latency", "crash"}
ORDERS = "bench_shop_order"
SHIPMENTS = "bench_shop_shipment"


@dataclass(frozen=True)
class PeerSizes:
    requests: int  # requests that enqueue, drained by the worker (N)
    latency_messages: int
    latency_interval: float
    crash_orders: int
    stall_seconds: float  # no new shipment for this long: the rest is lost


@dataclass
class Phase:
    orders: int = 0
    handled: int = 0
    lost: int = 0
    doubled: int = 0


@dataclass
class ToolResult:
    name: str
    label: str
    family: str
    ours: bool
    settings: str
    yardstick: bool = False
    rate: float | None = None  # handled per second (drain)
    p50_ms: float | None = None  # commit → handler start
    p99_ms: float | None = None
    enqueue_us: float | None = None  # median request with enqueue minus median request without
    enqueue_call_us: float | None = None  # median time inside the enqueue call itself
    request_us: float | None = None
    request_without_enqueue_us: float | None = None
    lost: int | None = None  # crash phase
    doubled: int | None = None
    phases: dict[str, Phase] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("rate", "p50_ms", "p99_ms", "enqueue_us", "enqueue_call_us", "request_us"):
            if data[key] is not None:
                data[key] = round(data[key], 3)
        if data["request_without_enqueue_us"] is not None:
            data["request_without_enqueue_us"] = round(data["request_without_enqueue_us"], 3)
        return data


def installed(tool: Tool) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in tool.packages)


def _env(tool: Tool) -> dict[str, str | None]:
    return {"DJANGO_SETTINGS_MODULE": "bench.peers.settings", TOOL_ENV: tool.name, **worker_env(tool)}


def _connect(tool: Tool | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(**postgres_params(tool.database if tool else None), autocommit=True)  # type: ignore[arg-type]


class ToolRun:
    """One tool's database, queue and processes, and the four phases."""

    def __init__(self, tool: Tool, sizes: PeerSizes, log: Callable[[str], None]) -> None:
        self.tool = tool
        self.sizes = sizes
        self.log = log
        self.tmp = Path(tempfile.mkdtemp(prefix=f"ecotone-bench-{tool.name}-"))
        self.db: psycopg.Connection[Any] | None = None

    # -- set-up -----------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.drop()
        with _connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.tool.database}"')
        self._declare_queues()
        migrate = Proc([*worker_command_manage(), "migrate", "--verbosity", "0"], env=_env(self.tool))
        if migrate.wait(180) != 0:
            raise BenchError(f"migrate failed for {self.tool.name}:\n{migrate.output()[-3000:]}")
        migrate.stop()
        if self.tool.name == "dbos":  # DBOS creates its system tables when a process launches it
            with self.worker() as proc:
                proc.wait_for_output("dbos worker ready", 120)
        self.db = _connect(self.tool)

    def _declare_queues(self) -> None:
        if self.tool.family != "broker" or self.tool.name == "dramatiq":  # dramatiq declares its own
            return
        with broker() as conn:
            queue = celery_queue(self.tool.queue)(conn.channel())
            queue.declare()
            queue.purge()

    def drop(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        with _connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.tool.database}" WITH (FORCE)')
        names = broker_queues(self.tool)
        if names:
            with broker() as conn:
                channel = conn.channel()
                for name in names:
                    with contextlib.suppress(Exception):
                        channel.queue_delete(name)
                    with contextlib.suppress(Exception):
                        channel = conn.channel()
                        channel.exchange_delete(name)
                    channel = conn.channel()

    # -- processes --------------------------------------------------------------------------------------

    def worker(self) -> Proc:
        return Proc(worker_command(self.tool), env=_env(self.tool))

    def produce(
        self,
        count: int,
        *,
        interval: float = 0.0,
        baseline_every: int = 0,
        warm_up: int = 0,
        crash: bool = False,
        worker: Proc | None = None,
    ) -> list[tuple[int, bool, float, float, float]]:
        out = self.tmp / "requests.txt"
        args = ["--count", str(count), "--interval", str(interval), "--baseline-every", str(baseline_every)]
        args += ["--warm-up", str(warm_up), "--out", str(out)] + (["--crash"] if crash else [])
        proc = Proc.module("bench.peers.producer", *args, env=_env(self.tool))
        deadline = time.monotonic() + 120 + count * max(interval, 0.01)
        while proc.running():
            if worker is not None and not worker.running():
                raise BenchError(f"{self.tool.name} worker exited:\n{worker.output()[-3000:]}")
            if time.monotonic() > deadline:
                proc.stop()
                raise BenchError(f"{self.tool.name} producer did not finish:\n{proc.output()[-3000:]}")
            time.sleep(0.05)
        code = proc.popen.returncode
        output = proc.output()
        proc.stop()
        if code != (-signal.SIGKILL if crash else 0):
            raise BenchError(f"{self.tool.name} producer exited {code}:\n{output[-3000:]}")
        rows = []
        for line in out.read_text().splitlines():
            if line:
                order_id, with_task, commit_at, request_us, call_us = line.split()
                rows.append((int(order_id), with_task == "1", float(commit_at), float(request_us), float(call_us)))
        return rows

    # -- the database's word ----------------------------------------------------------------------------

    def _one(self, sql: str, *params: Any) -> Any:
        assert self.db is not None
        row = self.db.execute(sql, params).fetchone()
        assert row is not None
        return row[0] if len(row) == 1 else row

    def last_order(self) -> int:
        return int(self._one(f"SELECT coalesce(max(id), 0) FROM {ORDERS}"))

    def expected(self, after: int) -> int:
        return int(self._one(f"SELECT count(*) FROM {ORDERS} WHERE id > %s AND with_task", after))

    def handled(self, after: int) -> int:
        return int(self._one(f"SELECT count(DISTINCT order_id) FROM {SHIPMENTS} WHERE order_id > %s", after))

    def tally(self, after: int) -> Phase:
        orders, handled, lost, doubled = self._one(
            f"SELECT count(*), count(*) FILTER (WHERE n > 0), count(*) FILTER (WHERE n = 0), "
            f"coalesce(sum(n - 1) FILTER (WHERE n > 1), 0) FROM ("
            f" SELECT o.id, count(s.id) AS n FROM {ORDERS} o LEFT JOIN {SHIPMENTS} s ON s.order_id = o.id"
            f" WHERE o.id > %s AND o.with_task GROUP BY o.id) AS per_order",
            after,
        )
        return Phase(int(orders), int(handled), int(lost), int(doubled))

    def handled_at(self, after: int) -> dict[int, float]:
        """Order id → its first handler start (a second one is a doubled effect, counted by tally)."""
        assert self.db is not None
        rows = self.db.execute(
            f"SELECT order_id, min(handled_at) FROM {SHIPMENTS} WHERE order_id > %s GROUP BY order_id", (after,)
        ).fetchall()
        return {int(order_id): float(at) for order_id, at in rows}

    def wait_handled(self, after: int, procs: Sequence[Proc], *, at_least: float = 0.0) -> None:
        """Until every order after ``after`` is handled (and ``at_least`` seconds passed), or progress stops."""
        expected = self.expected(after)
        started = last_change = time.monotonic()
        seen = -1
        while True:
            now = time.monotonic()
            done = self.handled(after)
            if done != seen:
                seen, last_change = done, now
            if done >= expected and now - started >= at_least:
                return
            if now - last_change > max(self.sizes.stall_seconds, at_least):
                self.log(f"    {self.tool.name}: {expected - done} of {expected} orders not handled; giving up")
                return
            for proc in procs:
                if not proc.running():
                    raise BenchError(
                        f"{self.tool.name} worker exited ({proc.popen.returncode}):\n{proc.output()[-3000:]}"
                    )
            time.sleep(0.2)

    # -- the phases -------------------------------------------------------------------------------------

    def run(self) -> ToolResult:
        tool = self.tool
        result = ToolResult(tool.name, tool.label, tool.family, tool.ours, SETTINGS[tool.name], tool.yardstick)
        clock = time.monotonic()
        self.setup()
        result.seconds["setup"] = round(time.monotonic() - clock, 1)

        clock = time.monotonic()
        after = self.last_order()
        requests = self.produce(self.sizes.requests, baseline_every=4)
        with_task = [r for r in requests if r[1]]
        result.request_us = median(r[3] for r in with_task)
        result.request_without_enqueue_us = median(r[3] for r in requests if not r[1])
        result.enqueue_us = result.request_us - result.request_without_enqueue_us
        result.enqueue_call_us = median(r[4] for r in with_task)
        result.seconds["requests"] = round(time.monotonic() - clock, 1)

        clock = time.monotonic()
        with self.worker() as proc:
            self.wait_handled(after, [proc])
        starts = sorted(self.handled_at(after).values())
        if len(starts) >= 2 and starts[-1] > starts[0]:
            result.rate = (len(starts) - 1) / (starts[-1] - starts[0])
        result.phases["drain"] = self.tally(after)
        result.seconds["drain"] = round(time.monotonic() - clock, 1)

        clock = time.monotonic()
        after = self.last_order()
        with self.worker() as proc:
            paced = self.produce(
                self.sizes.latency_messages, interval=self.sizes.latency_interval, warm_up=5, worker=proc
            )
            self.wait_handled(after, [proc])
        started = self.handled_at(after)
        latencies = [(started[o] - commit) * 1000 for o, _, commit, _, _ in paced if o in started]
        if latencies:
            result.p50_ms = percentile(latencies, 0.5)
            result.p99_ms = percentile(latencies, 0.99)
        result.phases["latency"] = self.tally(after)
        result.seconds["latency"] = round(time.monotonic() - clock, 1)
        if tool.yardstick:
            return result

        clock = time.monotonic()
        result.phases["crash"] = self.crash()
        result.lost, result.doubled = result.phases["crash"].lost, result.phases["crash"].doubled
        result.seconds["crash"] = round(time.monotonic() - clock, 1)
        return result

    def crash(self) -> Phase:
        """The requester killed right after a commit, then the worker killed mid-backlog and restarted."""
        after = self.last_order()
        n = self.sizes.crash_orders
        self.produce(n, crash=True)
        with self.worker() as first:
            wait_until(lambda: self.handled(after) >= n // 2, 120 + n / 20, f"{n // 2} orders handled", first, 0.01)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(first.pid, signal.SIGKILL)
            first.popen.wait(30)
        with self.worker() as second:
            self.wait_handled(after, [second], at_least=RECOVERY_SECONDS[self.tool.name])
        return self.tally(after)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.drop()
        with contextlib.suppress(OSError):
            for child in self.tmp.iterdir():
                child.unlink()
            self.tmp.rmdir()


def worker_command_manage() -> list[str]:
    return [sys.executable, "manage.py"]


def _failed(tool: Tool, error: str) -> ToolResult:
    return ToolResult(tool.name, tool.label, tool.family, tool.ours, SETTINGS[tool.name], tool.yardstick, error=error)


def run_tools(names: Sequence[str], sizes: PeerSizes, log: Callable[[str], None]) -> dict[str, ToolResult]:
    """Measure each named tool in turn; a tool that fails is reported with its error, the others go on."""
    results: dict[str, ToolResult] = {}
    for name in names:
        tool = TOOLS[name]
        if not installed(tool):
            missing = f"not installed ({', '.join(tool.packages)}): pip install -e '.[bench]'"
            results[name] = _failed(tool, missing)
            log(f"  {name}: not installed")
            continue
        started = time.monotonic()
        for attempt in (1, 2):
            run = ToolRun(tool, sizes, log)
            try:
                result = run.run()
            except Exception as exc:
                result = _failed(tool, f"{type(exc).__name__}: {exc}"[-3000:])
            finally:
                run.close()
            if attempt == 1 and result.error and SERVICE_FAILURE.search(result.error):
                # Another suite restarted PostgreSQL or RabbitMQ under this tool's processes: measure it again.
                log(f"  {name}: a service connection failed ({result.error[-300:]!r}); measuring it again")
                continue
            break
        result.seconds["total"] = round(time.monotonic() - started, 1)
        results[name] = result
        if result.error:
            log(f"  {name}: ERROR {result.error[:500]}")
        else:
            crash = (
                "no crash phase (yardstick)" if tool.yardstick else f"crash lost {result.lost} doubled {result.doubled}"
            )
            log(
                f"  {name:16} {result.rate or 0:8,.0f}/s  p50 {result.p50_ms or 0:7.2f} ms"
                f"  p99 {result.p99_ms or 0:8.2f} ms"
                f"  enqueue {result.enqueue_us or 0:6.0f} µs (call {result.enqueue_call_us or 0:5.0f})"
                f"  {crash}"
                f"  phases {', '.join(f'{k}: {v.lost}/{v.doubled}' for k, v in result.phases.items())}"
                f"  ({result.seconds['total']:.0f} s)"
            )
    return results
