"""How the bench runs each tool: its worker command, its set-up, and both sides' settings for the report."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .config import POLL_INTERVAL, Tool

#: The prefetch window of every broker-backed tool in the comparison (our CeleryChannel's default maximum).
PREFETCH = 32
#: Workflows a DBOS worker process runs at once (the same window).
DBOS_CONCURRENCY = 32


def worker_command(tool: Tool) -> Sequence[str]:
    """The one worker process of ``tool`` (run from the repository root)."""
    manage = [sys.executable, "manage.py"]
    if tool.name == "ecotone_db":
        return [*manage, "consume_channel", "peer_db"]
    if tool.name == "ecotone_rabbit":
        return [*manage, "consume_channel", "peer_rabbit"]
    if tool.name == "procrastinate":
        return [*manage, "procrastinate", "worker", "--queues", tool.queue]
    if tool.name == "django_tasks_db":
        return [*manage, "db_worker", "--interval", str(POLL_INTERVAL), "--no-startup-delay", "--no-reload"]
    if tool.name == "dbos":
        return [sys.executable, "-m", "bench.peers.dbos_peer"]
    if tool.name == "celery":
        return [
            sys.executable, "-m", "celery", "-A", "bench.peers.celery_peer", "worker", "--pool", "solo",
            "-Q", tool.queue, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING",
        ]  # fmt: skip
    if tool.name == "dramatiq":
        return [*manage, "rundramatiq", "--processes", "1", "--threads", "1", "--queues", tool.queue]
    if tool.name == "minimal_broker":
        return [sys.executable, "-m", "bench.peers.minimal_broker"]
    raise ValueError(tool.name)


def worker_env(tool: Tool) -> dict[str, str]:
    if tool.name == "dramatiq":
        return {"dramatiq_queue_prefetch": str(PREFETCH)}
    if tool.name == "dbos":
        return {"ECOTONE_BENCH_DBOS_CONCURRENCY": str(DBOS_CONCURRENCY)}
    if tool.name == "celery":
        return {"ECOTONE_BENCH_CELERY_PREFETCH": os.environ.get("ECOTONE_BENCH_CELERY_PREFETCH", str(PREFETCH))}
    return {}


#: Seconds the crash phase keeps the restarted worker running at least, for the tool's own recovery to act
#: (and so for a doubled effect to show): our relay publishes a row left by a killed request once its
#: 5 s publish lease is over; procrastinate retries the jobs of a worker silent for 5 s, every 2 s.
RECOVERY_SECONDS = {
    "ecotone_db": 3.0,
    "ecotone_rabbit": 8.0,
    "procrastinate": 12.0,
    "django_tasks_db": 3.0,
    "dbos": 5.0,
    "celery": 3.0,
    "dramatiq": 3.0,
    "minimal_broker": 0.0,  # no crash phase
}


def broker_queues(tool: Tool) -> tuple[str, ...]:
    """The RabbitMQ queues ``tool`` declares (deleted with its database at the end)."""
    if tool.name == "dramatiq":
        return (tool.queue, f"{tool.queue}.DQ", f"{tool.queue}.XQ")
    if tool.family == "broker":
        return (tool.queue,)
    return ()


#: What each side runs, for the report: the settings both sides were measured with.
SETTINGS = {
    "ecotone_db": (
        f"`manage.py consume_channel peer_db`: DatabaseChannel defaults (claims up to CLAIM_SIZE rows per "
        f"transaction with SKIP LOCKED, inbox row per message, one commit per batch), POLL_INTERVAL {POLL_INTERVAL} s; "
        "send = `command_bus.send()` inside the request's `atomic()` (an outbox row in that transaction)"
    ),
    "procrastinate": (
        "`manage.py procrastinate worker`, concurrency 1, LISTEN/NOTIFY on, polling fallback "
        f"{POLL_INTERVAL} s, jobs kept (default); `defer()` inside the request's `atomic()` (Django connector: "
        "same transaction); stalled-job recovery as documented (periodic retry of jobs of workers without "
        "heartbeat for 5 s, heartbeat every 1 s)"
    ),
    "django_tasks_db": (
        f"`manage.py db_worker --interval {POLL_INTERVAL} --no-startup-delay` (one task at a time); "
        "`task.enqueue()` inside the request's `atomic()` (ORM row, same transaction); django-tasks backport "
        "on Django 5.2"
    ),
    "dbos": (
        f"worker process with `DBOS.launch()`, queue `worker_concurrency={DBOS_CONCURRENCY}` (DBOS dequeues at most "
        f"that many per poll: 1 caps it at one workflow per poll), `polling_interval_sec={POLL_INTERVAL}`, "
        "workflow of one `@DBOS.step` (the ORM write); request side `DBOSClient.enqueue_in_transaction` on "
        "Django's connection (system tables in the same database: same transaction)"
    ),
    "ecotone_rabbit": (
        "`manage.py consume_channel peer_rabbit`: CeleryChannel defaults (prefetch window adapts from 1 up "
        f"to {PREFETCH}, batch of received deliveries in one transaction with inbox rows, one multiple-ack after "
        "commit, relay in the same process); send = `command_bus.send()` inside `atomic()` (outbox row, "
        "publish with confirm after commit)"
    ),
    "celery": (
        f"`celery worker --pool solo` (one process), `acks_late`, prefetch multiplier {PREFETCH} "
        "(window = ours), JSON, results ignored, no gossip/mingle/heartbeat; request: "
        "`transaction.on_commit(lambda: task.delay(...))`, publish without confirms (Celery's default)"
    ),
    "dramatiq": (
        f"`manage.py rundramatiq --processes 1 --threads 1`, `dramatiq_queue_prefetch={PREFETCH}` "
        "(window = ours), acks after the actor returns (dramatiq's only mode), default middleware less "
        "Prometheus and django_dramatiq's AdminMiddleware (a row per message); request: "
        "`transaction.on_commit(lambda: actor.send(...))`"
    ),
    "minimal_broker": (
        "yardstick, not a peer (no crash phase): bare kombu consumer, prefetch "
        f"{PREFETCH}, per message one transaction with the inbox row (`ON CONFLICT DO NOTHING`), the handler "
        "start and the Shipment row, then ack; request: an outbox row (SQL on Django's connection) inside "
        "`atomic()`, on commit a persistent publish with confirm, then the row's DELETE"
    ),
}
