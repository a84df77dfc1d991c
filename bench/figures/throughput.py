"""Throughput figures: the relay, the Celery-channel worker, the database-channel worker."""

from __future__ import annotations

import sys
import time
from typing import Any

from ..config import QUEUE_BARE, QUEUE_RABBIT, RABBITMQ_URL
from ..infra import (
    BenchError,
    CorrectnessError,
    HandlerLog,
    Proc,
    RelayFailures,
    RowSpec,
    celery_task_message,
    check_exactly_once,
    connect,
    count_outbox,
    fill_queue,
    load_rows,
    median,
    outbox_rows,
    purge,
    rate,
    relay_failures,
    truncate,
    vacuum_analyze,
)
from . import Context, Figure

RABBIT_ROWS = RowSpec("bench_rabbit", "bench.handlers.on_rabbit", "bench.handlers.PingRabbit")
DB_ROWS = RowSpec("bench_db", "bench.handlers.on_db", "bench.handlers.PingDb")
#: Rows the raw SKIP LOCKED loop deletes per statement.
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
    """Msg/s of kombu publishing ``tasks`` one by one, each confirmed by the broker before the next (context)."""
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


class _Confirms:
    """Publisher confirms on a py-amqp channel (``confirm.select``), counted as the broker's ``basic.ack``
    frames (``multiple`` or not) arrive: one channel, one queue, so RabbitMQ confirms in publish order."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.confirmed = 0
        self.nacked = 0
        channel = conn.default_channel
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirmed = max(self.confirmed, delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked += 1

    def wait(self, sent: int) -> None:
        """Drain the connection until the first ``sent`` messages are confirmed; raise on a nack or after 30 s."""
        deadline = time.monotonic() + 30
        while self.confirmed < sent and not self.nacked:
            if time.monotonic() > deadline:
                raise BenchError(f"the broker confirmed {self.confirmed} of {sent} messages within 30 s")
            self.conn.drain_events(timeout=30)
        if self.nacked:
            raise BenchError(f"the broker refused {self.nacked} message(s)")


def _send(channel: Any, message: Any, mandatory: bool = False) -> None:
    """Publish on a py-amqp channel as the relay does (``Publisher._send_direct``): the ``basic.publish`` frame
    at once, not ``basic_publish``, which reads the socket for a ``connection.blocked`` notice before each
    message. The baselines publish no slower than the relay can."""
    import amqp

    channel.send_method(amqp.spec.Basic.Publish, "Bssbb", (0, "", QUEUE_RABBIT, mandatory, False), message)


def _raw_publish_batched(tasks: list[tuple[dict[str, Any], str]], batch: int) -> float:
    """Msg/s of the best raw publisher: ``batch`` messages sent, then their confirms collected, no database.

    Publisher confirms on a py-amqp channel (``confirm.select``); each batch is published without waiting,
    then the broker's ``basic.ack`` frames (``multiple`` or not) are drained until every message of the
    batch is confirmed — what the relay does per batch of rows, less the rows.
    """
    import amqp
    from kombu import Connection

    purge(QUEUE_RABBIT)
    with Connection(RABBITMQ_URL) as conn:
        confirms = _Confirms(conn)
        channel = conn.default_channel

        def publish(chunk: list[tuple[dict[str, Any], str]], sent: int) -> int:
            for headers, body in chunk:
                message = amqp.Message(
                    body, application_headers=headers, content_type="application/json",
                    content_encoding="utf-8", delivery_mode=2,
                )  # fmt: skip
                _send(channel, message)
            sent += len(chunk)
            confirms.wait(sent)
            return sent

        sent = publish(tasks[:1], 0)  # warm-up: the channel open and in confirm mode before the clock starts
        started = time.perf_counter()
        for start in range(0, len(tasks), batch):
            sent = publish(tasks[start : start + batch], sent)
        elapsed = time.perf_counter() - started
    purge(QUEUE_RABBIT)
    return len(tasks) / elapsed


#: The minimal relay's one statement per batch: lock, delete and return due rows; its commit skips the WAL flush.
MINIMAL_RELAY_TAKE = (
    "DELETE FROM ecotone_outbox USING (SELECT set_config('synchronous_commit', 'off', true)) AS f"
    " WHERE ecotone_outbox.id IN (SELECT id FROM ecotone_outbox WHERE channel = %s AND available_at <= now()"
    " ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
    " RETURNING message_id, handler, channel, message_type, body, attempts"
)


def _minimal_relay(n: int, batch: int) -> float:
    """Msg/s of the least a relay must do, in bare psycopg and py-amqp, over ``n`` committed outbox rows.

    Per transaction: one statement locks, deletes and returns ``batch`` due rows (prepared on the server);
    each row's task message is built (the protocol the relay sends, no signing) and published; the broker's
    confirms are collected; COMMIT. No Django, no circuit breaker, no deadlines, no signals.
    """
    import amqp
    from kombu import Connection

    from ecotone_django.channels.celery.protocol import JSON, TASK_NAME, protocol2_message

    purge(QUEUE_RABBIT)
    truncate("default")
    load_rows("default", outbox_rows(RABBIT_ROWS, n))
    vacuum_analyze("default")
    sent = 0
    with Connection(RABBITMQ_URL) as conn, connect("default") as pg:
        confirms = _Confirms(conn)
        channel = conn.default_channel
        started = time.perf_counter()
        while True:
            with pg.transaction():
                rows = pg.execute(MINIMAL_RELAY_TAKE, (RABBIT_ROWS.channel, batch), prepare=True).fetchall()
                for message_id, handler, channel_name, message_type, body, attempts in rows:
                    headers, task = protocol2_message(
                        TASK_NAME,
                        f"{message_id}:{handler}",
                        [body, handler, channel_name, attempts],
                        f"({message_type!r}, {handler!r})",
                    )
                    message = amqp.Message(
                        task.encode(), priority=0, content_type=JSON, content_encoding="utf-8",
                        application_headers=headers, delivery_mode=2, correlation_id=headers["id"],
                    )  # fmt: skip
                    _send(channel, message, mandatory=True)
                sent += len(rows)
                confirms.wait(sent)
            if not rows:
                break
        elapsed = time.perf_counter() - started
    left = count_outbox("default")
    purge(QUEUE_RABBIT)
    if sent != n or left:
        raise CorrectnessError(f"the minimal relay published {sent} of {n} rows ({left} left)")
    return sent / elapsed


def _relay(n: int) -> float:
    """Msg/s of one ``Relay().run_once()`` over ``n`` committed outbox rows."""
    from ecotone_django.outbox import Relay

    purge(QUEUE_RABBIT)
    truncate("default")
    load_rows("default", outbox_rows(RABBIT_ROWS, n))
    vacuum_analyze("default")
    relay = Relay()  # every tenant database, every broker channel: what `relay_outbox` runs
    with relay_failures() as failures:
        started = time.perf_counter()
        published = relay.run_once()
        elapsed = time.perf_counter() - started
    left = count_outbox("default")
    purge(QUEUE_RABBIT)
    if published != n or left:
        _relay_reached_services(failures)
        raise CorrectnessError(f"the relay published {published} of {n} rows ({left} left)")
    return published / elapsed


def _relay_reached_services(failures: RelayFailures) -> None:
    """Raise ConnectionError (a round to repeat) if a relay sweep failed on a broken connection.

    When another suite restarted PostgreSQL or RabbitMQ under the relay, its short count is a set-up
    failure, not a lost message.
    """
    if failures.aliases:
        raise ConnectionError(f"the relay could not reach its services from {', '.join(sorted(failures.aliases))}")


def relay_vs_raw_publish(ctx: Context) -> Figure:
    """Committed outbox rows relayed to RabbitMQ ÷ the best raw publisher (confirms per batch, no database)."""
    from ecotone_django.outbox import Relay

    n = ctx.sizes.relay_rows
    batch = relay_batch_size()
    load_rows("default", outbox_rows(RABBIT_ROWS, 20))  # warm-up: the relay's broker connection (kept per thread)
    Relay().run_once()
    tasks = _rows_as_tasks(n)
    raw_rates: list[float] = []
    relay_rates: list[float] = []
    one_by_one: list[float] = []
    floor: list[float] = []
    for r in range(ctx.sizes.rounds):
        raw_rates.append(ctx.attempt(f"raw batched publish round {r + 1}", lambda: _raw_publish_batched(tasks, batch)))
        relay_rates.append(ctx.attempt(f"relay round {r + 1}", lambda: _relay(n)))
        floor.append(ctx.attempt(f"minimal relay round {r + 1}", lambda: _minimal_relay(n, batch)))
        one_by_one.append(ctx.attempt(f"raw one-by-one publish round {r + 1}", lambda: _raw_publish(tasks)))
        ctx.log(
            f"  round: raw batched {raw_rates[-1]:,.0f}/s  relay {relay_rates[-1]:,.0f}/s  "
            f"(minimal relay {floor[-1]:,.0f}/s, raw one by one {one_by_one[-1]:,.0f}/s)"
        )
    return Figure(
        title="Outbox relay → RabbitMQ vs the best raw publisher (confirms per batch, no database)",
        goal=">= 0.7",
        baseline=median(raw_rates),
        measured=median(relay_rates),
        unit="msg/s",
        baseline_name=(
            f"py-amqp publish of the same task messages in batches of {batch} (the relay's batch), the broker's "
            "confirms collected once per batch; no database"
        ),
        measured_name="Relay().run_once() over N committed outbox rows (lock, publish, confirm per batch, delete)",
        details={
            "n": n,
            "rounds": ctx.sizes.rounds,
            "batch": batch,
            "samples": {"baseline": raw_rates, "measured": relay_rates},
            # Context, not in the ratio: a publisher that waits for each confirm before the next message.
            "raw_one_by_one_msg_s": round(median(one_by_one), 1),
            "one_by_one_samples": one_by_one,
            # Context, not in the ratio: the least a relay must do (bare psycopg + py-amqp, see _minimal_relay),
            # ÷ the same baseline. It bounds what any relay that reads and deletes rows can reach here.
            "minimal_relay_msg_s": round(median(floor), 1),
            "minimal_relay_vs_baseline": round(median(floor) / median(raw_rates), 3),
            "relay_vs_minimal_relay": round(median(relay_rates) / median(floor), 3),
            "minimal_relay_samples": floor,
        },
    )


def relay_batch_size() -> int:
    """The relay's batch: ``ECOTONE["WORKER"]["BATCH_SIZE"]``, 100 by default."""
    from django.conf import settings

    return int(settings.ECOTONE.get("WORKER", {}).get("BATCH_SIZE", 100))


#: Celery's default prefetch multiplier, and the window our CeleryChannel grows to (its default prefetch_count).
CELERY_DEFAULT_PREFETCH = 4
OUR_PREFETCH = 32


def _celery_worker(log: HandlerLog, prefetch: int) -> Proc:
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
            "--prefetch-multiplier",
            str(prefetch),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        env=log.env,
    )


def _bare_celery(n: int, prefetch: int) -> float:
    from ..celery_app import NOOP

    purge(QUEUE_BARE)
    fill_queue(QUEUE_BARE, (celery_task_message(NOOP, [seq, 0.0]) for seq in range(n)))
    with HandlerLog() as log, _celery_worker(log, prefetch) as proc:
        log.wait_for(n, 60 + n / 100, proc)
        check_exactly_once(log, range(n), "celery worker")
        return rate(log.marks())


def _consume_celery_channel(n: int) -> float:
    from ecotone_django.outbox import Relay

    purge(QUEUE_RABBIT)
    truncate("default")
    load_rows("default", outbox_rows(RABBIT_ROWS, n))
    with relay_failures() as failures:
        relayed = Relay(channel_names=["bench_rabbit"]).run_once()  # the queue now holds n ecotone task messages
    if relayed != n:
        _relay_reached_services(failures)
        raise CorrectnessError(f"relayed {relayed} of {n} messages into the queue")
    with (
        HandlerLog() as log,
        Proc.manage("consume_channel", "bench_rabbit", "--no-relay", "--limit", str(n), env=log.env) as proc,
    ):
        log.wait_for(n, 60 + n / 100, proc)
        check_exactly_once(log, range(n), "consume_channel bench_rabbit")
        return rate(log.marks())


def celery_handling_vs_bare_task(ctx: Context) -> Figure:
    """One ``consume_channel`` on a Celery channel ÷ a bare no-op acks_late task at Celery's best prefetch.

    Celery runs with acks_late (ack after the task, like our channel's ack after commit) at two prefetch
    windows — its default multiplier of 4 and our channel's window of 32 — interleaved with ours; the
    baseline is the better of the two medians (Celery's best settings for this load, measured in the run).
    """
    n = ctx.sizes.celery_messages
    bare: dict[int, list[float]] = {CELERY_DEFAULT_PREFETCH: [], OUR_PREFETCH: []}
    ours: list[float] = []
    for r in range(ctx.sizes.rounds):
        for prefetch, samples in bare.items():
            samples.append(
                ctx.attempt(f"celery worker prefetch {prefetch} round {r + 1}", lambda p=prefetch: _bare_celery(n, p))
            )
        ours.append(ctx.attempt(f"consume_channel round {r + 1}", lambda: _consume_celery_channel(n)))
        ctx.log(
            f"  round: celery worker {bare[CELERY_DEFAULT_PREFETCH][-1]:,.0f}/s (prefetch {CELERY_DEFAULT_PREFETCH}), "
            f"{bare[OUR_PREFETCH][-1]:,.0f}/s (prefetch {OUR_PREFETCH})  consume_channel {ours[-1]:,.0f}/s"
        )
    purge(QUEUE_RABBIT)
    truncate("default")
    best = max(bare, key=lambda p: median(bare[p]))
    return Figure(
        title="Celery channel worker (inbox row, transaction, ack) vs bare Celery no-op task at its best prefetch",
        goal=">= 0.8",
        baseline=median(bare[best]),
        measured=median(ours),
        unit="msg/s",
        baseline_name=(
            f"celery worker --pool solo, no-op task, acks_late, prefetch multiplier {best} (the better of "
            f"{CELERY_DEFAULT_PREFETCH}, Celery's default, and {OUR_PREFETCH}, our window; same run)"
        ),
        measured_name=(
            f"manage.py consume_channel bench_rabbit (one process, CeleryChannel defaults: window from 1 up to "
            f"{OUR_PREFETCH}, ack after commit)"
        ),
        details={
            "n": n,
            "rounds": ctx.sizes.rounds,
            "celery_prefetch_best": best,
            "celery_msg_s_by_prefetch": {str(p): round(median(v), 1) for p, v in bare.items()},
            "settings": {
                "ours": f"CeleryChannel prefetch_count {OUR_PREFETCH} (adaptive from 1), ack after the batch commits",
                "celery": "acks_late=True, --pool solo, JSON, ignore_result, no gossip/mingle/heartbeat",
            },
            "samples": {
                "baseline": bare[best],
                "measured": ours,
                **{f"celery_prefetch_{p}": v for p, v in bare.items()},
            },
        },
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


def _db_channel(n: int) -> float:
    _fresh_queue(n)
    with HandlerLog() as log:
        with Proc.manage("consume_channel", "bench_db", "--stop-when-empty", "--no-relay", env=log.env) as proc:
            proc.wait(60 + n / 100)
            output = proc.output()
        if log.count() != n:
            raise CorrectnessError(f"the worker handled {log.count()} of {n} messages\n{output[-2000:]}")
        check_exactly_once(log, range(n), "consume_channel bench_db")
        return rate(log.marks())


def _raw_loop(n: int) -> float:
    _fresh_queue(n)
    return _raw_skip_locked(n)
