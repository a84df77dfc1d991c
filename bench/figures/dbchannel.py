"""Database-channel figures: our worker against the least a worker must do, scale-out, idle wake-up."""

from __future__ import annotations

import random
import threading
import time
from contextlib import ExitStack

from ..infra import (
    BenchError,
    CorrectnessError,
    HandlerLog,
    Proc,
    connect,
    load_rows,
    median,
    outbox_rows,
    percentile,
    rate,
    settle,
    truncate,
    vacuum_analyze,
    wait_until,
)
from . import Context, Figure
from .throughput import DB_ROWS, RAW_CLAIM, _db_channel, _fresh_queue, _raw_loop


def _claim_size() -> int:
    from django.conf import settings

    return int(settings.ECOTONE["WORKER"]["CLAIM_SIZE"])


def _minimal_worker(n: int) -> float:
    """Msg/s of ``bench.minimal_worker`` (bare psycopg) over ``n`` due rows, from its handler's marks."""
    _fresh_queue(n)
    with HandlerLog() as log:
        with Proc.module("bench.minimal_worker", DB_ROWS.channel, str(_claim_size()), env=log.env) as proc:
            proc.wait(60 + n / 100)
            output = proc.output()
        if log.count() != n:
            raise CorrectnessError(f"the minimal worker handled {log.count()} of {n} messages\n{output[-2000:]}")
        return rate(log.marks())


def db_channel_vs_minimal_worker(ctx: Context) -> Figure:
    """A DatabaseChannel worker process ÷ the least a worker must do, in bare psycopg, over as many rows."""
    n = ctx.sizes.db_rows
    floor: list[float] = []
    ours: list[float] = []
    raw: list[float] = []
    settle("default")  # the previous figure's WAL and dead rows are not this figure's cost
    for r in range(ctx.sizes.db_rounds):
        minimal_first = r % 2 == 0  # each side goes first in every other round
        if minimal_first:
            floor.append(ctx.attempt(f"minimal worker round {r + 1}", lambda: _minimal_worker(n)))
        ours.append(ctx.attempt(f"consume_channel round {r + 1}", lambda: _db_channel(n)))
        if not minimal_first:
            floor.append(ctx.attempt(f"minimal worker round {r + 1}", lambda: _minimal_worker(n)))
        raw.append(ctx.attempt(f"raw SKIP LOCKED loop round {r + 1}", lambda: _raw_loop(n)))
        ctx.log(
            f"  round ({'minimal worker' if minimal_first else 'consume_channel'} first): minimal worker "
            f"{floor[-1]:,.0f}/s  consume_channel {ours[-1]:,.0f}/s  (raw claim-and-delete loop {raw[-1]:,.0f}/s)"
        )
    truncate("default")
    return Figure(
        title="Database channel worker vs the least a worker must do (bare psycopg), PostgreSQL",
        goal=">= 0.7",
        baseline=median(floor),
        measured=median(ours),
        unit="msg/s",
        baseline_name=(
            f"python -m bench.minimal_worker: psycopg, per transaction claim {_claim_size()} rows (FOR UPDATE SKIP "
            "LOCKED), decode each envelope, rebuild the message, call the same handler, one INSERT for the "
            "batch's inbox rows, DELETE, COMMIT; one process"
        ),
        measured_name="manage.py consume_channel bench_db --stop-when-empty --no-relay (one process)",
        details={
            "n": n,
            "rounds": ctx.sizes.db_rounds,
            "order": "alternating: the minimal worker first in odd rounds, consume_channel first in even ones",
            "claim_size": _claim_size(),
            "samples": {"baseline": floor, "measured": ours},
            # Context only (its goal of 0.5 is retired): a loop that deletes RAW_CLAIM rows per statement
            # and does nothing with them.
            "raw_skip_locked_msg_s": round(median(raw), 1),
            "raw_rows_per_statement": RAW_CLAIM,
            "raw_samples": raw,
        },
    )


def _scale_round(n: int, processes: int) -> float:
    """Msg/s of ``processes`` consume_channel workers on one database channel, all started before the rows."""
    truncate("default")
    vacuum_analyze("default")
    with ExitStack() as stack:
        logs = [stack.enter_context(HandlerLog()) for _ in range(processes)]
        procs = [
            stack.enter_context(Proc.manage("consume_channel", "bench_db", "--no-relay", env=log.env)) for log in logs
        ]
        for proc in procs:
            proc.wait_for_output("ready: consuming ", 120)
        load_rows("default", outbox_rows(DB_ROWS, n))  # one COPY: every row due at the same instant

        def handled() -> int:
            for proc in procs:
                if not proc.running():
                    raise BenchError(f"{proc!r} exited:\n{proc.output()[-3000:]}")
            return sum(log.count() for log in logs)

        wait_until(lambda: handled() >= n, 60 + n / 200, f"{n} messages over {processes} workers", interval=0.05)
        marks = [m for log in logs for m in log.marks()]
    seen: dict[int, int] = {}
    for mark in marks:
        seen[mark.seq] = seen.get(mark.seq, 0) + 1
    lost, doubled = n - len(set(seen) & set(range(n))), sum(c - 1 for c in seen.values())
    if lost or doubled:
        raise CorrectnessError(f"{processes} workers: {lost} of {n} messages lost, {doubled} handled twice")
    truncate("default")
    return rate(marks)


def db_channel_scale_out(ctx: Context) -> Figure:
    """Two consume_channel processes on one database channel ÷ one (4 as context), SKIP LOCKED sharing."""
    n = ctx.sizes.scale_rows
    by_count: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for r in range(ctx.sizes.scale_rounds):
        for count, samples in by_count.items():
            samples.append(ctx.attempt(f"{count} worker(s) round {r + 1}", lambda c=count: _scale_round(n, c)))
        ctx.log("  round: " + "  ".join(f"{c} worker(s) {v[-1]:,.0f}/s" for c, v in by_count.items()))
    rates = {c: median(v) for c, v in by_count.items()}
    return Figure(
        title="Database channel scale-out: 2 worker processes vs 1 on one channel (PostgreSQL, 2 cores)",
        goal=">= 1.6",
        baseline=rates[1],
        measured=rates[2],
        unit="msg/s",
        baseline_name=f"one manage.py consume_channel bench_db process draining {n:,} rows loaded at once",
        measured_name="two such processes on the same channel (SKIP LOCKED claims), the same rows",
        details={
            "n": n,
            "rounds": ctx.sizes.scale_rounds,
            "msg_s_by_processes": {str(c): round(v, 1) for c, v in rates.items()},
            "four_vs_one": round(rates[4] / rates[1], 3),
            "samples": {str(c): v for c, v in by_count.items()},
        },
    )


def _raw_notify(messages: int) -> list[float]:
    """One-way ms from COMMIT (INSERT + NOTIFY in one transaction) to a LISTENing psycopg connection.

    The clock starts as the COMMIT is sent: the listener is a thread of this process, and a time taken
    after the commit returns can come after the notification's arrival (negative latencies).
    """
    received: dict[int, float] = {}
    ready = threading.Event()

    def listen() -> None:
        with connect("default") as conn:
            conn.execute("LISTEN ecotone_bench_wakeup")
            ready.set()
            for note in conn.notifies(timeout=30 + messages):
                received[int(note.payload)] = time.time()
                if len(received) >= messages:
                    break

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    ready.wait(10)
    committed: dict[int, float] = {}
    with connect("default") as conn:
        conn.execute("CREATE TEMP TABLE wakeup (seq int)")
        for seq in range(messages):
            conn.execute("BEGIN")
            conn.execute("INSERT INTO wakeup VALUES (%s)", (seq,))
            conn.execute("SELECT pg_notify('ecotone_bench_wakeup', %s)", (str(seq),))
            committed[seq] = time.time()
            conn.execute("COMMIT")
            time.sleep(0.02)
    listener.join(30)
    if len(received) != messages:
        raise BenchError(f"LISTEN received {len(received)} of {messages} notifications")
    return [(received[s] - committed[s]) * 1000 for s in range(messages)]


def db_channel_idle_wakeup(ctx: Context) -> Figure:
    """An idle database-channel worker: handler start after the sender's commit, p50 (absolute, ms)."""
    from django.conf import settings
    from django.db import transaction

    from ecotone_django import command_bus

    from ..handlers import PingDb
    from ..peers.shop.models import Order

    n = ctx.sizes.wakeup_messages
    poll = float(settings.ECOTONE["WORKER"]["POLL_INTERVAL"])
    rng = random.Random(17)
    truncate("default")
    committed: dict[int, float] = {}

    def measure() -> list[float]:
        committed.clear()
        with HandlerLog() as log, Proc.manage("consume_channel", "bench_db", "--no-relay", env=log.env) as worker:
            worker.wait_for_output("ready: consuming ", 120)
            for seq in range(-1, n):  # seq -1 warms the worker and this process up; not counted
                with transaction.atomic(using="default"):
                    transaction.on_commit(lambda s=seq: committed.__setitem__(s, time.time()))  # type: ignore[misc]
                    Order.objects.using("default").create()
                    command_bus.send(PingDb(seq=seq, sent_at=time.time()), metadata={"tenant": "acme"})
                log.wait_for_seqs(range(seq, seq + 1), 30, worker)
                # Idle between sends, at a random phase of the worker's poll.
                time.sleep(poll * 1.5 + rng.random() * poll)
            marks = {m.seq: m.started_at for m in log.marks()}
            if len(log.marks()) != n + 1:
                raise CorrectnessError(f"the idle worker handled {len(log.marks())} marks for {n + 1} messages")
        return [(marks[s] - committed[s]) * 1000 for s in range(n)]

    ours = ctx.attempt("idle wake-up", measure)
    raw = ctx.attempt("raw LISTEN/NOTIFY", lambda: _raw_notify(n))
    truncate("default")
    return Figure(
        title="Idle database-channel worker: handler start after the sender's commit, p50",
        goal="<= 5",
        baseline=percentile(raw, 0.5),
        measured=percentile(ours, 0.5),
        unit="ms",
        baseline_name=(
            "context, not a divisor: psycopg INSERT + NOTIFY, COMMIT sent → a LISTENing connection receives it, p50"
        ),
        measured_name=(
            "atomic(): business row + command_bus.send() on the database channel, COMMIT → handler start in an idle "
            f"consume_channel bench_db (POLL_INTERVAL {poll} s), sends {poll * 1.5:.2f} to {poll * 2.5:.2f} s apart"
        ),
        absolute=True,
        details={
            "messages": n,
            "poll_interval_s": poll,
            "p99_ms": round(percentile(ours, 0.99), 3),
            "raw_notify_p99_ms": round(percentile(raw, 0.99), 3),
        },
    )


__all__ = ["db_channel_idle_wakeup", "db_channel_scale_out", "db_channel_vs_minimal_worker"]
