"""``manage.py ecotone_cleanup [--dry-run] [--database ALIAS]`` — delete inbox rows past their retention.

The inbox keeps one row per handled message so that a redelivery is not handled
twice. After ``ECOTONE["INBOX_RETENTION"]`` (default 7 days) no redelivery is
expected any more; run this daily, like Django's ``clearsessions``. Finished
``django.tasks`` results go too once older than the task backend's
``OPTIONS["RESULT_RETENTION"]`` (default 7 days).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...clock import now
from ...conf import get_config
from ...messaging import result_retention
from ...models import InboxEntry, TaskRun
from ...storage import inbox


class Command(BaseCommand):
    help = "Delete inbox (dedup) rows older than ECOTONE['INBOX_RETENTION'] in every tenant database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
        parser.add_argument("--database", action="append", dest="aliases", help="only this alias (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        config = get_config()
        aliases = options["aliases"] or list(config.database_aliases)
        unknown = sorted(set(aliases) - set(config.database_aliases))
        if unknown:
            raise CommandError(
                f"unknown database(s) {', '.join(unknown)}; tenant databases are {', '.join(config.database_aliases)}"
            )
        retention = config.inbox_retention
        total = 0
        for alias in aliases:
            if options["dry_run"]:
                count = InboxEntry.objects.using(alias).filter(handled_at__lt=now() - retention).count()
            else:
                count = inbox.cleanup(alias, retention)
            total += count
            self.stdout.write(f"{alias}: {count} inbox row(s) older than {retention}")
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(f"{verb} {total} inbox row(s).")
        keep = timedelta(seconds=result_retention())
        results = 0
        for alias in aliases:
            finished = TaskRun.objects.using(alias).filter(
                status__in=(TaskRun.SUCCESSFUL, TaskRun.FAILED), finished_at__lt=now() - keep
            )
            results += finished.count() if options["dry_run"] else finished.delete()[0]
        self.stdout.write(f"{verb} {results} finished task result(s) older than {keep}.")
