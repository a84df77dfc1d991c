"""The chaos driver: the example shop on PostgreSQL + RabbitMQ while its processes and servers are broken.

    python -m tests.chaos.driver --orders 2000 --seed 1
    python -m tests.chaos.driver --orders 300 --faults worker_kill,relay_kill,worker_pause,connection_drop

1. creates three fresh PostgreSQL databases (shared + big_corp + enterprise_x, unique names) and a RabbitMQ
   queue of its own, and migrates them through the example project's settings;
2. starts the deployment as separate processes: two ``consume_channel orders_shared`` workers (database
   channel), two ``consume_channel orders_premium`` workers (RabbitMQ), each ``--no-relay`` and one of each
   with ``--concurrency 2``, and one ``relay_outbox``;
3. places ``--orders`` orders for four tenants (two on the shared database, two on their own) at ``--rate``
   per second, plus a few poison messages that must end as dead letters;
4. meanwhile injects faults at seeded random moments (``--faults``; see :class:`tests.chaos.faults.Fault`),
   each logged; every process that dies on its own is a finding (and is restarted). Every process of the
   run, the driver's sender included, reaches RabbitMQ through a loopback proxy that the ``black_hole``
   fault tells to stop forwarding (connections left open);
5. waits until every order settled, stops everything with SIGTERM, then reads the verdict from the
   databases (:mod:`tests.chaos.verify`), prints the report and exits 1 on any violation (2: could not run).

The servers come back up in ``finally`` whatever happens; the databases and the queue are dropped unless
``--keep``. On a machine others test on too, ``--wait-for-quiet 600`` waits until no one else's tests or
benchmarks run before it starts, and ``--polite`` skips a server restart while they do.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import re
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from kombu import Connection  # here, before any thread: two threads importing kombu at once can see it half-made

from tests.chaos.faults import (
    Fault,
    FaultInjector,
    Fleet,
    Role,
    Services,
    Timing,
    foreign_test_processes,
    missing_tools,
    parse_faults,
)
from tests.helpers.processes import REPO_ROOT
from tests.helpers.services import is_reachable, service_address, service_url
from tests.helpers.tcp_proxy import TcpProxy

#: Tenants and their weight: two free-tier tenants share the default database, two have their own.
TENANTS = {"acme": 3, "globex": 2, "big_corp": 2, "enterprise_x": 2}
ALIASES = ("default", "big_corp", "enterprise_x")
DATABASE_VARIABLES = {"default": "DATABASE_URL", "big_corp": "BIG_CORP_DATABASE_URL"}
DATABASE_VARIABLES["enterprise_x"] = "ENTERPRISE_X_DATABASE_URL"
POISON_KINDS = ("failing_handler", "undecodable_row", "broker_garbage", "unknown_type", "wrong_shape")
EXIT_OK, EXIT_VIOLATION, EXIT_ERROR = 0, 1, 2
SHIPPING, TELLING = ("charge", "refund", "shipment"), ("cancellation", "notification")
QUIET_SETTLE = 20.0  # seconds with empty queues after which waiting longer cannot fix an inconsistent order

# Every variable the example's settings read, so that the caller's shell cannot leak in (as tests/example does).
EXAMPLE_VARIABLES = (
    "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "BIG_CORP_DATABASE_URL", "ENTERPRISE_X_DATABASE_URL",
    "CELERY_BROKER_URL", "ORDERS_PREMIUM_QUEUE", "ECOTONE_DEMO_TIME_SCALE", "ECOTONE_DEMO_VAR_DIR",
    "ECOTONE_POLL_INTERVAL", "ECOTONE_RELAY_INTERVAL", "SHOP_UNPAID_RATE", "SHOP_LATE_PAYMENT_RATE",
    "SHOP_SHIPMENT_FAILURE_RATE", "ECOTONE_LOG_LEVEL", "SHOP_LOG_LEVEL", "SHOP_ALLOW_TENANT_HEADER",
    "ECOTONE_CLAIM_LEASE",
)  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.driver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders to place (default 2000, up to 100000)")
    parser.add_argument("--seed", type=int, default=1, help="seeds tenants, amounts, fault kinds and moments")
    parser.add_argument("--rate", type=float, default=40.0, help="orders placed per second (default 40)")
    parser.add_argument(
        "--faults",
        default="all",
        help=f"comma-separated fault kinds, 'all' (default), 'none', or -kind to leave one out; kinds: "
        f"{', '.join(f.value for f in Fault)}",
    )
    parser.add_argument("--poison", type=int, default=len(POISON_KINDS), help="poison messages to inject (default 5)")
    parser.add_argument("--payment-timeout", type=float, default=4.0, help="the saga's payment timeout, seconds")
    parser.add_argument(
        "--gap", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"), help="s between faults"
    )
    parser.add_argument("--pause", type=float, nargs=2, default=(4.0, 12.0), metavar=("MIN", "MAX"), help="SIGSTOP s")
    parser.add_argument(
        "--outage", type=float, nargs=2, default=(2.0, 6.0), metavar=("MIN", "MAX"), help="broker down s"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after S seconds (default 900)")
    parser.add_argument(
        "--polite", action="store_true", help="skip a server restart while someone else's tests or benchmarks run"
    )
    parser.add_argument(
        "--wait-for-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds until no one else's tests run (then: no server restarts this run)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases and the queue afterwards")
    parser.add_argument("--report-json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.orders <= 100_000:
        parser.error("--orders must be between 1 and 100000")
    if args.rate <= 0 or args.poison < 0 or args.payment_timeout <= 0:
        parser.error("--rate and --payment-timeout must be positive, --poison not negative")
    try:
        args.fault_list = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(f"--faults: {exc}")
    return args


def say(text: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the run's resources ----------------------------------------------------------------------------------


@dataclass
class Resources:
    """Databases and queue of one run: unique names, created here, dropped by :meth:`drop`."""

    run: str
    postgres_url: str
    rabbit_url: str
    databases: dict[str, str] = field(default_factory=dict)  # alias -> database name

    @property
    def queue(self) -> str:
        return f"ecotone_chaos_{self.run}"

    def url(self, alias: str) -> str:
        return urlunsplit(urlsplit(self.postgres_url)._replace(path=f"/{self.databases[alias]}"))

    def create(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            for alias in ALIASES:
                name = f"ecotone_chaos_{self.run}_{'shared' if alias == 'default' else alias}"
                conn.execute(f'CREATE DATABASE "{name}"')
                self.databases[alias] = name

    def drop(self) -> None:
        with psycopg.connect(self.postgres_url, autocommit=True) as conn:
            for name in self.databases.values():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with Connection(self.rabbit_url, connect_timeout=5) as conn:
            channel = conn.default_channel
            for delete in (channel.queue_delete, channel.exchange_delete):
                with contextlib.suppress(Exception):
                    delete(self.queue)

    def environment(self, args: argparse.Namespace, var_dir: Path) -> dict[str, str | None]:
        env: dict[str, str | None] = dict.fromkeys(EXAMPLE_VARIABLES)
        env.update({variable: self.url(alias) for alias, variable in DATABASE_VARIABLES.items()})
        env.update(
            DJANGO_SETTINGS_MODULE="example_project.settings",
            CELERY_BROKER_URL=self.rabbit_url,
            ORDERS_PREMIUM_QUEUE=self.queue,
            ECOTONE_DEMO_TIME_SCALE=repr(args.payment_timeout / 1800),
            ECOTONE_DEMO_VAR_DIR=str(var_dir),
            SHOP_UNPAID_RATE="0.1",
            SHOP_LATE_PAYMENT_RATE="0.05",
            SHOP_SHIPMENT_FAILURE_RATE="0.1",
            ECOTONE_LOG_LEVEL="INFO",  # workers log each duplicate the inbox suppressed
            ECOTONE_CLAIM_LEASE="3",  # below the worker_pause fault's pauses: a paused worker's rows move on
            PYTHONUNBUFFERED="1",
        )
        return env


def deployment() -> list[Role]:
    return [
        Role("shared-1", ("consume_channel", "orders_shared", "--no-relay")),
        Role("shared-2", ("consume_channel", "orders_shared", "--no-relay", "--concurrency", "2")),
        Role("premium-1", ("consume_channel", "orders_premium", "--no-relay")),
        Role("premium-2", ("consume_channel", "orders_premium", "--no-relay", "--concurrency", "2")),
        Role("relay", ("relay_outbox",), is_worker=False),
    ]


# -- placing orders ---------------------------------------------------------------------------------------


def retrying(action: Callable[[], Any], what: str, deadline: float) -> tuple[Any, int]:
    """Run ``action`` until it gets through a database or broker outage; returns (result, failed attempts)."""
    from django.db import Error as DatabaseError
    from django.db import connections

    failures = 0
    while True:
        try:
            return action(), failures
        except (DatabaseError, OSError) as exc:
            failures += 1
            for connection in connections.all(initialized_only=True):
                with contextlib.suppress(Exception):
                    connection.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: still failing after the deadline: {exc}") from exc
            time.sleep(0.2)


class Sender(threading.Thread):
    """Places the orders at a steady rate (a client that retries a request that failed), and the poison."""

    def __init__(self, args: argparse.Namespace, prefix: str, resources: Resources, rng: random.Random) -> None:
        super().__init__(name="chaos-sender", daemon=True)
        self.args = args
        self.prefix = prefix
        self.resources = resources
        self.rng = rng
        self.placed: dict[str, list[str]] = {tenant: [] for tenant in TENANTS}
        self.poison: list[Any] = []
        self.retried_sends = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        total = args.orders
        self.poison_at = {total * (k + 1) // (args.poison + 1): k for k in range(args.poison)}

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.placed.values())

    def run(self) -> None:
        try:
            self._place_all()
        except BaseException as exc:
            self.error = exc
            say(f"sender failed: {exc}\n{traceback.format_exc()}")
        finally:
            from django.db import connections

            connections.close_all()
            self.done.set()

    def _place_all(self) -> None:
        from django.utils import timezone

        from ecotone_django import command_bus
        from example_project.orders.messages import PlaceOrder

        tenants, weights = list(TENANTS), list(TENANTS.values())
        start = time.monotonic()
        for i in range(self.args.orders):
            tenant = self.rng.choices(tenants, weights=weights)[0]
            order_id = f"{self.prefix}{i:06d}"
            command = PlaceOrder(
                order_id, f"customer-{self.rng.randrange(1000)}", Decimal(self.rng.randrange(500, 50_000)) / 100,
                timezone.now(),
            )  # fmt: skip
            _, failures = retrying(
                functools.partial(command_bus.send, command, {"tenant": tenant}),
                f"placing order {order_id}",
                time.monotonic() + 180,
            )
            self.retried_sends += failures
            self.placed[tenant].append(order_id)
            if i in self.poison_at:
                self.inject_poison(self.poison_at[i])
            pause = start + (i + 1) / self.args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)

    def inject_poison(self, number: int) -> None:
        from tests.chaos.verify import Poison

        kind = POISON_KINDS[number % len(POISON_KINDS)]
        token = f"chaos-poison-{number}-{kind}"
        tenant = list(TENANTS)[number % len(TENANTS)]
        alias, named = self._inject(kind, token, tenant)
        self.poison.append(Poison(token, kind, alias, named))
        say(f"POISON {kind}: {token} (its dead letter belongs in {alias!r}, tenant {named or '-'!r})")

    def _inject(self, kind: str, token: str, tenant: str) -> tuple[str, str]:
        """Send one poison message of ``kind``; returns where its dead letter belongs: (alias, tenant)."""
        from ecotone_django import command_bus
        from ecotone_django.clock import now
        from ecotone_django.messages import Envelope, message_name, uuid7
        from ecotone_django.models import OutboxMessage
        from ecotone_django.tenancy import alias_for
        from example_project.orders.messages import PlaceOrder
        from example_project.payments.messages import RefundPayment
        from tests.chaos.verify import PLACE_ORDER, REFUND

        deadline = time.monotonic() + 180

        def row(alias: str, channel: str, handler: str, body: str, row_tenant: str) -> None:
            moment = now()
            OutboxMessage.objects.using(alias).create(
                message_id=str(uuid7()), channel=channel, handler=handler, message_type="", tenant=row_tenant,
                body=body, available_at=moment, created_at=moment,
            )  # fmt: skip

        if kind == "failing_handler":  # a refund of a charge that does not exist fails on every attempt
            retrying(lambda: command_bus.send(RefundPayment(token, "chaos poison"), {"tenant": tenant}), kind, deadline)
            return alias_for(tenant), tenant
        if kind == "undecodable_row":  # a queue row of the shared database that is not JSON
            retrying(lambda: row("default", "orders_shared", PLACE_ORDER, f"{{{token} not json", ""), kind, deadline)
            return "default", ""
        if kind == "broker_garbage":  # a message on the premium queue that is no task of ours
            retrying(lambda: self._publish_garbage(token), kind, deadline)
            return "default", ""
        if kind == "unknown_type":  # relayed to RabbitMQ from big_corp, names a type nobody knows
            premium = "big_corp"
            envelope = Envelope(
                "example_project.orders.messages.NoSuchMessage", {"order_id": token}, {"tenant": premium}
            )
            retrying(lambda: row(premium, "orders_premium", REFUND, envelope.encode(), premium), kind, deadline)
            return premium, premium
        # wrong_shape: a PlaceOrder whose amount is no number, on the shared database channel
        envelope = Envelope(
            message_name(PlaceOrder), {"order_id": token, "customer": "x", "amount": "lots"}, {"tenant": "acme"}
        )
        retrying(lambda: row("default", "orders_shared", PLACE_ORDER, envelope.encode(), "acme"), kind, deadline)
        return "default", "acme"

    def _publish_garbage(self, token: str) -> None:
        from kombu import Connection

        with Connection(self.resources.rabbit_url, connect_timeout=5) as conn:
            conn.Producer().publish(
                json.dumps({"chaos": token}), exchange="", routing_key=self.resources.queue, delivery_mode=2,
                content_type="application/json", content_encoding="utf-8", retry=False,
            )  # fmt: skip


# -- the run ----------------------------------------------------------------------------------------------


_COUNTERS = re.compile(r"handled=(\d+) duplicates=(\d+) retried=(\d+) dead=(\d+) relayed=(\d+)")
_DUPLICATE = re.compile(r"duplicate \S+ for \S+ skipped")


def worker_counters(fleet: Fleet) -> Counter[str]:
    """Deliveries by outcome, summed over every worker incarnation (a killed one: its last progress line)."""
    totals: Counter[str] = Counter()
    for incarnation, output in fleet.outputs():
        if not incarnation.role.is_worker:
            continue
        lines = _COUNTERS.findall(output)
        if lines:
            handled, duplicates, retried, dead, _ = map(int, lines[-1])
            totals.update(handled=handled, retried=retried, dead=dead, counted_duplicates=duplicates)
        totals["duplicates"] += len(_DUPLICATE.findall(output))
        totals["tracebacks"] += output.count("Traceback (most recent call last)")
    return totals


def queue_depth(resources: Resources) -> int:
    with Connection(resources.rabbit_url, connect_timeout=5) as conn:
        _, count, _ = conn.channel().queue_declare(queue=resources.queue, passive=True)
        return int(count)


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.began = time.monotonic()
        self.rng = random.Random(args.seed)
        self.resources = Resources(
            run=f"s{args.seed}_{uuid.uuid4().hex[:8]}",
            postgres_url=service_url("postgres"),
            rabbit_url=service_url("rabbitmq"),
        )
        self.var_dir = REPO_ROOT / "var" / "chaos" / self.resources.run
        self.prefix = f"c{args.seed}-"
        self.stop = threading.Event()
        self.problems: list[str] = []  # violations seen during the run (before the verdict)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def execute(self) -> int:
        faults = list(self.args.fault_list)
        if self.args.wait_for_quiet > 0 and any(f.disruptive for f in faults):
            faults = self.wait_for_quiet(faults, self.args.wait_for_quiet)
            self.began = time.monotonic()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        services = Services(self.resources.postgres_url, self.resources.rabbit_url, [])
        # Every process of the run, this one included, reaches RabbitMQ through a proxy that can black-hole it.
        proxy = TcpProxy(service_address("rabbitmq")).start()
        services.proxy = proxy
        fleet: Fleet | None = None
        code = EXIT_ERROR
        try:
            self.resources.create()
            services.databases = list(self.resources.databases.values())
            env = self.resources.environment(self.args, self.var_dir)
            env["CELERY_BROKER_URL"] = proxy.url(self.resources.rabbit_url)
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.environ["ECOTONE_LOG_LEVEL"] = "WARNING"  # the driver itself: warnings only
            self.setup_django()
            fleet = Fleet(deployment(), env, self.var_dir / "logs")
            say(f"run {self.resources.run}: databases {', '.join(self.resources.databases.values())}, "
                f"queue {self.resources.queue}; logs in {self.var_dir}")  # fmt: skip
            fleet.start_all()
            say("deployment up: " + ", ".join(f"{n} pid {i.process.pid}" for n, i in fleet.current.items()))
            code = self.flow(fleet, services, faults)
            return code
        finally:
            self.stop.set()
            if fleet is not None:
                fleet.kill_all()
                fleet.save_logs()
            services.ensure_up()
            proxy.stop()
            from django.db import connections

            with contextlib.suppress(Exception):
                connections.close_all()
            if not self.args.keep:
                self.resources.drop()
            else:
                say(f"kept databases {', '.join(self.resources.databases.values())} and queue {self.resources.queue}")
            if code == EXIT_OK and not self.args.keep:
                shutil.rmtree(self.var_dir, ignore_errors=True)  # a failed run keeps its logs

    def wait_for_quiet(self, faults: list[Fault], seconds: float) -> list[Fault]:
        deadline = time.monotonic() + seconds
        while others := foreign_test_processes():
            if time.monotonic() > deadline:
                say(f"{len(others)} foreign test process(es) still running: no server restarts this run")
                return [f for f in faults if not f.disruptive]
            say(f"waiting for {len(others)} foreign test process(es) before restarting servers: {others[0][:80]}")
            time.sleep(10)
        return faults

    def setup_django(self) -> None:
        import django
        from django.core.management import call_command

        django.setup()
        for alias in ALIASES:
            call_command("migrate", database=alias, interactive=False, verbosity=0)

    def flow(self, fleet: Fleet, services: Services, faults: list[Fault]) -> int:
        from django.utils import timezone

        since = timezone.now()
        sender = Sender(self.args, self.prefix, self.resources, random.Random(self.args.seed + 1))
        gap, pause, outage = self.args.gap, self.args.pause, self.args.outage
        timing = Timing(gap=(gap[0], gap[1]), pause=(pause[0], pause[1]), outage=(outage[0], outage[1]))
        injector = FaultInjector(faults, self.rng, fleet, services, say, timing, polite=self.args.polite)
        chaos = threading.Thread(
            target=injector.run, args=(lambda: not sender.done.is_set(), self.stop), name="chaos-faults", daemon=True
        )
        say(f"placing {self.args.orders} orders at {self.args.rate:g}/s for {', '.join(TENANTS)}; "
            f"faults: {', '.join(faults) or 'none'}")  # fmt: skip
        sender.start()
        chaos.start()
        settled_at = self.monitor(fleet, sender, chaos, injector, since)
        self.stop.set()
        chaos.join(timeout=180)
        codes = fleet.stop_all(timeout=30)
        for name, code in codes.items():
            if code != 0:
                self.problems.append(f"{name} exited with {code} on SIGTERM (expected 0)")
        return self.report(fleet, sender, injector, since, settled_at)

    def monitor(
        self, fleet: Fleet, sender: Sender, chaos: threading.Thread, injector: FaultInjector, since: datetime
    ) -> float | None:
        """Watch the processes and the progress until everything settled; returns the time it took, or None."""
        from tests.chaos import verify

        aliases = list(ALIASES)
        shown = 0.0
        quiet_since: float | None = None
        while True:
            for death in fleet.check():
                say(f"VIOLATION {death}; restarted it")
            if sender.error is not None:
                self.problems.append(f"placing orders failed: {sender.error}")
                return None
            try:
                settled = verify.settled_orders(aliases, self.prefix)
                backlog = verify.queued(aliases)
                depth = queue_depth(self.resources)
                poisoned = sum(any(p.token in b for b in verify.dead_letter_bodies(aliases)) for p in sender.poison)
            except Exception as exc:  # a server is down right now: look again shortly
                settled, backlog, depth, poisoned = -1, -1, -1, -1
                _close_connections()
                if self.elapsed() - shown > 5:
                    say(f"progress unavailable: {type(exc).__name__}: {str(exc)[:120]}")
            quiet = (
                sender.done.is_set()
                and not chaos.is_alive()
                and settled == self.args.orders
                and backlog == 0
                and depth == 0
                and poisoned == len(sender.poison) == self.args.poison
            )
            quiet_since = (quiet_since or time.monotonic()) if quiet else None
            # Every order consistent (notified, charged…), not only in a final stage: a message a consumer
            # holds unacked is not on the queue, and one still on its way must not be taken for lost.
            if quiet and self.consistent(sender, since):
                say(f"settled: {settled} orders, queues empty, {poisoned} poison message(s) dead-lettered")
                return self.elapsed()
            if quiet_since is not None and time.monotonic() - quiet_since > QUIET_SETTLE:
                say(f"nothing moved for {QUIET_SETTLE:g} s, yet some orders are inconsistent: reading the verdict")
                return self.elapsed()
            if self.elapsed() - shown >= 5:
                shown = self.elapsed()
                say(f"t={shown:5.0f}s placed {sender.count}/{self.args.orders} settled {settled} "
                    f"queued {backlog} on-broker {depth} poison-dead {poisoned}/{len(sender.poison)} "
                    f"faults {sum(injector.counts.values())}")  # fmt: skip
            if self.elapsed() > self.args.timeout:
                self.problems.append(f"not settled after {self.args.timeout:g} s (timeout)")
                say("TIMEOUT: giving up")
                return None
            time.sleep(0.5)

    def consistent(self, sender: Sender, since: datetime) -> bool:
        from example_project.demo import read_results

        try:
            results = read_results(sender.placed, self.prefix, since, with_doubles=False)
        except Exception:
            _close_connections()
            return False
        return sum(r.settled for r in results) == self.args.orders

    def report(
        self, fleet: Fleet, sender: Sender, injector: FaultInjector, since: datetime, settled_at: float | None
    ) -> int:
        from example_project.demo import table
        from tests.chaos import verify

        verdict, _ = retrying(
            lambda: verify.verify(sender.placed, self.prefix, since, ALIASES, sender.poison),
            "reading the verdict",
            time.monotonic() + 120,
        )
        try:
            leftover = queue_depth(self.resources)
        except Exception as exc:
            leftover = -1
            self.problems.append(f"cannot read the broker queue after the run: {exc}")
        if leftover > 0:
            self.problems.append(f"{leftover} message(s) left on the broker queue {self.resources.queue}")
        counters = worker_counters(fleet)
        violations = [*self.problems, *fleet.deaths, *injector.errors, *verdict.violations]
        deliveries = counters["handled"] + counters["counted_duplicates"] + counters["retried"] + counters["dead"]

        print()
        for line in table(verdict.results):
            print(line)
        print()
        print(f"{'fault':<52}{'injected':>10}{'skipped':>10}")
        for fault in Fault:
            enabled = fault in injector.faults
            print(
                f"{fault.value + ' (' + fault.label + ')':<52}"
                f"{injector.counts[fault] if enabled else '-':>10}{injector.skipped[fault] if enabled else '-':>10}"
            )
        rows = [
            ("orders placed", sender.count),
            ("sends retried by the client (server down)", sender.retried_sends),
            ("messages handled (inbox rows)", verdict.handled),
            ("deliveries counted by workers (see note)", deliveries),
            ("redeliveries seen (inbox hits + retries)", counters["duplicates"] + counters["retried"]),
            ("duplicates suppressed by the inbox", counters["duplicates"]),
            ("side effects: charges/refunds/shipments", "/".join(str(verdict.side_effects[k]) for k in SHIPPING)),
            ("side effects: cancellations/notifications", "/".join(str(verdict.side_effects[k]) for k in TELLING)),
            ("poison messages dead-lettered", f"{verdict.poison_dead} of {len(sender.poison)}"),
            ("  extra copies of a poison dead letter", verdict.poison_duplicates),
            ("dead letters in all", verdict.dead_letters),
            ("worker processes started (incl. restarts)", sum(1 for i in fleet.history if i.role.is_worker)),
            ("processes that died on their own", len(fleet.deaths)),
            ("tracebacks in worker logs", counters["tracebacks"]),
            ("rows in another tenant's database", verdict.misplaced),
            ("lost", verdict.lost),
            ("doubled", verdict.doubled),
            ("settled after (s)", f"{settled_at:.1f}" if settled_at is not None else "never"),
            ("wall time (s)", f"{self.elapsed():.1f}"),
        ]
        print()
        for label, value in rows:
            print(f"{label:<52}{value!s:>20}")
        print(
            "note: a SIGKILLed worker's counters end at its last progress line (printed every 5 s); duplicates are "
            "counted\nfrom the workers' logs, one line each; lost, doubled and placement are read from the databases."
        )
        print()
        if self.args.report_json:
            self.args.report_json.write_text(
                json.dumps(
                    {
                        "run": self.resources.run,
                        "seed": self.args.seed,
                        "orders": sender.count,
                        "faults": {f.value: injector.counts[f] for f in injector.faults},
                        "skipped": {f.value: injector.skipped[f] for f in injector.faults},
                        "events": [e.__dict__ | {"fault": e.fault.value} for e in injector.events],
                        "report": {label: value for label, value in rows},
                        "violations": violations,
                        "finished": datetime.now(UTC).isoformat(),
                    },
                    indent=2,
                    default=str,
                )
            )
        if violations:
            for violation in violations:
                print(f"VIOLATION: {violation}")
            print(f"chaos FAILED: {len(violations)} violation(s); logs in {self.var_dir}")
            return EXIT_VIOLATION
        kept = f"logs in {self.var_dir}" if self.args.keep else "logs removed (--keep keeps them)"
        print(f"chaos OK: lost = 0, doubled = 0, every row in its tenant's database; {kept}")
        return EXIT_OK


def _close_connections() -> None:
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        with contextlib.suppress(Exception):
            connection.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [name for name in ("postgres", "rabbitmq") if not is_reachable(name)]
    if missing:
        say(f"cannot run: {', '.join(missing)} not reachable (start them with `make services`)")
        return EXIT_ERROR
    for problem in missing_tools(args.fault_list):
        say(f"cannot inject {problem}")
        return EXIT_ERROR
    try:
        return Run(args).execute()
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_ERROR
    except Exception:
        say(f"the chaos run itself failed:\n{traceback.format_exc()}")
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
