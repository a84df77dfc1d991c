"""Latency figures: send → handler start on the Celery channel, and the premium tenant under a noisy neighbour."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from ..config import PREMIUM_TENANT, QUEUE_PREMIUM, QUEUE_RAW, QUEUE_RAW_TX, RABBITMQ_URL
from ..infra import (
    CorrectnessError,
    HandlerLog,
    Mark,
    Proc,
    RowSpec,
    check_exactly_once,
    checkpoint,
    connect,
    load_rows,
    median,
    outbox_rows,
    percentile,
    purge,
    settle,
    truncate,
    vacuum_analyze,
    wait_until,
)
from . import Context, Figure

#: The minimal transactional path's statements (bare psycopg): the business row, then the outbox row.
ORDER_SQL = "INSERT INTO bench_shop_order (with_task) VALUES (true)"
OUTBOX_SQL = (
    "INSERT INTO ecotone_outbox (message_id, channel, handler, message_type, tenant, body, available_at, attempts,"
    " created_at, last_error) VALUES (%s, 'bench_raw_tx', 'bench.raw_consumer', 'raw', '', '{}', now(), 0, now(), '')"
    " RETURNING id"
)

FREE_SEQ = 10_000_000  # backlog messages carry seq >= this; premium ones count from 0
FREE_TENANTS = 50


def _paced(count: int, interval: float, send: Callable[[int], None]) -> None:
    tick = time.monotonic()
    for seq in range(count):
        send(seq)
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))


def _latencies(marks: Sequence[Mark], seqs: range) -> list[float]:
    wanted = set(seqs)
    return [m.latency_ms for m in marks if m.seq in wanted]


def latency_p50_vs_raw_roundtrip(ctx: Context) -> Figure:
    """Send inside ``transaction.atomic()`` with a business row → handler start p50 ÷ raw kombu publish → consume."""
    from ecotone_django import command_bus

    from ..handlers import PingRabbit

    n, interval = ctx.sizes.latency_messages, ctx.sizes.latency_interval
    raw_p50: list[float] = []
    tx_p50: list[float] = []
    auto_p50: list[float] = []
    raw_all: list[float] = []
    tx_all: list[float] = []
    auto_all: list[float] = []
    floor_p50: list[float] = []
    floor_all: list[float] = []

    def measure() -> None:
        for values in (raw_p50, tx_p50, auto_p50, raw_all, tx_all, auto_all, floor_p50, floor_all):
            values.clear()
        _latency_rounds(
            ctx,
            PingRabbit,
            command_bus,
            (raw_p50, raw_all),
            (tx_p50, tx_all),
            (auto_p50, auto_all),
            (floor_p50, floor_all),
        )

    ctx.attempt("latency rounds", measure)
    return Figure(
        title=(
            "Send in a transaction with a business row → handler start p50 on the Celery channel "
            "vs raw publish → consume"
        ),
        goal="<= 3",
        baseline=median(raw_p50),
        measured=median(tx_p50),
        unit="ms",
        baseline_name="kombu publish (persistent) → kombu consumer in another process (prefetch 1), one-way",
        measured_name=(
            "transaction.atomic(): INSERT of a business row (Order), then from command_bus.send(): the outbox row, "
            "COMMIT, publish with confirm after commit → consume_channel bench_rabbit handler start"
        ),
        details={
            "messages_per_round": n,
            "interval_s": interval,
            "rounds": ctx.sizes.rounds,
            "p99_ms": {
                "baseline": round(percentile(raw_all, 0.99), 3),
                "measured": round(percentile(tx_all, 0.99), 3),
            },
            "samples": {"baseline": raw_p50, "measured": tx_p50},
            # Not in the ratio: command_bus.send() outside any transaction (publish with confirm; an outbox
            # row only if the broker does not confirm) — no business row to commit with.
            "autocommit_p50_ms": round(median(auto_p50), 3),
            "autocommit_p99_ms": round(percentile(auto_all, 0.99), 3),
            "autocommit_samples": auto_p50,
            # Context: the least a transactional send and a consumer that handles each message once must do,
            # in bare psycopg and kombu (no framework): what the database round trips alone cost on this machine.
            "minimal_transactional_p50_ms": round(median(floor_p50), 3),
            "minimal_transactional_p99_ms": round(percentile(floor_all, 0.99), 3),
            "minimal_transactional_vs_raw": round(median(floor_p50) / median(raw_p50), 3),
            "measured_vs_minimal_transactional": round(median(tx_p50) / median(floor_p50), 3),
            "minimal_transactional_samples": floor_p50,
        },
    )


def _latency_rounds(
    ctx: Context,
    ping: Any,
    command_bus: Any,
    raw: tuple[list[float], list[float]],
    in_transaction: tuple[list[float], list[float]],
    autocommit: tuple[list[float], list[float]],
    floor: tuple[list[float], list[float]],
) -> None:
    """Rounds of paced sends: raw kombu, our send in a transaction with a business row, our autocommit send,
    and the minimal transactional path (bare psycopg and kombu: outbox row, COMMIT, publish → inbox row)."""
    from django.db import transaction
    from kombu import Connection

    from ..peers.shop.models import Order

    n, interval = ctx.sizes.latency_messages, ctx.sizes.latency_interval
    purge(QUEUE_RAW)
    purge(QUEUE_RAW_TX)
    settle("default", "big_corp")
    with (
        HandlerLog() as raw_log,
        HandlerLog() as our_log,
        HandlerLog() as floor_log,
        Proc.module("bench.raw_consumer", QUEUE_RAW, env=raw_log.env) as raw_proc,
        Proc.module("bench.raw_consumer", QUEUE_RAW_TX, "--inbox", env=floor_log.env) as floor_proc,
        Proc.manage("consume_channel", "bench_rabbit", env=our_log.env) as our_proc,
        Connection(RABBITMQ_URL) as conn,
        connect("default") as db,
    ):
        raw_proc.wait_for_output("ready")
        floor_proc.wait_for_output("ready")
        our_proc.wait_for_output("ready: consuming ")
        producer = conn.Producer(auto_declare=False)
        db.autocommit = False

        def raw_send(seq: int) -> None:
            body = json.dumps({"seq": seq, "sent_at": time.time()})
            producer.publish(body, exchange="", routing_key=QUEUE_RAW, content_type="application/json", delivery_mode=2)

        def floor_send(seq: int) -> None:
            # The same transaction as tx_send in bare psycopg: business row, then from the hand-over on an
            # outbox row and COMMIT; then publish (persistent) and delete the row, as a relay must.
            db.execute(ORDER_SQL, prepare=True)
            sent_at = time.time()
            (row_id,) = db.execute(OUTBOX_SQL, (f"raw-{seq}",), prepare=True).fetchone()  # type: ignore[misc]
            db.commit()
            body = json.dumps({"seq": seq, "sent_at": sent_at})
            producer.publish(
                body, exchange="", routing_key=QUEUE_RAW_TX, content_type="application/json", delivery_mode=2
            )
            db.execute("DELETE FROM ecotone_outbox WHERE id = %s", (row_id,), prepare=True)
            db.commit()

        def our_send(seq: int) -> None:
            command_bus.send(ping(seq=seq, sent_at=time.time()), metadata={"tenant": "acme"})

        def tx_send(seq: int) -> None:
            # The clock starts where the application hands the message over, as in bench.sender: the business
            # row's INSERT before it is the application's own work, which the raw publisher does not do either.
            with transaction.atomic(using="default"):  # tenant "acme" lives in the shared database
                Order.objects.using("default").create()
                command_bus.send(ping(seq=seq, sent_at=time.time()), metadata={"tenant": "acme"})

        # Warm-up: connections on both sides, and the consumers really subscribed (seq -1 is not counted).
        raw_send(-1)
        our_send(-1)
        floor_send(-1)
        raw_log.wait_for(1, 30, raw_proc)
        our_log.wait_for(1, 30, our_proc)
        floor_log.wait_for(1, 30, floor_proc)
        sides = [
            (raw, raw_send, raw_log, raw_proc),
            (in_transaction, tx_send, our_log, our_proc),
            (autocommit, our_send, our_log, our_proc),
            (floor, floor_send, floor_log, floor_proc),
        ]
        base = 0
        for _ in range(ctx.sizes.rounds):
            line = []
            for (p50s, everything), send, log, proc in sides:
                seqs = range(base, base + n)
                base += n
                _paced(n, interval, lambda i, s=seqs.start, f=send: f(s + i))  # type: ignore[misc]
                log.wait_for_seqs(seqs, 30, proc)
                check_exactly_once(log, seqs, "latency consumer")
                latencies = _latencies(log.marks(), seqs)
                everything += latencies
                p50s.append(percentile(latencies, 0.5))
                line.append(f"{p50s[-1]:.2f}")
            ctx.log(
                f"  round: raw p50 {line[0]} ms  ecotone in a transaction p50 {line[1]} ms  (autocommit {line[2]} ms, "
                f"minimal transactional path {line[3]} ms)"
            )


@dataclass
class NoisyPoint:
    layout: str
    backlog: int  # free-tier messages waiting when the premium burst started
    p50_ms: float
    p99_ms: float
    messages: int
    waiting: int | None = None  # single queue: free-tier messages actually waiting when the burst began
    latencies: list[float] = field(default_factory=list, repr=False)  # every premium message's, ms

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "latencies"}


def _free_rows(layout: str) -> RowSpec:
    # The concrete channel the free tier's messages sit on: what bench_orders resolves to in that layout.
    channel = "bench_shared" if layout == "dynamic" else "bench_orders"
    return RowSpec(
        channel,
        "bench.handlers.on_orders",
        "bench.handlers.PingOrders",
        tenant=lambda seq: f"free_{seq % FREE_TENANTS}",
        delay=lambda seq: timedelta(seconds=-60),
    )


def _load_backlog(layout: str, backlog: int) -> None:
    truncate("default")
    truncate("big_corp")
    purge(QUEUE_PREMIUM)
    if backlog:
        load_rows("default", outbox_rows(_free_rows(layout), backlog, start=FREE_SEQ))
    vacuum_analyze("default")
    checkpoint()  # idle and loaded rounds alike: the load's checkpoint must not fall into the burst


class PremiumSender:
    """A burst of premium messages through the command bus of ``layout``, from a subprocess.

    The subprocess starts and warms up first; :meth:`go` starts the burst at once, and :meth:`finish`
    waits for the last send. Returns the burst's seqs.
    """

    def __init__(self, ctx: Context, layout: str, start: int, autocommit: bool = False) -> None:
        n, interval = ctx.sizes.noisy_messages, ctx.sizes.noisy_interval
        self.seqs = range(start, start + n)
        self.timeout = 60 + n * interval
        self.go_file = Path(tempfile.mkdtemp(prefix="ecotone-bench-go-")) / "go"
        args = ["--count", str(n), "--interval", str(interval), "--tenant", PREMIUM_TENANT, "--start", str(start)]
        args += ["--go-file", str(self.go_file)] + (["--autocommit"] if autocommit else [])
        self.proc = Proc.module("bench.sender", *args, env={"ECOTONE_BENCH_LAYOUT": layout})
        self.proc.wait_for_output("ready")

    def go(self) -> None:
        self.go_file.touch()

    def finish(self) -> range:
        if self.proc.wait(self.timeout) != 0:
            raise RuntimeError(f"sender failed:\n{self.proc.output()[-2000:]}")
        return self.seqs

    def __enter__(self) -> PremiumSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()
        shutil.rmtree(self.go_file.parent, ignore_errors=True)


def _wait_handled(log: HandlerLog, seqs: range, procs: Sequence[Proc], timeout: float) -> Sequence[Mark]:
    deadline = time.monotonic() + timeout
    wanted = set(seqs)
    while True:
        if wanted <= log.seqs():
            return log.marks()
        if time.monotonic() > deadline or not all(p.running() for p in procs):
            raise CorrectnessError(f"premium messages {seqs} not handled in {timeout:g} s")
        time.sleep(0.1)


def _point(layout: str, backlog: int, marks: Sequence[Mark], seqs: range) -> NoisyPoint:
    latencies = _latencies(marks, seqs)
    return NoisyPoint(
        layout, backlog, percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies), latencies=latencies
    )


def _dynamic_round(ctx: Context, backlog: int, autocommit: bool = False) -> NoisyPoint:
    """Premium on its own database and queue while the free tier's worker drains ``backlog`` messages.

    The premium sends are transactional (a business row and the message in one ``atomic()``) unless
    ``autocommit``.
    """
    _load_backlog("dynamic", backlog)
    env = {"ECOTONE_BENCH_LAYOUT": "dynamic"}
    with HandlerLog() as log:
        env |= log.env
        # One worker per concrete channel behind bench_orders, scaled separately (as in the example project).
        with (
            Proc.manage("consume_channel", "bench_shared", env=env) as free,
            Proc.manage("consume_channel", "bench_premium", env=env) as premium,
            PremiumSender(ctx, "dynamic", 0, autocommit) as sender,
        ):
            # The sender's warm-up message handled: both workers consume; the free one has started on its backlog.
            wait_until(lambda: any(m.seq == -1 for m in log.marks()), 60, "the premium worker", premium)
            if backlog:
                log.wait_for(2, 60, free)
            sender.go()
            seqs = sender.finish()
            marks = _wait_handled(log, seqs, [free, premium], 60)
            check_exactly_once(log, seqs, "premium worker")
            free_handled = sum(1 for m in marks if m.seq >= FREE_SEQ)
    point = _point("dynamic" if not autocommit else "dynamic_autocommit", backlog, marks, seqs)
    ctx.log(
        f"  {point.layout} backlog {backlog:>7,}: premium p50 {point.p50_ms:8.2f} ms  p99 {point.p99_ms:8.2f} ms "
        f"(free tier handled meanwhile: {free_handled:,})"
    )
    return point


def _free_waiting(log: HandlerLog, loaded: int) -> int:
    """Free-tier messages not yet handled (read from the worker's log: polling the queue table would load it)."""
    return loaded - log.count_high()


def _waiting_at_most(log: HandlerLog, loaded: int, level: int) -> bool:
    return _free_waiting(log, loaded) <= level


def _single_drain(ctx: Context) -> list[NoisyPoint]:
    """One shared queue: a burst of premium messages as the backlog passes each level, then one when idle.

    Each burst queues behind everything already waiting (FIFO by due time), so one drain of the largest
    backlog yields every point. The worker's memory is sampled on the way (worker_rss_100k_vs_1k).
    """
    levels = sorted(ctx.sizes.noisy_backlogs, reverse=True)
    _load_backlog("single", levels[0])
    rss_at = sorted({ctx.sizes.rss_small, ctx.sizes.rss_big // 10, ctx.sizes.rss_big // 2, ctx.sizes.rss_big})
    points: list[NoisyPoint] = []
    with HandlerLog(count_from=FREE_SEQ) as log:
        env = {"ECOTONE_BENCH_LAYOUT": "single", "BENCH_RSS_AT": ",".join(map(str, rss_at)), **log.env}
        first = PremiumSender(ctx, "single", 0)  # ready before the worker starts: its burst meets the whole backlog
        with first, Proc.manage("consume_channel", "bench_orders", env=env) as worker:
            worker.wait_for_output("ready: consuming ")
            bursts: list[tuple[int, range]] = []
            for i, level in enumerate(levels):
                with first if i == 0 else PremiumSender(ctx, "single", i * 100_000) as sender:
                    drain_timeout = 60 + levels[0] / 200
                    if level:
                        wait_until(
                            partial(_waiting_at_most, log, levels[0], level),
                            drain_timeout,
                            f"backlog {level:,}",
                            worker,
                            0.1,
                        )
                    else:  # idle: the backlog and every earlier burst handled
                        wait_until(
                            partial(_waiting_at_most, log, levels[0], 0), drain_timeout, "an empty queue", worker, 0.1
                        )
                        _wait_handled_all(log, [s for _, seqs in bursts for s in seqs], worker, 120)
                    waiting = _free_waiting(log, levels[0])
                    sender.go()
                    bursts.append((waiting, sender.finish()))
                ctx.log(f"  single  burst sent with {waiting:,} free-tier messages waiting")
            marks = _wait_handled(log, bursts[-1][1], [worker], 120)
            ctx.extras["single_drain_rss"] = log.rss()
        for (waiting, seqs), level in zip(bursts, levels, strict=True):
            point = _point("single", level, marks, seqs)
            point.waiting = waiting
            points.append(point)
            ctx.log(
                f"  single  backlog {level:>7,} ({waiting:,} at the burst): premium p50 {point.p50_ms:9.2f} ms  "
                f"p99 {point.p99_ms:9.2f} ms"
            )
    return points


def _wait_handled_all(log: HandlerLog, seqs: list[int], proc: Proc, timeout: float) -> None:
    wanted = set(seqs)
    wait_until(lambda: wanted <= log.seqs(), timeout, "every premium burst handled", proc, 0.1)


def _waiting(points: Sequence[NoisyPoint], layout: str, backlog: int) -> int:
    """Free-tier messages waiting when the bursts began (single queue: measured; dynamic: the backlog loaded)."""
    found = [p.waiting for p in points if p.layout == layout and p.backlog == backlog and p.waiting is not None]
    return int(median(found)) if found else backlog


def noisy_neighbor_p99_ratio(ctx: Context) -> Figure:
    """Premium p99 with the free tier's backlog waiting ÷ premium p99 idle, the worst of the rounds (dynamic channels).

    Each round is an idle burst then a loaded one; the figure is the worst round's ratio, never a median
    that hides it. The premium sends are transactional (business row + message in one ``atomic()``);
    one pair of autocommit sends is reported beside.
    """
    sizes = ctx.sizes
    big = max(sizes.noisy_backlogs)
    points: list[NoisyPoint] = []
    pairs: list[tuple[NoisyPoint, NoisyPoint]] = []
    controls: list[tuple[NoisyPoint, NoisyPoint]] = []  # (idle, idle again): no backlog on either side
    for r in range(sizes.noisy_rounds):
        idle = ctx.attempt(f"dynamic idle round {r + 1}", partial(_dynamic_round, ctx, 0))
        loaded = ctx.attempt(f"dynamic backlog {big:,} round {r + 1}", partial(_dynamic_round, ctx, big))
        again = ctx.attempt(f"dynamic idle round {r + 1}, again (control)", partial(_dynamic_round, ctx, 0))
        pairs.append((idle, loaded))
        controls.append((idle, again))
        points += [idle, loaded]
    for backlog in sizes.noisy_backlogs:
        if backlog not in (0, big):
            points.append(ctx.attempt(f"dynamic backlog {backlog:,}", partial(_dynamic_round, ctx, backlog)))
    auto_idle = ctx.attempt("dynamic idle, autocommit sends", partial(_dynamic_round, ctx, 0, True))
    auto_loaded = ctx.attempt(f"dynamic backlog {big:,}, autocommit sends", partial(_dynamic_round, ctx, big, True))
    points += ctx.attempt("single-queue drain", lambda: _single_drain(ctx))
    truncate("default")
    truncate("big_corp")

    def p99(layout: str, backlog: int) -> float:
        return median(p.p99_ms for p in points if p.layout == layout and p.backlog == backlog)

    curve: dict[str, list[dict[str, Any]]] = {}
    for layout in ("dynamic", "single"):
        curve[layout] = [
            {
                "backlog": b,
                "p50_ms": round(median(p.p50_ms for p in points if p.layout == layout and p.backlog == b), 3),
                "p99_ms": round(p99(layout, b), 3),
                "waiting": _waiting(points, layout, b),
            }
            for b in sizes.noisy_backlogs
        ]
    ratios = [loaded.p99_ms / idle.p99_ms for idle, loaded in pairs]
    worst = max(range(len(pairs)), key=lambda i: ratios[i])
    # Context: each round's p99 is the 2nd-largest of its few hundred samples; pooled over every round, the
    # p99 rests on all of them.
    pooled_idle = percentile([ms for idle, _ in pairs for ms in idle.latencies], 0.99)
    pooled_loaded = percentile([ms for _, loaded in pairs for ms in loaded.latencies], 0.99)
    # The control: the same ratios with no backlog on either side, i.e. what this machine's noise alone gives.
    control_ratios = [again.p99_ms / idle.p99_ms for idle, again in controls]
    pooled_again = percentile([ms for _, again in controls for ms in again.latencies], 0.99)
    return Figure(
        title=f"Premium tenant p99 with {big:,} free-tier messages waiting vs idle, worst of {len(pairs)} rounds",
        goal="<= 1.5",
        baseline=pairs[worst][0].p99_ms,
        measured=pairs[worst][1].p99_ms,
        unit="ms",
        baseline_name=(
            "premium p99 send → handler start, no backlog (the same two workers running), in the worst round; "
            "each send: business row + message in one atomic() on the premium database"
        ),
        measured_name=(
            f"premium p99 while {big:,} free-tier messages wait on the shared database channel "
            "and its worker drains them, in the same round"
        ),
        details={
            "backlog": big,
            "premium_messages_per_burst": sizes.noisy_messages,
            "interval_s": sizes.noisy_interval,
            "rounds": len(pairs),
            "round_ratios": [round(r, 3) for r in ratios],
            "worst_round": worst + 1,
            "pooled_p99_ms": {
                "idle": round(pooled_idle, 3),
                "loaded": round(pooled_loaded, 3),
                "ratio": round(pooled_loaded / pooled_idle, 3),
                "messages_per_side": sizes.noisy_messages * len(pairs),
            },
            "control_idle_vs_idle": {
                "what": "a third burst per round, again with no backlog, against the round's idle burst",
                "round_ratios": [round(r, 3) for r in control_ratios],
                "worst": round(max(control_ratios), 3),
                "pooled_ratio": round(pooled_again / pooled_idle, 3),
            },
            "autocommit_sends": {
                "idle_p99_ms": round(auto_idle.p99_ms, 3),
                "loaded_p99_ms": round(auto_loaded.p99_ms, 3),
                "ratio": round(auto_loaded.p99_ms / auto_idle.p99_ms, 3),
            },
            "single_queue_ratio": round(p99("single", big) / p99("single", 0), 2),
            "single_queue_p99_ms": {"idle": round(p99("single", 0), 3), "loaded": round(p99("single", big), 3)},
            "layouts": {
                "dynamic": "premium tenant → own database + CeleryChannel (RabbitMQ); free tier → shared "
                "DatabaseChannel; one consume_channel process per concrete channel",
                "single": "every tenant → one DatabaseChannel in the shared database; one consume_channel process",
            },
            "curve": curve,
            "points": [p.as_json() for p in points],
        },
    )
