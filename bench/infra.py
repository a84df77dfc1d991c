"""The benchmark's plumbing: its databases and queues, bulk-loaded rows, worker processes, statistics.

Everything here is set-up and bookkeeping; what a figure measures lives in ``bench/figures/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Exchange, Queue

from ecotone_django.channels.celery import protocol2_message
from ecotone_django.messages import Envelope, uuid7

from .config import DATABASE_NAMES, QUEUES, RABBITMQ_URL, postgres_params

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTBOX_COLUMNS = (
    "message_id",
    "channel",
    "handler",
    "message_type",
    "tenant",
    "body",
    "available_at",
    "attempts",
    "created_at",
    "last_error",
)


class RelayFailures(logging.Handler):
    """The databases whose relay sweep failed: the relay logs the start of an outage once, then retries.

    The relay swallows a failed sweep (it retries later), so a figure that needs every row published
    listens to its log: a sweep that failed on a restarted service is a round to repeat, not a lost message.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.aliases: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("publishing from") and "failed" in record.msg and record.args:
            self.aliases.add(str(record.args[0]))  # type: ignore[index]


@contextlib.contextmanager
def relay_failures() -> Iterator[RelayFailures]:
    """Collect the databases whose relay sweep failed while the block runs."""
    from ecotone_django.outbox import relay_health

    for alias in DATABASE_NAMES:
        relay_health.succeeded(alias)  # forget an outage an earlier figure's relay saw: a new one is logged
    failures = RelayFailures()
    logger = logging.getLogger("ecotone_django.outbox")
    logger.addHandler(failures)
    try:
        yield failures
    finally:
        logger.removeHandler(failures)


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def connect(alias: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit psycopg connection to the bench database of ``alias`` (``None``: the server's own)."""
    params = postgres_params(DATABASE_NAMES[alias] if alias else None)
    return psycopg.connect(**params, autocommit=True)  # type: ignore[arg-type]


def wait_for_services(timeout: float) -> None:
    """Wait until PostgreSQL and RabbitMQ accept connections (after someone restarted them)."""

    def up() -> bool:
        try:
            with connect(), broker() as conn:
                conn.ensure_connection(max_retries=0)
        except Exception:
            return False
        return True

    wait_until(up, timeout, "PostgreSQL and RabbitMQ", interval=1.0)


def create_databases() -> None:
    with connect() as conn:
        for name in DATABASE_NAMES.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')


def drop_databases() -> None:
    with connect() as conn:
        for name in DATABASE_NAMES.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate(alias: str) -> None:
    """Empty ecotone_django's tables in ``alias`` (between rounds)."""
    with connect(alias) as conn:
        conn.execute("TRUNCATE ecotone_outbox, ecotone_inbox, ecotone_dead_letter RESTART IDENTITY")


def settle(*aliases: str) -> None:
    """Empty the tables and let PostgreSQL catch up after a heavy figure, before a latency measurement.

    A checkpoint or autovacuum triggered by the previous figure's hundred thousand rows would otherwise
    land in the middle of the rounds and stretch every commit's fsync for a while: that measures the
    previous figure, not this one.
    """
    for alias in aliases:
        truncate(alias)
        vacuum_analyze(alias)
    checkpoint()


def checkpoint() -> None:
    """Write out what the server has buffered now, rather than during the next measurement."""
    with connect("default") as conn:
        conn.execute("CHECKPOINT")


def vacuum_analyze(alias: str) -> None:
    with connect(alias) as conn:
        conn.execute("VACUUM ANALYZE ecotone_outbox")
        conn.execute("VACUUM ANALYZE ecotone_inbox")


def count_outbox(alias: str, channel: str | None = None) -> int:
    with connect(alias) as conn:
        if channel is None:
            row = conn.execute("SELECT count(*) FROM ecotone_outbox").fetchone()
        else:
            row = conn.execute("SELECT count(*) FROM ecotone_outbox WHERE channel = %s", (channel,)).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class RowSpec:
    """What bulk-loaded outbox rows look like: the rows a bus would have written for these messages."""

    channel: str  # the concrete channel (what a DynamicChannel resolved to)
    handler: str  # the handler id, e.g. ``bench.handlers.on_db``
    message_type: str  # the wire name, e.g. ``bench.handlers.PingDb``
    tenant: Callable[[int], str] = lambda seq: "acme"
    delay: Callable[[int], timedelta] = lambda seq: timedelta(seconds=-1)  # negative: due already


def outbox_rows(spec: RowSpec, count: int, start: int = 0) -> Iterator[tuple[Any, ...]]:
    """``count`` outbox rows in COPY order, with real envelopes (``seq`` and ``sent_at`` payload)."""
    moment = datetime.now(UTC)
    sent_at = time.time()
    for seq in range(start, start + count):
        tenant = spec.tenant(seq)
        message_id = str(uuid7())
        envelope = Envelope(
            type=spec.message_type,
            payload={"seq": seq, "sent_at": sent_at},
            headers={"tenant": tenant, "correlation_id": message_id, "timestamp": moment.isoformat()},
            id=message_id,
        )
        yield (
            message_id,
            spec.channel,
            spec.handler,
            spec.message_type,
            tenant,
            envelope.encode(),
            moment + spec.delay(seq),
            0,
            moment,
            "",
        )


def _copy_text(value: Any) -> str:
    """One field in COPY's text format."""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    if any(c in text for c in "\\\t\n\r"):
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def load_rows(alias: str, rows: Iterable[tuple[Any, ...]], chunk: int = 20_000) -> int:
    """Bulk-load outbox rows into ``alias`` with COPY (one transaction); returns how many.

    The rows go over as pre-formatted text (psycopg's per-field ``write_row`` was the bottleneck).
    """
    loaded = 0
    sql = f"COPY ecotone_outbox ({', '.join(OUTBOX_COLUMNS)}) FROM STDIN"
    with connect(alias) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        lines: list[str] = []
        for row in rows:
            lines.append("\t".join(map(_copy_text, row)))
            if len(lines) >= chunk:
                copy.write("\n".join(lines) + "\n")
                loaded += len(lines)
                lines.clear()
        if lines:
            copy.write("\n".join(lines) + "\n")
            loaded += len(lines)
    return loaded


# ---------------------------------------------------------------------------
# RabbitMQ
# ---------------------------------------------------------------------------


def broker() -> Connection:
    return Connection(RABBITMQ_URL, connect_timeout=5)


def celery_queue(name: str) -> Queue:
    """A queue declared the way ``celery worker -Q name`` and CeleryChannel declare it."""
    return Queue(name, Exchange(name, type="direct", durable=True), routing_key=name, durable=True)


def declare_queues() -> None:
    with broker() as conn:
        channel = conn.channel()
        for name in QUEUES:
            queue = celery_queue(name)(channel)
            queue.declare()
            queue.purge()


def purge(name: str) -> int:
    with broker() as conn:
        return int(celery_queue(name)(conn.channel()).purge() or 0)


def queue_depth(name: str) -> int:
    with broker() as conn:
        _, count, _ = celery_queue(name)(conn.channel()).queue_declare(passive=True)
        return int(count)


def delete_queues() -> None:
    with broker() as conn:
        channel = conn.channel()
        for name in QUEUES:
            with contextlib.suppress(Exception):
                celery_queue(name)(channel).delete()


def celery_task_message(task: str, args: Sequence[Any]) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for ``task(*args)`` (what ``apply_async`` would send)."""
    return protocol2_message(task, str(uuid.uuid4()), args, repr(tuple(args)), origin="ecotone_bench")


def fill_queue(queue: str, messages: Iterable[tuple[dict[str, Any], str]]) -> int:
    """Publish pre-built task messages without confirms (set-up of a backlog, not a measurement)."""
    sent = 0
    with broker() as conn:
        producer = conn.Producer(auto_declare=False)
        for headers, body in messages:
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                headers=headers,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=False,
            )
            sent += 1
    return sent


# ---------------------------------------------------------------------------
# Processes (each in its own session; stopped by its own pid/process group, never by name)
# ---------------------------------------------------------------------------


def bench_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Proc:
    """A subprocess of the benchmark, its output in a temp file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str | None] | None = None) -> None:
        self.args = list(args)
        fd, path = tempfile.mkstemp(prefix="ecotone-bench-", suffix=".log")
        os.close(fd)
        self.log = Path(path)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args,
                cwd=str(REPO_ROOT),
                env=bench_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @classmethod
    def manage(cls, *args: str, env: Mapping[str, str | None] | None = None) -> Proc:
        return cls([sys.executable, "manage.py", *args], env)

    @classmethod
    def module(cls, module: str, *args: str, env: Mapping[str, str | None] | None = None) -> Proc:
        return cls([sys.executable, "-m", module, *args], env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_for_output(self, marker: str, timeout: float = 60.0) -> None:
        wait_until(lambda: marker in self.output(), timeout, f"{marker!r} from {self!r}", self)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{self!r} still running after {timeout:g} s\n{self.output()[-3000:]}") from None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a worker finishes the message in hand), then SIGKILL the group if it lingers."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        code = self.popen.wait()
        with contextlib.suppress(OSError):
            self.log.unlink()
        return code

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Proc {self.pid} {' '.join(self.args[1:4])}>"


class BenchError(RuntimeError):
    """A benchmark step did not complete (a worker died, a queue never drained)."""


#: What a process's output or an error says when PostgreSQL or RabbitMQ went away under it (another
#: suite restarting a service): an infrastructure failure, never a lost or doubled message.
SERVICE_FAILURE = re.compile(
    r"OperationalError|ConnectionRefused|ConnectionReset|Connection refused|server closed the connection|"
    r"terminating connection|ConnectionClosed|AMQPConnectionError|StreamLostError"
)


class CorrectnessError(BenchError):
    """A message was lost or handled twice: the figure fails; a correctness failure is never retried."""


def check_exactly_once(log: HandlerLog, seqs: range, who: str) -> None:
    """Every seq of ``seqs`` handled exactly once according to ``log`` (else :class:`CorrectnessError`)."""
    wanted = set(seqs)
    counts: dict[int, int] = {}
    for mark in log.marks():
        if mark.seq in wanted:
            counts[mark.seq] = counts.get(mark.seq, 0) + 1
    lost = len(wanted) - len(counts)
    doubled = sum(c - 1 for c in counts.values())
    if lost or doubled:
        raise CorrectnessError(f"{who}: {lost} of {len(wanted)} messages lost, {doubled} handled twice")


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, proc: Proc | None = None, interval: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.running():
            raise BenchError(
                f"{proc!r} exited ({proc.popen.returncode}) while waiting for {what}\n{proc.output()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Handler logs (bench.probe) and statistics
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    seq: int
    sent_at: float
    started_at: float

    @property
    def latency_ms(self) -> float:
        return (self.started_at - self.sent_at) * 1000.0


class HandlerLog:
    """The file ``bench.probe.mark`` appends to in the worker under test.

    Read incrementally: a poll parses only the lines written since the last one, so that waiting on a
    worker that handles 100,000 messages costs the benchmark (and the machine) next to nothing.
    """

    def __init__(self, count_from: int | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="ecotone-bench-marks-", suffix=".log")
        os.close(fd)
        self.path = Path(path)
        self.count_from = count_from  # count_high() counts the marks with at least this seq
        self._high = 0
        self._offset = 0
        self._marks: list[Mark] = []
        self._seqs: set[int] = set()
        self._rss: dict[int, int] = {}

    @property
    def env(self) -> dict[str, str]:
        return {"BENCH_LOG": str(self.path)}

    def _read(self) -> None:
        with open(self.path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        end = chunk.rfind(b"\n") + 1  # a last line without "\n" is still being written
        self._offset += end
        for line in chunk[:end].decode().splitlines():
            if line.startswith("rss"):
                _, n, kb = line.split()
                self._rss[int(n)] = int(kb)
            elif line:
                seq, sent, started = line.split()
                self._marks.append(Mark(int(seq), float(sent), float(started)))
                self._seqs.add(int(seq))
                if self.count_from is not None and int(seq) >= self.count_from:
                    self._high += 1

    def marks(self) -> Sequence[Mark]:
        """Every mark so far (the log's own list: read it, do not change it)."""
        self._read()
        return self._marks

    def count(self) -> int:
        self._read()
        return len(self._marks)

    def seqs(self) -> Set[int]:
        self._read()
        return self._seqs

    def count_high(self) -> int:
        """Marks with a seq of at least ``count_from`` (e.g. the free tier's, in the noisy-neighbour figure)."""
        self._read()
        return self._high

    def rss(self) -> dict[int, int]:
        self._read()
        return dict(self._rss)

    def wait_for(self, count: int, timeout: float, proc: Proc | None = None) -> None:
        wait_until(lambda: self.count() >= count, timeout, f"{count} handled messages", proc, interval=0.05)

    def wait_for_seqs(self, seqs: range, timeout: float, proc: Proc | None = None) -> None:
        """Wait until a mark of every seq in ``seqs`` is in the log."""
        wanted = f"messages {seqs.start}..{seqs.stop - 1}"
        wait_until(lambda: self.seqs() >= set(seqs), timeout, wanted, proc, interval=0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def __enter__(self) -> HandlerLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rate(marks: Sequence[Mark]) -> float:
    """Messages per second between the first and the last handler start."""
    starts = sorted(m.started_at for m in marks)
    if len(starts) < 2 or starts[-1] <= starts[0]:
        raise BenchError(f"cannot compute a rate from {len(starts)} handled message(s)")
    return (len(starts) - 1) / (starts[-1] - starts[0])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) with linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        raise BenchError("no values")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))
