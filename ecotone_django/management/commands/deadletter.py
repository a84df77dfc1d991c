"""``manage.py deadletter list|show ID|replay ID|replay --all|delete ID [--database ALIAS]``.

Dead letters live in the tenant databases, so ids are per database. ``list``
covers every tenant database; ``show``, ``replay`` and ``delete`` look the id up
in all of them and ask for ``--database`` when it exists in more than one.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_config
from ...models import DeadLetter
from ...replay import ReplayError, replay, replay_many
from ._tables import render_table

ACTIONS = ("list", "show", "replay", "delete")


class Command(BaseCommand):
    help = "List, show, replay or delete dead letters in every tenant database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("id", nargs="?", type=int, help="dead letter id (show, replay, delete)")
        parser.add_argument("--all", action="store_true", help="replay every dead letter")
        parser.add_argument("--database", help="only this tenant database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        action, letter_id = options["action"], options["id"]
        aliases = self._aliases(options["database"])
        if action == "list":
            self._list(aliases)
        elif action == "replay" and options["all"]:
            if letter_id is not None:
                raise CommandError("give a dead letter id or --all, not both")
            self._replay_all(aliases)
        elif letter_id is None:
            alternative = " or --all" if action == "replay" else ""
            raise CommandError(f"deadletter {action} needs a dead letter id{alternative}")
        else:
            alias, letter = self._find(letter_id, aliases)
            if action == "show":
                self._show(alias, letter)
            elif action == "replay":
                self._replay(alias, letter)
            else:
                DeadLetter.objects.using(alias).filter(pk=letter.pk).delete()
                self.stdout.write(f"Deleted dead letter {letter.pk} from {alias}.")

    def _aliases(self, database: str | None) -> tuple[str, ...]:
        aliases = get_config().database_aliases
        if database is None:
            return aliases
        if database not in aliases:
            raise CommandError(f"unknown database {database!r}; tenant databases are {', '.join(aliases)}")
        return (database,)

    def _find(self, letter_id: int, aliases: tuple[str, ...]) -> tuple[str, DeadLetter]:
        found = [
            (alias, letter) for alias in aliases for letter in DeadLetter.objects.using(alias).filter(pk=letter_id)
        ]
        if not found:
            raise CommandError(f"no dead letter with id {letter_id} in {', '.join(aliases)}")
        if len(found) > 1:
            where = ", ".join(alias for alias, _ in found)
            raise CommandError(f"dead letter id {letter_id} exists in {where}; choose one with --database")
        return found[0]

    def _list(self, aliases: tuple[str, ...]) -> None:
        rows = [
            [str(letter.pk), letter.message_type or "-", letter.handler or "-", alias, letter.reason]
            for alias in aliases
            for letter in DeadLetter.objects.using(alias).order_by("-failed_at", "-id")
        ]
        if not rows:
            self.stdout.write("No dead letters.")
            return
        self.stdout.write(render_table(["ID", "MESSAGE TYPE", "HANDLER", "DATABASE", "REASON"], rows))

    def _show(self, alias: str, letter: DeadLetter) -> None:
        fields = [
            ("ID", str(letter.pk)),
            ("Database", alias),
            ("Message id", letter.message_id),
            ("Message type", letter.message_type),
            ("Handler", letter.handler),
            ("Channel", letter.channel),
            ("Tenant", letter.tenant),
            ("Attempts", str(letter.attempts)),
            ("Failed at", letter.failed_at.isoformat()),
            ("Reason", letter.reason),
            ("Exception", f"{letter.exception_type}: {letter.exception_message}" if letter.exception_type else ""),
        ]
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            self.stdout.write(f"{label + ':':<{width + 1}} {value or '-'}")
        self.stdout.write("\nTraceback:\n" + (letter.traceback.rstrip() or "-"))
        self.stdout.write("\nEnvelope:\n" + letter.envelope_pretty)

    def _replay(self, alias: str, letter: DeadLetter) -> None:
        try:
            row = replay(letter, alias)
        except ReplayError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Replayed dead letter {letter.pk} in {alias}: {row.message_type} → {row.handler} on channel {row.channel}."
        )

    def _replay_all(self, aliases: tuple[str, ...]) -> None:
        total, failures = 0, []
        for alias in aliases:
            replayed, errors = replay_many(DeadLetter.objects.using(alias).order_by("failed_at", "id"), alias)
            total += replayed
            failures.extend(errors)
        self.stdout.write(f"Replayed {total} dead letter(s).")
        for error in failures:
            self.stderr.write(str(error))
        if failures:
            raise CommandError(f"{len(failures)} dead letter(s) could not be replayed; they are kept")
