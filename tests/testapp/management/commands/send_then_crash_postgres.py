"""``manage.py send_then_crash_postgres NAME --tenant T`` — send, then crash PostgreSQL at once (test-only).

It sends RecordOnRabbit(NAME) outside any transaction, with the broker unreachable, so the send commits
an outbox row for the relay; the moment ``send()`` returns it sends SIGQUIT to the postmaster: an
immediate shutdown, in which whatever the server's WAL buffers hold is lost, as in a crash. The WAL
writer flushes them every 200 ms by default, so only a flush made before ``send()`` returned saves the row.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from ecotone_django import command_bus
from ecotone_django.tenancy import alias_for
from tests.testapp.messaging import RecordOnRabbit


class Command(BaseCommand):
    help = "Send RecordOnRabbit(NAME) in autocommit, then crash PostgreSQL (SIGQUIT to the postmaster)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--tenant", default="small")

    def handle(self, *args: Any, **options: Any) -> None:
        with connections[alias_for(options["tenant"])].cursor() as cursor:
            cursor.execute("SHOW data_directory")
            (data_directory,) = cursor.fetchone()
        postmaster = int(Path(data_directory, "postmaster.pid").read_text().split()[0])
        command_bus.send(RecordOnRabbit(options["name"]), metadata={"tenant": options["tenant"]})
        os.kill(postmaster, signal.SIGQUIT)
        self.stdout.write("sent, then crashed PostgreSQL")
