"""Throughput figures: the relay, the Celery-channel worker, the database-channel worker."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ecotone_django.conf import get_config

from ..config import QUEUE_BARE, QUEUE_RABBIT, RABBITMQ_URL
from ..infra import (
    HandlerLog,
    Proc,
    RowSpec,
    celery_task_message,
    connect,
    count_outbox,
    fill_queue,
    load_rows,
    median,
    outbox_rows,
    purge,
    rate,
    truncate,
    vacuum_analyze,
)
from . import Context, Figure

RABBIT_ROWS = RowSpec("bench_rabbit", "bench.handlers.on_rabbit", "bench.handlers.PingRabbit")
DB_ROWS = RowSpec("bench_db", "bench.handlers.on_db", "bench.handlers.PingDb")
#: Rows the raw SKIP LOCKED loop deletes per statement (FIELD-NOTES measured ~40k rows/s with 100).
RAW_CLAIM = 100


def _rows_as_tasks(count: int) -> list[tuple[dict[str, Any], str]]:
    """The Celery task messages CeleryChannel makes of ``count`` rows (the raw baseline publishes the same)."""
    from ecotone_django.channels.celery import task_message
    from ecotone_django.models import OutboxMessage

    columns = ("message_id", "channel", "handler", "message_type", "tenant", "body")
    return [
        task_message(OutboxMessage(**dict(zip(columns, row[: len(columns)], strict=True))))
        for row in outbox_rows(RABBIT_ROWS, count)
    ]


def _raw_publish(tasks: list[tuple[dict[str, Any], str]]) -> float:
    """Msg/s of kombu publishing ``tasks`` one by one, each confirmed by the broker before the next."""
    from kombu import Connection

    purge(QUEUE_RABBIT)
    with Connection(RABBITMQ_URL, transport_options={"confirm_publish": True}) as conn:
        producer = conn.Producer(auto_declare=False)
        warm_headers, warm_body = tasks[0]  # connect and open the channel before the clock starts
        producer.publish(warm_body, exchange="", routing_key=QUEUE_RABBIT, headers=warm_headers, retry=False)
        started = time.perf_counter()
        for headers, body in tasks:
            producer.publish(
                body,
                exchange="",
                routing_key=QUEUE_RABBIT,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
            )
        elapsed = time.perf_counter() - started
    purge(QUEUE_RABBIT)
    return len(tasks) / elapsed


def _relay(n: int) -> float:
    """Msg/s of one ``Relay().run_once()`` over ``n`` committed outbox rows."""
    from ecotone_django.outbox import Relay

    purge(QUEUE_RABBIT)
    truncate("default")
    load_rows("default", outbox_rows(RABBIT_ROWS, n))
    vacuum_analyze("default")
    relay = Relay()  # every tenant database, every broker channel: what `relay_outbox` runs
    started = time.perf_counter()
    published = relay.run_once()
    elapsed = time.perf_counter() - started
    left = count_outbox("default")
    purge(QUEUE_RABBIT)
    if published != n or left:
        raise RuntimeError(f"the relay published {published} of {n} rows ({left} left)")
    return published / elapsed


def relay_vs_raw_publish(ctx: Context) -> Figure:
    """Committed outbox rows relayed to RabbitMQ with confirms ÷ raw kombu publish with confirms, one by one."""
    from ecotone_django.outbox import Relay

    n = ctx.sizes.relay_rows
    load_rows("default", outbox_rows(RABBIT_ROWS, 20))  # warm-up: the relay's broker connection (kept per thread)
    Relay().run_once()
    tasks = _rows_as_tasks(n)
    raw_rates: list[float] = []
    relay_rates: list[float] = []
    for r in range(ctx.sizes.rounds):
        raw_rates.append(ctx.attempt(f"raw publish round {r + 1}", lambda: _raw_publish(tasks)))
        relay_rates.append(ctx.attempt(f"relay round {r + 1}", lambda: _relay(n)))
        ctx.log(f"  round: raw {raw_rates[-1]:,.0f}/s  relay {relay_rates[-1]:,.0f}/s")
    return Figure(
        title="Outbox relay → RabbitMQ (confirms) vs raw kombu publish with confirms",
        goal=">= 1.0",
        baseline=median(raw_rates),
        measured=median(relay_rates),
        unit="msg/s",
        baseline_name="kombu Producer.publish with confirm_publish, one by one (the same task messages)",
        measured_name="Relay().run_once() over N committed outbox rows (lock, publish, confirm, delete)",
        details={"n": n, "rounds": ctx.sizes.rounds, "samples": {"baseline": raw_rates, "measured": relay_rates}},
    )


def _celery_worker(log: HandlerLog) -> Proc:
    return Proc(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.celery_app",
            "worker",
            "--pool",
            "solo",
            "-Q",
            QUEUE_BARE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        env=log.env,
    )


def _bare_celery(n: int) -> float:
    from ..celery_app import NOOP

    purge(QUEUE_BARE)
    fill_queue(QUEUE_BARE, (celery_task_message(NOOP, [seq, 0.0]) for seq in range(n)))
    with HandlerLog() as log, _celery_worker(log) as proc:
        log.wait_for(n, 60 + n / 100, proc)
        return rate(log.marks())


def _consume_celery_channel(n: int) -> float:
    from ecotone_django.outbox import Relay

    purge(QUEUE_RABBIT)
    truncate("default")
    load_rows("default", outbox_rows(RABBIT_ROWS, n))
    relayed = Relay(channel_names=["bench_rabbit"]).run_once()  # the queue now holds n ecotone task messages
    if relayed != n:
        raise RuntimeError(f"relayed {relayed} of {n} messages into the queue")
    with (
        HandlerLog() as log,
        Proc.manage("consume_channel", "bench_rabbit", "--no-relay", "--limit", str(n), env=log.env) as proc,
    ):
        log.wait_for(n, 60 + n / 100, proc)
        return rate(log.marks())


def celery_handling_vs_bare_task(ctx: Context) -> Figure:
    """One ``consume_channel`` on a Celery channel ÷ a bare no-op acks_late task under ``celery worker --pool solo``."""
    n = ctx.sizes.celery_messages
    bare: list[float] = []
    ours: list[float] = []
    for r in range(ctx.sizes.rounds):
        bare.append(ctx.attempt(f"celery worker round {r + 1}", lambda: _bare_celery(n)))
        ours.append(ctx.attempt(f"consume_channel round {r + 1}", lambda: _consume_celery_channel(n)))
        ctx.log(f"  round: celery worker {bare[-1]:,.0f}/s  consume_channel {ours[-1]:,.0f}/s")
    purge(QUEUE_RABBIT)
    truncate("default")
    return Figure(
        title="Celery channel worker (inbox row, transaction, ack) vs bare Celery no-op task",
        goal=">= 0.8",
        baseline=median(bare),
        measured=median(ours),
        unit="msg/s",
        baseline_name="celery worker --pool solo, no-op task with acks_late (prefetch multiplier 4, Celery's default)",
        measured_name="manage.py consume_channel bench_rabbit (one process, CeleryChannel defaults)",
        details={"n": n, "rounds": ctx.sizes.rounds, "samples": {"baseline": bare, "measured": ours}},
    )


def _raw_skip_locked(n: int) -> float:
    """Rows/s of a bare psycopg claim-and-delete loop over the ``n`` rows now in the queue."""
    sql = (
        "DELETE FROM ecotone_outbox WHERE id IN ("
        " SELECT id FROM ecotone_outbox WHERE channel = %s AND available_at <= now()"
        " ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        ") RETURNING id, body"
    )
    done = 0
    with connect("default") as conn:
        started = time.perf_counter()
        while True:
            rows = conn.execute(sql, (DB_ROWS.channel, RAW_CLAIM), prepare=True).fetchall()
            if not rows:
                break
            done += len(rows)
        elapsed = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"the raw loop deleted {done} of {n} rows")
    return done / elapsed


def _fresh_queue(n: int) -> None:
    """Exactly ``n`` due rows on the benchmark's database channel, vacuumed and analysed."""
    truncate("default")
    load_rows("default", outbox_rows(DB_ROWS, n))
    vacuum_analyze("default")


def _floor_loop(n: int, inbox: bool) -> float:
    """Msg/s of the least a database-channel worker must do, in bare psycopg: not part of the ratio.

    Per transaction: claim CLAIM_SIZE rows (``SELECT … FOR UPDATE SKIP LOCKED``), decode each envelope,
    rebuild the message and call a no-op handler, optionally insert the batch's inbox rows (one
    statement), delete the rows, commit. No Django, tenancy, savepoints, retries or time limits: what
    this reaches bounds what any worker with (or without) an inbox can reach on this machine.
    """
    from ..handlers import PingDb

    _fresh_queue(n)
    claim = (
        "SELECT id, body, handler FROM ecotone_outbox WHERE channel = %s AND available_at <= now()"
        " ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
    )
    record = (
        "INSERT INTO ecotone_inbox (key, handler, handled_at) SELECT k, h, now()"
        " FROM unnest(%s::varchar[], %s::varchar[]) AS b(k, h) ON CONFLICT DO NOTHING RETURNING key, handler"
    )
    limit = get_config().worker.claim_size
    done = 0
    with connect("default") as conn:
        conn.autocommit = False
        started = time.perf_counter()
        while True:
            rows = conn.execute(claim, (DB_ROWS.channel, limit), prepare=True).fetchall()
            if not rows:
                conn.rollback()
                break
            envelopes = [json.loads(body) for _, body, _ in rows]
            keys = [(envelope["id"], handler) for envelope, (_, _, handler) in zip(envelopes, rows, strict=True)]
            if inbox:
                new = set(conn.execute(record, ([k for k, _ in keys], [h for _, h in keys]), prepare=True).fetchall())
            else:
                new = set(keys)
            for envelope, key in zip(envelopes, keys, strict=True):
                if key in new:
                    _no_op(PingDb(**envelope["payload"]))
                    done += 1
            conn.execute("DELETE FROM ecotone_outbox WHERE id = ANY(%s)", ([row[0] for row in rows],), prepare=True)
            conn.commit()
        elapsed = time.perf_counter() - started
    if done != n:
        raise RuntimeError(f"the minimal loop handled {done} of {n} rows")
    return done / elapsed


def _no_op(message: Any) -> None:
    """The minimal loop's handler."""


def _db_channel(n: int, claim_size: int | None = None) -> float:
    _fresh_queue(n)
    with HandlerLog() as log:
        env = {**log.env, "ECOTONE_BENCH_CLAIM_SIZE": str(claim_size) if claim_size else None}
        with Proc.manage("consume_channel", "bench_db", "--stop-when-empty", "--no-relay", env=env) as proc:
            proc.wait(60 + n / 100)
            output = proc.output()
        if log.count() != n:
            raise RuntimeError(f"the worker handled {log.count()} of {n} messages\n{output[-2000:]}")
        return rate(log.marks())


def _raw_loop(n: int) -> float:
    _fresh_queue(n)
    return _raw_skip_locked(n)


def db_channel_vs_raw_skip_locked(ctx: Context) -> Figure:
    """A DatabaseChannel worker process ÷ a raw ``DELETE … SKIP LOCKED … RETURNING`` loop over as many rows."""
    n = ctx.sizes.db_rows
    raw: list[float] = []
    ours: list[float] = []
    for r in range(ctx.sizes.rounds):
        raw.append(ctx.attempt(f"raw loop round {r + 1}", lambda: _raw_loop(n)))
        ours.append(ctx.attempt(f"consume_channel round {r + 1}", lambda: _db_channel(n)))
        ctx.log(f"  round: raw loop {raw[-1]:,.0f}/s  consume_channel {ours[-1]:,.0f}/s")
    # Not part of the ratio: the same worker claiming as many rows per transaction as the raw loop deletes.
    bigger = ctx.attempt("consume_channel, CLAIM_SIZE 100", lambda: _db_channel(n, RAW_CLAIM))
    ctx.log(f"  consume_channel with CLAIM_SIZE={RAW_CLAIM}: {bigger:,.0f}/s")
    # Nor these: what a worker doing only the unavoidable work reaches, with and without an inbox row.
    floor = {
        "with_inbox": ctx.attempt("minimal loop with inbox", lambda: _floor_loop(n, inbox=True)),
        "without_inbox": ctx.attempt("minimal loop without inbox", lambda: _floor_loop(n, inbox=False)),
    }
    ctx.log(f"  minimal loop: {floor['with_inbox']:,.0f}/s with an inbox, {floor['without_inbox']:,.0f}/s without")
    truncate("default")
    return Figure(
        title="Database channel worker vs raw SKIP LOCKED claim-and-delete loop (PostgreSQL)",
        goal=">= 0.5",
        baseline=median(raw),
        measured=median(ours),
        unit="msg/s",
        baseline_name=f"psycopg DELETE … WHERE id IN (SELECT … LIMIT {RAW_CLAIM} FOR UPDATE SKIP LOCKED) RETURNING",
        measured_name="manage.py consume_channel bench_db --stop-when-empty (one process)",
        details={
            "n": n,
            "rounds": ctx.sizes.rounds,
            "raw_rows_per_statement": RAW_CLAIM,
            "claim_size": get_config().worker.claim_size,
            f"measured_with_claim_size_{RAW_CLAIM}": round(bigger, 1),
            "minimal_loop_msg_s": {kind: round(value, 1) for kind, value in floor.items()},
            "samples": {"baseline": raw, "measured": ours},
        },
    )
