"""``manage.py send_and_die NAME --tenant T`` — a sender that crashes right after its commit (test-only).

It registers ``on_commit(SIGKILL to itself)`` *before* sending RecordOnRabbit; ``on_commit`` callbacks run in
registration order, so the process dies after the commit and before the outbox's fast-path publish: the
committed row is left for the relay.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from ecotone_django import command_bus
from ecotone_django.tenancy import alias_for
from tests.testapp.messaging import RecordOnRabbit


class Command(BaseCommand):
    help = "Send RecordOnRabbit(NAME) in a transaction, then die by SIGKILL between commit and publish."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--tenant", default="small")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = alias_for(options["tenant"])
        with transaction.atomic(using=alias):
            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL), using=alias)
            command_bus.send(RecordOnRabbit(options["name"]), metadata={"tenant": options["tenant"]})
        raise AssertionError("unreachable: the process kills itself on commit")
