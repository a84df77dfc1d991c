"""``manage.py relay_outbox`` — publish due outbox rows of every tenant database to their brokers."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_config
from ...outbox import Relay
from ...schema import migration_problems


class Command(BaseCommand):
    help = "Run the outbox relay alone: every tenant database, due messages only."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="one sweep, then exit")
        parser.add_argument("--database", action="append", dest="aliases", help="only this alias (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        relay = Relay(options["aliases"])
        problems = migration_problems(relay.aliases)
        if problems:  # one line each; the relay never starts on a database without its tables
            raise CommandError("\n".join(problems))
        if options["once"]:
            self.stdout.write(f"relayed {relay.run_once()}")
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        interval = get_config().worker.relay_interval
        total = 0
        while not stop.is_set():
            total += relay.run_once()
            stop.wait(interval)
        self.stdout.write(f"relayed {total}")
