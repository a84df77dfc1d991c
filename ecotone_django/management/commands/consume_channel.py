"""``manage.py consume_channel NAME`` — one worker command for every channel kind."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...channels import channels
from ...channels.celery import CeleryChannel
from ...discovery import get_registry
from ...exceptions import ConfigurationError
from ...schema import migration_problems
from ...worker import Worker


class Command(BaseCommand):
    help = (
        "Consume a channel (database, broker or dynamic): run its handlers until stopped. "
        "SIGTERM/SIGINT finish the message in hand, then exit 0. Also relays the outbox unless --no-relay."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channels", nargs="+", metavar="NAME", help="channel name(s) from ECOTONE['CHANNELS']")
        parser.add_argument("--concurrency", type=int, default=1, help="consumer threads per channel (default 1)")
        parser.add_argument("--limit", type=int, default=None, help="exit after this many messages")
        parser.add_argument(
            "--time-limit", type=float, default=None, help="seconds a handler may run before it fails (concurrency 1)"
        )
        parser.add_argument(
            "--stop-when-empty",
            action="store_true",
            help=(
                "exit 0 once no message is due: none in any database served (another consumer's included), "
                "none ready in a broker queue, held by this worker or waiting for the relay; delayed messages "
                "not yet due do not count"
            ),
        )
        parser.add_argument(
            "--tenant", action="append", default=None, dest="tenants", help="only this tenant's messages (repeatable)"
        )
        parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay in this process")
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus metrics on this port (/metrics; needs the 'metrics' extra)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        worker = self._ready_worker(options)
        if options["metrics_port"] is not None:
            _serve_metrics(options["metrics_port"])
            self.stdout.write(f"metrics on port {options['metrics_port']}")
        logging.getLogger("ecotone_django").info("consuming %s", ", ".join(options["channels"]))
        worker.install_signal_handlers()
        self.stdout.write(f"ready: consuming {', '.join(options['channels'])} (pid {os.getpid()})")
        self.stdout.flush()
        try:
            stats = worker.run()
        except ConfigurationError as exc:  # e.g. a transport refusing this consumer's --concurrency
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"stopped: {stats.line()}")
        try:
            due, delayed = worker.waiting()
            left = f"due {due}, delayed {delayed}"
        except Exception as exc:  # the run is over either way; only the count of what is left is missing
            left = f"what is left could not be counted: {type(exc).__name__}: {exc}"
        self.stdout.write(f"stopped: {worker.stop_reason} (handled {stats.handled}, {left})")

    def _ready_worker(self, options: dict[str, Any]) -> Worker:
        """The worker, once the handlers load, the channels resolve and every database it serves is migrated.

        Each problem is one line of the error; the worker never starts consuming with any of them.
        """
        try:
            get_registry()
        except (ConfigurationError, ImportError) as exc:
            raise CommandError(f"cannot load message handlers: {exc}") from exc
        try:
            for name in options["channels"]:
                channels.concrete(name)
            worker = Worker(
                options["channels"],
                tenants=options["tenants"],
                limit=options["limit"],
                time_limit=options["time_limit"],
                stop_when_empty=options["stop_when_empty"],
                relay=not options["no_relay"],
                concurrency=options["concurrency"],
                progress=lambda line: self.stdout.write(line),
            )
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from exc
        problems = []
        for broker in worker.broker_channels:
            if isinstance(broker, CeleryChannel):
                try:
                    broker.profile  # noqa: B018 - imports the Celery app, picks the transport of its broker_url
                except ConfigurationError as exc:
                    problems.append(str(exc))
        problems += migration_problems(worker.aliases)
        if problems:
            raise CommandError("\n".join(problems))
        return worker


def _serve_metrics(port: int) -> None:
    try:
        from ...telemetry.prometheus import serve_metrics  # noqa: PLC0415 - the optional 'metrics' extra
    except ImportError as exc:
        raise CommandError(
            f"--metrics-port needs the 'metrics' extra (pip install ecotone-django[metrics]): {exc}"
        ) from exc
    try:
        serve_metrics(port)
    except OSError as exc:
        raise CommandError(f"--metrics-port {port}: {exc}") from exc
