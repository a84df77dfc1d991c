"""``manage.py ecotone_status [--json]`` — channels, backlog, outbox lag, dead letters and sagas per database."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError
from django.db.models import Count, Min, Q

from ...channels import Channel, channels
from ...clock import now
from ...conf import get_config
from ...exceptions import ConfigurationError
from ...models import DeadLetter, OutboxMessage, SagaState
from ._tables import render_table

SAGA_STATUSES = [status for status, _ in SagaState.STATUS_CHOICES]


def _kind(channel: Channel) -> str:
    return "dynamic" if channel.is_dynamic else "broker" if channel.is_broker else "database"


def channel_status() -> list[dict[str, Any]]:
    """Every configured channel: its backend, kind and the channels its consumer consumes."""
    result = []
    for name, spec in get_config().channels.items():
        entry: dict[str, Any] = {"name": name, "backend": spec.backend}
        try:
            channel = channels[name]
            entry.update(kind=_kind(channel), targets=list(channel.targets()))
        except ConfigurationError as exc:
            entry.update(kind="invalid", targets=[], error=str(exc))
        result.append(entry)
    return result


def _age(moment: datetime, since: datetime | None) -> float | None:
    return None if since is None else max((moment - since).total_seconds(), 0.0)


def database_status(alias: str, moment: datetime, kinds: dict[str, str]) -> dict[str, Any]:
    """Backlog per concrete channel (due / delayed / oldest due age), outbox lag, dead letters, sagas."""
    due = Q(available_at__lte=moment)
    counts = (
        OutboxMessage.objects.using(alias)
        .values("channel")
        .annotate(due=Count("pk", filter=due), delayed=Count("pk", filter=~due), oldest=Min("available_at", filter=due))
        .order_by("channel")
    )
    found: dict[str, tuple[int, int, datetime | None]] = {
        row["channel"]: (row["due"], row["delayed"], row["oldest"]) for row in counts
    }
    backlog: list[dict[str, Any]] = []
    for name in [*kinds, *sorted(set(found) - set(kinds))]:
        due_count, delayed_count, oldest = found.get(name, (0, 0, None))
        backlog.append(
            {
                "channel": name,
                "kind": kinds.get(name, "unknown"),
                "due": due_count,
                "delayed": delayed_count,
                "oldest_due_age_seconds": _age(moment, oldest),
            }
        )
    broker_ages = [b["oldest_due_age_seconds"] for b in backlog if b["kind"] == "broker"]
    sagas = dict.fromkeys(SAGA_STATUSES, 0)
    by_status = SagaState.objects.using(alias).values_list("status").annotate(count=Count("pk")).order_by("status")
    sagas.update({status: count for status, count in by_status})
    return {
        "alias": alias,
        "backlog": backlog,
        "outbox_lag_seconds": max((age for age in broker_ages if age is not None), default=None),
        "dead_letters": DeadLetter.objects.using(alias).count(),
        "sagas": sagas,
    }


def collect() -> dict[str, Any]:
    """Everything ``ecotone_status`` reports, as plain JSON-ready data."""
    moment = now()
    chans = channel_status()
    kinds = {c["name"]: c["kind"] for c in chans if c["kind"] in ("database", "broker")}
    databases = []
    for alias in get_config().database_aliases:
        try:
            databases.append(database_status(alias, moment, kinds))
        except DatabaseError as exc:  # one unreachable tenant database must not hide the others
            databases.append({"alias": alias, "error": f"{type(exc).__name__}: {exc}"})
    return {"generated_at": moment.isoformat(), "channels": chans, "databases": databases}


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def render_text(status: dict[str, Any]) -> str:
    channel_rows = [[c["name"], c["backend"], c["kind"], ", ".join(c["targets"]) or "-"] for c in status["channels"]]
    ok = [db for db in status["databases"] if "error" not in db]
    backlog_rows = [
        [
            db["alias"],
            b["channel"],
            b["kind"],
            str(b["due"]),
            str(b["delayed"]),
            format_age(b["oldest_due_age_seconds"]),
        ]
        for db in ok
        for b in db["backlog"]
    ]
    statuses = list(dict.fromkeys(s for db in ok for s in db["sagas"]))
    summary_rows = [
        [
            db["alias"],
            str(db["dead_letters"]),
            format_age(db["outbox_lag_seconds"]),
            *(str(db["sagas"].get(s, 0)) for s in statuses),
        ]
        for db in ok
    ]
    parts = [
        "Channels",
        render_table(["NAME", "BACKEND", "KIND", "TARGETS"], channel_rows, indent="  "),
        "",
        "Backlog (outbox / queue rows)",
        render_table(["DATABASE", "CHANNEL", "KIND", "DUE", "DELAYED", "OLDEST DUE"], backlog_rows, indent="  "),
        "",
        "Databases",
        render_table(
            ["DATABASE", "DEAD LETTERS", "OUTBOX LAG", *(f"SAGAS {s.upper()}" for s in statuses)],
            summary_rows,
            indent="  ",
        ),
    ]
    parts.extend(f"  {db['alias']}: unavailable ({db['error']})" for db in status["databases"] if "error" in db)
    return "\n".join(parts)


class Command(BaseCommand):
    help = "Show channels, backlog and oldest age per tenant database, outbox lag, dead letters and sagas by status."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args: Any, **options: Any) -> None:
        status = collect()
        if options["json"]:
            self.stdout.write(json.dumps(status, indent=2))
        else:
            self.stdout.write(render_text(status))
