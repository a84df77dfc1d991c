"""``manage.py demo`` (``make demo``): the seed's story end to end, with real worker processes and a crash.

1. migrates every database (a fresh set of SQLite files unless ``--keep``),
2. starts ``consume_channel`` workers for ``orders_shared`` and ``orders_premium``,
3. places orders through ``POST /orders`` as signed-in users of free-tier tenants (acme, globex,
   initech: the shared database) and premium ones (big_corp, enterprise_x: dedicated databases),
4. SIGKILLs one worker halfway and starts a replacement,
5. waits until every order settled — completed, cancelled by the payment timeout, or refunded
   after a failed shipment — and prints a table per tenant read from the databases.

It exits non-zero when an order was lost or a side effect happened twice, or on ``--timeout``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from django.test import Client
from django.utils import timezone

from example_project.accounts.models import TenantMembership
from example_project.demo import (
    TenantResult,
    WorkerProcess,
    dead_letters,
    read_results,
    table,
    wait_until_ready,
)
from example_project.orders.messages import OrderStage
from example_project.orders.models import Order

# Free tier on the shared database, premium tenants on their own. The demo does not tell the
# project which is which: settings.ECOTONE does, and the table shows where each one landed.
TENANTS = {"acme": 3, "globex": 2, "initech": 1, "big_corp": 2, "enterprise_x": 2}
CHANNELS = ("orders_shared", "orders_premium")
DEFAULT_PAYMENT_TIMEOUT = 8.0


class Command(BaseCommand):
    help = (
        "Run the order → payment → fulfillment → notification saga with real workers, a SIGKILLed worker, "
        "payment timeouts and refunds; print per-tenant results read from the databases."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--orders", type=int, default=300, help="orders to place (default 300)")
        parser.add_argument("--seed", type=int, default=7, help="seed of tenants, amounts and order ids (default 7)")
        parser.add_argument("--timeout", type=float, default=180.0, help="give up after S seconds (default 180)")
        parser.add_argument("--rate", type=float, default=30.0, help="orders placed per second (default 30)")
        parser.add_argument("--workers", type=int, default=2, help="worker processes per channel (default 2)")
        parser.add_argument(
            "--payment-timeout",
            type=float,
            default=None,
            help=f"seconds the saga waits for a payment (default {DEFAULT_PAYMENT_TIMEOUT:g}, "
            "or what ECOTONE_DEMO_TIME_SCALE makes of 30 minutes)",
        )
        parser.add_argument("--kill-channel", choices=CHANNELS, default="orders_shared", help="whose worker to kill")
        parser.add_argument("--keep", action="store_true", help="keep the previous run's SQLite files")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["orders"] < 1 or options["workers"] < 1 or options["rate"] <= 0:
            raise CommandError("--orders, --workers and --rate must be positive")
        self.began = time.monotonic()
        self.tty = self.stdout.isatty()
        self.workers: list[WorkerProcess] = []
        fresh = self.reset_sqlite(keep=options["keep"])
        self.migrate()
        scale = self.time_scale(options["payment_timeout"])
        timeout_seconds = (settings.SHOP_PAYMENT_TIMEOUT / settings.TIME_SCALE).total_seconds() * scale
        self.describe(timeout_seconds)
        try:
            self.start_workers(options["workers"], scale)
            since = timezone.now()
            prefix = f"s{options['seed']}-" if fresh else f"s{options['seed']}.{int(time.time())}-"
            placed = self.place_orders(options, prefix, since)
            results, timed_out = self.wait_until_settled(placed, prefix, since, options["timeout"])
        finally:
            self.stop_workers()
        self.report(results, prefix, since, timed_out)

    # -- setup ------------------------------------------------------------------------------

    def reset_sqlite(self, *, keep: bool) -> bool:
        """Delete the SQLite files (a fresh demo); True when every database starts empty.

        Server databases are never emptied; a run then tells its orders apart by their id prefix.
        """
        sqlite = [c["NAME"] for c in settings.DATABASES.values() if c["ENGINE"] == "django.db.backends.sqlite3"]
        if keep:
            return False
        connections.close_all()
        for name in sqlite:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{name}{suffix}").unlink(missing_ok=True)
        return len(sqlite) == len(settings.DATABASES)

    def migrate(self) -> None:
        for alias in settings.DATABASES:
            self.say(f"migrating {alias} ({_where(settings.DATABASES[alias])}) …")
            call_command("migrate", database=alias, interactive=False, verbosity=0)

    def time_scale(self, payment_timeout: float | None) -> float:
        if payment_timeout is None and "ECOTONE_DEMO_TIME_SCALE" in os.environ:
            return float(settings.TIME_SCALE)
        base = (settings.SHOP_PAYMENT_TIMEOUT / settings.TIME_SCALE).total_seconds()
        return (payment_timeout or DEFAULT_PAYMENT_TIMEOUT) / base

    def describe(self, timeout_seconds: float) -> None:
        ecotone: dict[str, Any] = settings.ECOTONE
        configured = ecotone["CHANNELS"]
        for name in CHANNELS:
            backend = configured[name]["BACKEND"].rsplit(".", 1)[-1]
            broker = f" on {str(settings.CELERY_BROKER_URL).split(':', 1)[0]}" if backend == "CeleryChannel" else ""
            self.say(f"channel {name}: {backend}{broker}")
        self.say(
            f"payment timeout {timeout_seconds:g} s (30 min scaled) · never paid ≈ {settings.SHOP_UNPAID_RATE:.0%} · "
            f"paid late ≈ {settings.SHOP_LATE_PAYMENT_RATE:.0%} · "
            f"shipment fails ≈ {settings.SHOP_SHIPMENT_FAILURE_RATE:.0%} of paid orders"
        )

    def start_workers(self, per_channel: int, scale: float) -> None:
        logs = Path(settings.VAR_DIR) / "demo-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("worker-*.log"):
            old.unlink()
        self.logs = logs
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "example_project.settings"),
            "ECOTONE_DEMO_TIME_SCALE": repr(scale),
            "ECOTONE_DEMO_VAR_DIR": str(settings.VAR_DIR),
            "PYTHONUNBUFFERED": "1",
        }
        for channel in CHANNELS:
            for _ in range(per_channel):
                self.spawn(channel)
        wait_until_ready(self.workers, timeout=60)
        self.say(f"{len(self.workers)} workers up: " + ", ".join(f"{w.channel}#{w.number}" for w in self.workers))

    def spawn(self, channel: str) -> WorkerProcess:
        number = len(self.workers) + 1
        worker = WorkerProcess(number, channel, self.logs / f"worker-{number}-{channel}.log", self.env)
        self.workers.append(worker)
        return worker

    def stop_workers(self) -> None:
        running = [w for w in self.workers if w.popen.returncode is None]
        for worker in running:
            worker.terminate()
        for worker in running:
            code = worker.reap(timeout=20)
            if code != 0:
                self.say(f"{worker} exited with {code}; its log: {worker.log}")

    # -- placing orders ---------------------------------------------------------------------

    def place_orders(self, options: dict[str, Any], prefix: str, since: datetime) -> dict[str, list[str]]:
        rng = random.Random(options["seed"])
        clients = {tenant: self.signed_in(tenant) for tenant in TENANTS}
        placed: dict[str, list[str]] = {tenant: [] for tenant in TENANTS}
        total, rate = options["orders"], options["rate"]
        kill_at = total // 2
        start = time.monotonic()
        shown = 0.0
        for i in range(total):
            tenant = rng.choices(list(TENANTS), weights=list(TENANTS.values()))[0]
            order_id = f"{prefix}{i:05d}"
            body = {"order_id": order_id, "customer": f"customer-{rng.randrange(1000)}"}
            body["amount"] = str(Decimal(rng.randrange(500, 50_000)) / 100)
            response = clients[tenant].post("/orders", json.dumps(body), content_type="application/json")
            if response.status_code != 202:
                raise CommandError(f"POST /orders for {tenant} answered {response.status_code}: {response.content!r}")
            placed[tenant].append(response.json()["order_id"])
            if i == kill_at:
                self.crash_one(options["kill_channel"])
            if time.monotonic() - shown > 0.25:
                shown = time.monotonic()
                self.progress(placed, prefix, since, total, phase="placing")
            if time.monotonic() - self.began > options["timeout"]:
                raise CommandError(f"timed out after {options['timeout']:g} s while placing orders")
            pause = start + (i + 1) / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        return {tenant: ids for tenant, ids in placed.items() if ids}

    def signed_in(self, tenant: str) -> Client:
        user, _ = get_user_model().objects.get_or_create(username=f"buyer@{tenant}")
        TenantMembership.objects.update_or_create(user=user, defaults={"tenant": tenant})
        client = Client(HTTP_HOST=_host())
        client.force_login(user)
        return client

    def crash_one(self, channel: str) -> None:
        victim = next(w for w in self.workers if w.channel == channel and w.popen.returncode is None)
        victim.kill9()
        replacement = self.spawn(channel)
        self.say(f"SIGKILL {victim} halfway through; started worker {replacement.number} (pid {replacement.pid})")

    # -- waiting ----------------------------------------------------------------------------

    def wait_until_settled(
        self, placed: dict[str, list[str]], prefix: str, since: datetime, timeout: float
    ) -> tuple[list[TenantResult], bool]:
        total = sum(len(ids) for ids in placed.values())
        while True:
            results = self.progress(placed, prefix, since, total, phase="settling")
            if sum(r.settled for r in results) == total:
                self.end_progress()
                return read_results(placed, prefix, since), False
            if time.monotonic() - self.began > timeout:
                self.end_progress()
                self.say(f"timed out after {timeout:g} s")
                return read_results(placed, prefix, since), True
            self.check_workers()
            time.sleep(0.5)

    def check_workers(self) -> None:
        for worker in self.workers:
            if worker.popen.poll() is not None and worker.popen.returncode != -9:
                raise CommandError(f"{worker} died with exit code {worker.popen.returncode}:\n{worker.tail()}")

    def progress(
        self, placed: dict[str, list[str]], prefix: str, since: datetime, total: int, *, phase: str
    ) -> list[TenantResult]:
        results = read_results({t: ids for t, ids in placed.items() if ids}, prefix, since, with_doubles=False)
        sent = sum(len(ids) for ids in placed.values())
        settled = sum(r.settled for r in results)
        width = 30
        done = width * settled // total
        elapsed = time.monotonic() - self.began
        line = f"[{'#' * done}{'.' * (width - done)}] {settled}/{total} settled · {sent} placed · {elapsed:4.0f} s"
        if self.tty:
            self.stdout.write("\r" + line + " " * 4, ending="")
            self.stdout.flush()
        elif elapsed - getattr(self, "_last_line", -10.0) >= 5:
            self._last_line = elapsed
            self.stdout.write(f"{phase}: {line}")
        return results

    def end_progress(self) -> None:
        if self.tty:
            self.stdout.write("")

    def say(self, text: str) -> None:
        if self.tty:
            self.stdout.write("\r\033[K", ending="")
        self.stdout.write(text)
        self.stdout.flush()

    # -- the report -------------------------------------------------------------------------

    def report(self, results: Sequence[TenantResult], prefix: str, since: datetime, timed_out: bool) -> None:
        self.stdout.write("")
        for line in table(results):
            self.stdout.write(line)
        late = sum(r.paid_late for r in results)
        self.stdout.write(
            "cancelled = no payment before the saga's timeout; refunded = the shipment failed, the saga refunded "
            "the payment;\np50/p99 = placed → completed, in ms, of completed orders; "
            f"late payments refunded (counted as cancelled): {late}"
        )
        letters = dead_letters(settings.DATABASES, since)
        for line in letters:
            self.stdout.write(f"dead letter: {line}")
        self.show_samples(prefix)
        lost, doubled = sum(r.lost for r in results), sum(r.doubled for r in results)
        wall = time.monotonic() - self.began
        self.stdout.write(f"worker logs: {self.logs}")
        if lost or doubled or timed_out:
            problems = [f"{lost} lost" if lost else "", f"{doubled} handled twice" if doubled else ""]
            problems.append("timed out" if timed_out else "")
            raise CommandError(f"demo FAILED after {wall:.1f} s: {', '.join(p for p in problems if p)}")
        self.stdout.write(self.style.SUCCESS(f"demo OK in {wall:.1f} s: nothing lost, nothing handled twice"))

    def show_samples(self, prefix: str) -> None:
        """What ``GET /orders/<id>`` answers for one order of each final stage."""
        for stage in (OrderStage.COMPLETED, OrderStage.CANCELLED, OrderStage.REFUNDED):
            for alias in settings.DATABASES:
                order = Order.objects.using(alias).filter(order_id__startswith=prefix, stage=stage).first()
                if order is not None:
                    response = self.signed_in(order.tenant).get(f"/orders/{order.order_id}")
                    self.stdout.write(f"GET /orders/{order.order_id} as {order.tenant} → {response.status_code}")
                    self.stdout.write(f"  {json.dumps(response.json())}")
                    break


def _where(config: dict[str, Any]) -> str:
    engine = config["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"sqlite3 {config['NAME']}"
    return f"{engine} {config.get('HOST') or 'localhost'}/{config['NAME']}"


def _host() -> str:
    """A host name ALLOWED_HOSTS accepts, for the in-process test client."""
    for host in settings.ALLOWED_HOSTS:
        if host not in ("*", "") and not host.startswith("."):
            return host
    return "localhost"
