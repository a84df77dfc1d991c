"""What the chaos driver breaks, and the processes it breaks.

* :class:`Fleet` — the example's ``consume_channel`` workers and its ``relay_outbox`` process, each a real
  ``manage.py`` process in its own session; it restarts what it kills and notices what dies on its own.
* :class:`Services` — the shared PostgreSQL cluster and RabbitMQ node: restart, stop, start, block
  publishers (a memory alarm), drop the connections to *our* databases only, and wait until each is
  healthy again; and the loopback proxy every process of the run reaches RabbitMQ through, which can
  black-hole their connections.
* :class:`FaultInjector` — a seeded random schedule of faults, every enabled kind at least once, logged.

No Django imports: the driver imports this before it sets Django up.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.chaos.tenant_faults import tenant_down
from tests.helpers.processes import ManagedProcess, spawn_manage, wait_for
from tests.helpers.tcp_proxy import TcpProxy

#: What ``consume_channel`` prints once it is set up and about to consume.
READY_MARK = "ready: consuming "


class Fault(enum.StrEnum):
    """The kinds of fault, by the name ``--faults`` takes."""

    WORKER_KILL = "worker_kill"  # SIGKILL a consume_channel worker, start a replacement
    RELAY_KILL = "relay_kill"  # SIGKILL the relay_outbox process, start it again a little later
    WORKER_PAUSE = "worker_pause"  # SIGSTOP a worker for seconds (holding its claims and connections), SIGCONT
    RABBITMQ_RESTART = "rabbitmq_restart"  # rabbitmqctl stop_app … start_app
    POSTGRES_RESTART = "postgres_restart"  # pg_ctlcluster … restart
    CONNECTION_DROP = "connection_drop"  # pg_terminate_backend on every backend of our databases
    BLACK_HOLE = "black_hole"  # the proxy to RabbitMQ stops forwarding, connections left open, for seconds
    BROKER_BLOCKED = "broker_blocked"  # a RabbitMQ memory alarm blocks every publisher for seconds
    TENANT_DOWN = "tenant_down"  # one tenant database refuses connections for seconds (tenant_faults.py)

    @property
    def disruptive(self) -> bool:
        """Whether it affects the shared servers (anyone else's tests), not only our processes and databases."""
        return self in (Fault.RABBITMQ_RESTART, Fault.POSTGRES_RESTART, Fault.BROKER_BLOCKED)

    @property
    def label(self) -> str:
        return {
            Fault.WORKER_KILL: "worker SIGKILL + restart",
            Fault.RELAY_KILL: "relay SIGKILL + restart",
            Fault.WORKER_PAUSE: "worker SIGSTOP … SIGCONT",
            Fault.RABBITMQ_RESTART: "rabbitmqctl stop_app/start_app",
            Fault.POSTGRES_RESTART: "pg_ctlcluster restart",
            Fault.CONNECTION_DROP: "pg_terminate_backend",
            Fault.BLACK_HOLE: "proxy to RabbitMQ black-holed",
            Fault.BROKER_BLOCKED: "RabbitMQ memory alarm (blocked)",
            Fault.TENANT_DOWN: "one tenant database down",
        }[self]


def parse_faults(text: str) -> list[Fault]:
    """``"all"``, ``"none"`` or a comma-separated list of fault names (``-name`` removes one from all)."""
    text = text.strip()
    if text in ("", "none"):
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"] or all(n.startswith("-") for n in names):
        removed = {Fault(n[1:]) for n in names if n.startswith("-")}
        return [f for f in Fault if f not in removed]
    return [Fault(n) for n in names]


# -- processes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Role:
    """One long-running process of the deployment: ``manage.py *args``."""

    name: str
    args: tuple[str, ...]
    is_worker: bool = True

    @property
    def waits_for_ready(self) -> bool:
        return self.args[0] == "consume_channel"


@dataclass
class Incarnation:
    role: Role
    process: ManagedProcess
    started: float
    killed: bool = False  # by the driver (a SIGKILL fault): its exit is expected


class Fleet:
    """The processes of every role, one incarnation each at a time; every incarnation is kept for its log."""

    def __init__(self, roles: Sequence[Role], env: Mapping[str, str | None], log_dir: Path) -> None:
        self.roles = {role.name: role for role in roles}
        self.env = dict(env)
        self.log_dir = log_dir
        self.current: dict[str, Incarnation] = {}
        self.history: list[Incarnation] = []
        self.deaths: list[str] = []  # unexpected exits, with the tail of their output
        self.paused: set[str] = set()
        self._lock = threading.RLock()

    def start_all(self, ready_timeout: float = 90.0) -> None:
        for role in self.roles.values():
            self.start(role.name)
        for name in self.roles:
            self.wait_ready(name, ready_timeout)

    def start(self, name: str) -> Incarnation:
        with self._lock:
            role = self.roles[name]
            incarnation = Incarnation(role, spawn_manage(*role.args, env=self.env), time.monotonic())
            self.current[name] = incarnation
            self.history.append(incarnation)
            return incarnation

    def wait_ready(self, name: str, timeout: float) -> None:
        incarnation = self.current[name]
        if not incarnation.role.waits_for_ready:
            return
        process = incarnation.process

        def ready() -> bool:
            if READY_MARK in process.output():
                return True
            if not process.is_running():
                raise RuntimeError(f"{name} exited before it was ready:\n{process.output_tail(3000)}")
            return False

        wait_for(ready, timeout=timeout, interval=0.1, message=f"{name} to start consuming")

    def workers(self) -> list[str]:
        return [name for name, role in self.roles.items() if role.is_worker]

    def kill9(self, name: str) -> int:
        """SIGKILL the role's process (and its group); returns the pid."""
        with self._lock:
            incarnation = self.current[name]
            incarnation.killed = True
            self.paused.discard(name)
            incarnation.process.kill9()
            return incarnation.process.pid

    def pause(self, name: str) -> int:
        with self._lock:
            process = self.current[name].process
            process.send_signal(signal.SIGSTOP)
            self.paused.add(name)
            return process.pid

    def resume(self, name: str) -> None:
        with self._lock:
            if name in self.paused:
                self.paused.discard(name)
                self.current[name].process.send_signal(signal.SIGCONT)

    def check(self) -> list[str]:
        """Restart every process that exited without being killed; returns what happened (also in ``deaths``)."""
        found: list[str] = []
        with self._lock:
            for name, incarnation in list(self.current.items()):
                if incarnation.killed or incarnation.process.is_running():
                    continue
                code = incarnation.process.returncode
                report = f"{name} (pid {incarnation.process.pid}) died on its own with exit code {code}"
                found.append(report)
                self.deaths.append(f"{report}; output tail:\n{incarnation.process.output_tail(2500)}")
                self.start(name)
        return found

    def stop_all(self, timeout: float = 30.0) -> dict[str, int]:
        """SIGTERM every current process once; each should finish the message in hand and exit 0.

        A process that has not yet installed its SIGTERM handler (one just restarted) is given the time
        to do so first: killed while Django starts up, it would die of the signal like any program.
        """
        with self._lock:
            for name in list(self.paused):
                self.resume(name)
            for incarnation in self.current.values():
                process = incarnation.process
                wait_for(
                    functools.partial(_handles_sigterm, process),
                    timeout=60,
                    interval=0.05,
                    message=f"{incarnation.role.name} to install its SIGTERM handler",
                )
                process.terminate()
            codes: dict[str, int] = {}
            for name, incarnation in self.current.items():
                try:
                    codes[name] = incarnation.process.wait(timeout)
                except AssertionError:  # it did not stop: a finding, and it must go anyway
                    incarnation.process.kill9()
                    codes[name] = -signal.SIGKILL
            return codes

    def kill_all(self) -> None:
        with self._lock:
            for name in list(self.paused):
                self.resume(name)
            for incarnation in self.history:
                with contextlib.suppress(Exception):
                    incarnation.process.kill9()

    def save_logs(self) -> list[Path]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for number, incarnation in enumerate(self.history, 1):
            path = self.log_dir / f"{number:02d}-{incarnation.role.name}-{incarnation.process.pid}.log"
            path.write_text(incarnation.process.output())
            paths.append(path)
        return paths

    def outputs(self) -> list[tuple[Incarnation, str]]:
        return [(incarnation, incarnation.process.output()) for incarnation in self.history]


def _handles_sigterm(process: ManagedProcess) -> bool:
    return not process.is_running() or catches(process.pid, signal.SIGTERM)


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``signum`` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    match = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)
    return bool(match and int(match.group(1), 16) & (1 << (signum - 1)))


# -- the shared servers -----------------------------------------------------------------------------------


#: The command-line tool each server fault needs (run as root, or through ``sudo -n``).
TOOLS = {
    Fault.POSTGRES_RESTART: "pg_ctlcluster",
    Fault.RABBITMQ_RESTART: "rabbitmqctl",
    Fault.BROKER_BLOCKED: "rabbitmqctl",
}
#: The memory high watermark RabbitMQ gets back after a memory alarm (its default).
MEMORY_HIGH_WATERMARK = "0.4"


def missing_tools(faults: Sequence[Fault]) -> list[str]:
    """What keeps ``faults`` from being injected here: a missing tool, or no root and no sudo."""
    problems = []
    for fault in faults:
        tool = TOOLS.get(fault)
        if tool is None:
            continue
        if shutil.which(tool) is None:
            problems.append(
                f"{fault}: {tool} is not installed (a server in a container? leave it out: --faults=-{fault})"
            )
        elif os.geteuid() != 0 and shutil.which("sudo") is None:
            problems.append(f"{fault}: {tool} needs root, and there is no sudo")
    return problems


def _run(*args: str, timeout: float = 120.0) -> str:
    if os.geteuid() != 0 and shutil.which("sudo"):
        args = ("sudo", "-n", *args)
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


@dataclass
class Services:
    """PostgreSQL (``postgres_url`` reaches its maintenance database) and RabbitMQ (``rabbit_url``)."""

    postgres_url: str
    rabbit_url: str
    databases: Sequence[str]  # ours: the only ones whose connections we drop
    cluster: tuple[str, str] = field(default_factory=lambda: _local_cluster())
    start_timeout: float = 120.0
    #: The proxy the run's processes reach RabbitMQ through (``None``: no black-hole faults).
    proxy: TcpProxy | None = None
    _alarm: bool = False

    # PostgreSQL --------------------------------------------------------------------------------------------

    def postgres_accepts(self) -> bool:
        try:
            with psycopg.connect(self.postgres_url, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def restart_postgres(self) -> None:
        """``pg_ctlcluster … restart`` (fast mode: every session is cut), then wait until it accepts again."""
        version, name = self.cluster
        try:
            _run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart", "-m", "fast")
        finally:
            self.ensure_postgres()

    def ensure_postgres(self) -> None:
        if not self.postgres_accepts():
            version, name = self.cluster
            with contextlib.suppress(RuntimeError):
                _run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")
        wait_for(self.postgres_accepts, timeout=self.start_timeout, interval=0.2, message="PostgreSQL to accept")

    def drop_connections(self) -> int:
        """``pg_terminate_backend`` for every backend connected to one of *our* databases; how many it cut."""
        with psycopg.connect(self.postgres_url, connect_timeout=5, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
                [list(self.databases)],
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    # RabbitMQ ----------------------------------------------------------------------------------------------

    def rabbit_accepts(self) -> bool:
        from kombu import Connection

        try:
            with Connection(self.rabbit_url, connect_timeout=2) as conn:
                conn.ensure_connection(max_retries=0)
                conn.channel()
            return True
        except Exception:
            return False

    def stop_rabbit(self) -> None:
        _run("rabbitmqctl", "stop_app")

    def start_rabbit(self) -> None:
        _run("rabbitmqctl", "start_app")
        self.ensure_rabbit()

    def ensure_rabbit(self) -> None:
        if not self.rabbit_accepts():
            with contextlib.suppress(RuntimeError):
                _run("rabbitmqctl", "start_app")
        wait_for(self.rabbit_accepts, timeout=self.start_timeout, interval=0.2, message="RabbitMQ to accept AMQP")

    def block_publishers(self) -> None:
        """A memory alarm: RabbitMQ blocks every connection that publishes (``connection.blocked``)."""
        self._alarm = True
        _run("rabbitmqctl", "set_vm_memory_high_watermark", "0")

    def unblock_publishers(self) -> None:
        _run("rabbitmqctl", "set_vm_memory_high_watermark", MEMORY_HIGH_WATERMARK)
        self._alarm = False

    def ensure_up(self) -> None:
        """Both servers up again, whatever happened (called in ``finally``)."""
        try:
            self.ensure_postgres()
        finally:
            if self.proxy is not None:
                self.proxy.heal()
            try:
                if self._alarm:
                    self.unblock_publishers()
            finally:
                self.ensure_rabbit()


def _local_cluster() -> tuple[str, str]:
    """(version, name) of the local PostgreSQL cluster, as ``pg_ctlcluster`` wants them."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in re.findall(r"\d+", v)])
    if not versions:
        raise RuntimeError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1], "main"


def foreign_test_processes(own: int | None = None) -> list[str]:
    """Other test, benchmark or demo processes on this machine (not ours): someone a server restart would hit."""
    if shutil.which("pgrep") is None:
        return []
    result = subprocess.run(
        ["pgrep", "-af", "pytest|bench/run.py|consume_channel|manage.py demo"], capture_output=True, text=True
    )
    mine = _descendants(own or os.getpid()) | _ancestors(own or os.getpid())
    lines = []
    for line in result.stdout.splitlines():
        pid_text, _, command = line.partition(" ")
        if int(pid_text) not in mine and "pgrep" not in command:
            lines.append(line)
    return lines


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, stack = _children(), {pid}, [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
    return found


# -- the schedule -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaultEvent:
    at: float  # seconds since the injector started
    fault: Fault
    detail: str
    seconds: float  # how long the fault lasted (outage, pause), 0 for instant ones
    skipped: bool = False


@dataclass
class Timing:
    """Seconds: between two faults, a worker's pause, a broker outage, the relay's time dead."""

    gap: tuple[float, float] = (2.0, 6.0)
    pause: tuple[float, float] = (4.0, 12.0)
    outage: tuple[float, float] = (2.0, 6.0)
    relay_down: tuple[float, float] = (1.0, 4.0)


class FaultInjector:
    """Injects ``faults`` at seeded random moments, one at a time, every enabled kind at least once."""

    def __init__(
        self,
        faults: Sequence[Fault],
        rng: random.Random,
        fleet: Fleet,
        services: Services,
        say: Callable[[str], None],
        timing: Timing | None = None,
        polite: bool = False,
        polite_wait: float = 30.0,
    ) -> None:
        self.faults = list(dict.fromkeys(faults))
        self.rng = rng
        self.fleet = fleet
        self.services = services
        self.say = say
        self.timing = timing or Timing()
        self.polite = polite  # before a server restart, wait up to polite_wait s for others' tests; else skip it
        self.polite_wait = polite_wait
        self.events: list[FaultEvent] = []
        self.counts: Counter[Fault] = Counter()
        self.skipped: Counter[Fault] = Counter()
        self.errors: list[str] = []
        self._started = time.monotonic()
        self._pending = list(self.faults)
        self.rng.shuffle(self._pending)

    @property
    def covered(self) -> bool:
        """Every enabled kind injected (or skipped) at least once."""
        return not self._pending

    def run(self, keep_going: Callable[[], bool], stop: threading.Event) -> None:
        """Inject until ``keep_going()`` is false and every kind was covered, or ``stop`` is set."""
        if not self.faults:
            return
        while not stop.is_set() and (keep_going() or not self.covered):
            if stop.wait(self.rng.uniform(*self.timing.gap)):
                break
            flowing = keep_going()
            # Polite, while orders flow: a server restart waits for a quiet moment; other faults go on meanwhile.
            busy = self.polite and flowing and any(f.disruptive for f in self.faults) and bool(foreign_test_processes())
            fault = self._choose(defer_disruptive=busy)
            if fault is None:
                continue
            try:
                self.inject(fault, stop, wait=not flowing)
            except Exception as exc:  # a fault that could not be injected is a finding about the harness
                self.errors.append(f"{fault}: {type(exc).__name__}: {exc}")
                self.say(f"FAULT {fault} could not be injected: {exc}")

    def _choose(self, defer_disruptive: bool) -> Fault | None:
        """The next kind not injected yet (in shuffled order), else a random one; a deferred kind stays pending."""
        allowed = [f for f in self.faults if not (defer_disruptive and f.disruptive)]
        for fault in self._pending:
            if fault in allowed:
                self._pending.remove(fault)
                return fault
        return self.rng.choice(allowed) if allowed else None

    def inject(self, fault: Fault, stop: threading.Event, *, wait: bool = True) -> FaultEvent:
        """Inject ``fault``; polite, a server restart first waits (``wait``) for others' tests, else is skipped."""
        at = time.monotonic() - self._started
        if fault.disruptive and self.polite:
            others = foreign_test_processes()
            deadline = time.monotonic() + (self.polite_wait if wait else 0.0)
            while others and time.monotonic() < deadline and not stop.wait(2.0):
                others = foreign_test_processes()
            if others:
                detail = f"skipped: {len(others)} foreign test process(es) running, e.g. {others[0][:90]}"
                event = FaultEvent(at, fault, detail, 0, True)
                self.skipped[fault] += 1
                return self._log(event)
        began = time.monotonic()
        detail = getattr(self, f"_{fault.value}")(stop)
        event = FaultEvent(at, fault, detail, round(time.monotonic() - began, 1))
        self.counts[fault] += 1
        return self._log(event)

    def _log(self, event: FaultEvent) -> FaultEvent:
        self.events.append(event)
        lasted = f" ({event.seconds:g} s)" if event.seconds else ""
        self.say(f"FAULT t={event.at:6.1f}s {event.fault}: {event.detail}{lasted}")
        return event

    # one method per fault: each returns what it did --------------------------------------------------------

    def _worker_kill(self, stop: threading.Event) -> str:
        victim = self.rng.choice(self.fleet.workers())
        pid = self.fleet.kill9(victim)
        replacement = self.fleet.start(victim)
        return f"SIGKILL {victim} pid {pid}; replacement pid {replacement.process.pid}"

    def _relay_kill(self, stop: threading.Event) -> str:
        pid = self.fleet.kill9("relay")
        down = self.rng.uniform(*self.timing.relay_down)
        stop.wait(down)
        replacement = self.fleet.start("relay")
        return f"SIGKILL relay pid {pid}; restarted after {down:.1f} s as pid {replacement.process.pid}"

    def _worker_pause(self, stop: threading.Event) -> str:
        victim = self.rng.choice(self.fleet.workers())
        seconds = self.rng.uniform(*self.timing.pause)
        pid = self.fleet.pause(victim)
        try:
            stop.wait(seconds)
        finally:
            self.fleet.resume(victim)
        return f"SIGSTOP {victim} pid {pid} for {seconds:.1f} s, then SIGCONT"

    def _rabbitmq_restart(self, stop: threading.Event) -> str:
        seconds = self.rng.uniform(*self.timing.outage)
        self.services.stop_rabbit()
        try:
            stop.wait(seconds)
        finally:
            self.services.start_rabbit()
        return f"rabbitmqctl stop_app, {seconds:.1f} s down, start_app"

    def _postgres_restart(self, stop: threading.Event) -> str:
        self.services.restart_postgres()
        return "pg_ctlcluster restart -m fast (every session cut)"

    def _black_hole(self, stop: threading.Event) -> str:
        proxy = self.services.proxy
        if proxy is None:
            raise RuntimeError("no proxy in front of RabbitMQ")
        seconds = self.rng.uniform(*self.timing.outage)
        proxy.black_hole()
        try:
            stop.wait(seconds)
        finally:
            proxy.heal()
        return (
            f"{proxy.open_connections()} connection(s) through the proxy black-holed for {seconds:.1f} s, then healed"
        )

    def _broker_blocked(self, stop: threading.Event) -> str:
        seconds = self.rng.uniform(*self.timing.outage)
        self.services.block_publishers()
        try:
            stop.wait(seconds)
        finally:
            self.services.unblock_publishers()
        return f"set_vm_memory_high_watermark 0, {seconds:.1f} s blocked, then {MEMORY_HIGH_WATERMARK}"

    def _tenant_down(self, stop: threading.Event) -> str:
        seconds = self.rng.uniform(*self.timing.outage)
        return tenant_down(self.services.postgres_url, self.services.databases, seconds, stop)

    def _connection_drop(self, stop: threading.Event) -> str:
        cut = self.services.drop_connections()
        return f"pg_terminate_backend cut {cut} backend(s) of our databases"
