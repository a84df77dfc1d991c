"""Scale figures: the cost of a poll with a million delayed messages, and a worker's memory over time."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from ..infra import (
    CorrectnessError,
    HandlerLog,
    Proc,
    RowSpec,
    connect,
    load_rows,
    median,
    outbox_rows,
    relay_failures,
    truncate,
    vacuum_analyze,
)
from . import Context, Figure
from .throughput import DB_ROWS


def _delayed(channel: str, handler: str, message_type: str) -> RowSpec:
    # Due between one and thirty days from now, spread over the range like real saga timeouts and retries.
    return RowSpec(
        channel, handler, message_type, delay=lambda seq: timedelta(days=1, seconds=(seq * 7919) % 2_592_000)
    )


DELAYED_DB = _delayed(DB_ROWS.channel, DB_ROWS.handler, DB_ROWS.message_type)
DELAYED_RABBIT = _delayed("bench_rabbit", "bench.handlers.on_rabbit", "bench.handlers.PingRabbit")


def _load_delayed(alias: str, count: int) -> None:
    """``count`` delayed rows in ``alias``, half for the database channel and half for the Celery channel."""
    half = count // 2
    load_rows(alias, outbox_rows(DELAYED_DB, half))
    load_rows(alias, outbox_rows(DELAYED_RABBIT, count - half, start=half))


def _plan(alias: str) -> list[str]:
    """EXPLAIN of the worker's due-row claim, as PostgreSQL plans it on this table."""
    sql = (
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT * FROM ecotone_outbox"
        " WHERE channel IN (%s) AND available_at <= now() ORDER BY available_at, id LIMIT 10 FOR UPDATE SKIP LOCKED"
    )
    with connect(alias) as conn:
        return [row[0] for row in conn.execute(sql, (DB_ROWS.channel,)).fetchall()]


def delayed_poll_cost_1m_vs_1k(ctx: Context) -> Figure:
    """A poll (relay sweep, worker claim) with 1,000,000 delayed messages pending ÷ with 1,000."""
    from ecotone_django.outbox import Relay
    from ecotone_django.worker import Worker

    big, small = ctx.sizes.delayed_big, ctx.sizes.delayed_small
    # Same server, same table definition: the big backlog in one tenant database, the small in the other.
    where = {"default": big, "big_corp": small}

    def load() -> None:
        for alias, count in where.items():
            truncate(alias)
            started = time.monotonic()
            _load_delayed(alias, count)
            vacuum_analyze(alias)
            ctx.log(f"  loaded {count:,} delayed rows into {alias} in {time.monotonic() - started:.1f} s")

    def measure() -> dict[str, dict[str, list[float]]]:
        relays = {alias: Relay(aliases=[alias]) for alias in where}
        worker = Worker(["bench_db"], relay=False)
        timings: dict[str, dict[str, list[float]]] = {alias: {"relay": [], "worker": []} for alias in where}

        def poll(alias: str, record: bool) -> None:
            t0 = time.perf_counter()
            relayed = relays[alias].run_once()
            t1 = time.perf_counter()
            claimed = worker.consume_database_batch(alias)
            t2 = time.perf_counter()
            if relayed or claimed:
                raise RuntimeError(f"a poll found due rows in {alias} ({relayed} relayed, {claimed} claimed)")
            if alias in failures.aliases:  # the relay swallows errors; a failed sweep is no measurement
                raise RuntimeError(f"the relay's sweep of {alias} failed")
            if record:
                timings[alias]["relay"].append((t1 - t0) * 1000)
                timings[alias]["worker"].append((t2 - t1) * 1000)

        with relay_failures() as failures:
            for _ in range(20):  # warm-up: connections, prepared plans, caches
                for alias in where:
                    poll(alias, record=False)
            for _ in range(ctx.sizes.delayed_polls):
                for alias in ("big_corp", "default"):  # interleaved
                    poll(alias, record=True)
        return timings

    ctx.attempt("loading the delayed messages", load)
    timings = ctx.attempt("polling", measure)
    plan = _plan("default")
    cost: dict[str, Any] = {
        alias: {kind: round(median(values), 4) for kind, values in kinds.items()} for alias, kinds in timings.items()
    }
    ratios = {kind: cost["default"][kind] / cost["big_corp"][kind] for kind in ("relay", "worker")}
    worst = max(ratios, key=lambda k: ratios[k])
    for alias in where:
        truncate(alias)
    ctx.log(
        f"  poll ms (1k / big): relay {cost['big_corp']['relay']} / {cost['default']['relay']}, "
        f"worker {cost['big_corp']['worker']} / {cost['default']['worker']}"
    )
    return Figure(
        title=f"Poll cost with {big:,} pending delayed messages vs {small:,}",
        goal="<= 2",
        baseline=cost["big_corp"][worst],
        measured=cost["default"][worst],
        unit="ms per poll",
        baseline_name=f"{small:,} delayed rows pending: median ms of one poll ({worst}, the worse ratio)",
        measured_name=f"{big:,} delayed rows pending: median ms of one poll ({worst})",
        details={
            "pending_big": big,
            "pending_small": small,
            "polls": ctx.sizes.delayed_polls,
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "median_ms": cost,
            "polls_measured": "Relay([alias]).run_once(), Worker(['bench_db']).consume_database_batch(alias)",
            "claim_plan": plan,
        },
    )


def _rss_run(count: int, checkpoints: list[int]) -> dict[int, int]:
    """RSS (kB) of one consume_channel process at each checkpoint while it handles ``count`` messages."""
    truncate("default")
    load_rows("default", outbox_rows(DB_ROWS, count))
    vacuum_analyze("default")
    with HandlerLog() as log:
        env = {**log.env, "BENCH_RSS_AT": ",".join(map(str, checkpoints))}
        with Proc.manage("consume_channel", "bench_db", "--stop-when-empty", "--no-relay", env=env) as proc:
            proc.wait(120 + count / 100)
            output = proc.output()
        rss, handled = log.rss(), log.count()
    truncate("default")
    if handled != count or set(checkpoints) - set(rss):
        raise CorrectnessError(f"the worker handled {handled} of {count} messages; RSS at {rss}\n{output[-2000:]}")
    return rss


def worker_rss_100k_vs_1k(ctx: Context) -> Figure:
    """Resident memory of one database-channel worker after 100,000 messages ÷ after 1,000."""
    small, big = ctx.sizes.rss_small, ctx.sizes.rss_big
    checkpoints = sorted({small, big // 10, big // 2, big})
    sampled = ctx.extras.get("single_drain_rss", {})
    if small in sampled and big in sampled:
        # The noisy-neighbour figure's single-queue worker handled that many messages: its samples serve.
        rss, source = sampled, "the single-queue worker of noisy_neighbor_p99_ratio (consume_channel bench_orders)"
    else:
        rss = ctx.attempt("worker RSS run", lambda: _rss_run(big, checkpoints))
        source = "consume_channel bench_db --stop-when-empty"
    ctx.log("  RSS kB at " + ", ".join(f"{n:,}: {kb:,}" for n, kb in sorted(rss.items())))
    return Figure(
        title=f"Worker resident memory after {big:,} messages vs after {small:,}",
        goal="<= 1.1",
        baseline=rss[small],
        measured=rss[big],
        unit="kB",
        baseline_name=f"VmRSS of one database-channel worker after {small:,} messages",
        measured_name=f"VmRSS of the same process after {big:,} messages",
        details={
            "messages_small": small,
            "messages_big": big,
            "note": f"--quick: {big:,} vs {small:,} messages, not 100,000 vs 1,000" if ctx.quick else "",
            "worker": source,
            "rss_kb_at": {str(n): kb for n, kb in sorted(rss.items())},
        },
    )
