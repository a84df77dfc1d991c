"""``consume_channel`` refuses to start on a broken setup — one clear line per problem, a non-zero exit, and
never "consuming" — and an unmigrated tenant database is named with the command that fixes it.

Real ``manage.py`` processes on the check project (``tests/checkproject``): on SQLite files, and on PostgreSQL
databases made empty for the test when PostgreSQL is reachable (where a missing table is a ``ProgrammingError``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.helpers.processes import REPO_ROOT
from tests.helpers.services import require, service_url

SETTINGS = "tests.checkproject.settings"
NOT_MIGRATED = (
    r"database '{alias}' is not migrated \(\d+ migration\(s\) not applied, first \w+\.\w+\): "
    r"run `python manage\.py migrate{database}`"
)


@dataclass
class Project:
    """Where the check project's databases are: SQLite files in a directory, or PostgreSQL databases."""

    engine: str
    env: dict[str, str] = field(default_factory=dict)

    def missing_table(self, table: str) -> str:
        return f'relation "{table}" does not exist' if self.engine == "postgres" else f"no such table: {table}"


def _postgres(prefix: str, *, drop: bool = False) -> None:
    import psycopg

    url = urlparse(service_url("postgres"))
    with psycopg.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password or "",
        dbname="postgres",
        autocommit=True,
    ) as conn:
        for alias in ("default", "big_corp"):
            conn.execute(f"DROP DATABASE IF EXISTS {prefix}_{alias} WITH (FORCE)")
            if not drop:
                conn.execute(f"CREATE DATABASE {prefix}_{alias}")


@pytest.fixture(params=["sqlite", "postgres"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    if request.param == "sqlite":
        yield Project("sqlite", {"ECOTONE_CHECK_DB_DIR": str(tmp_path)})
        return
    require("postgres")
    prefix = f"ecotone_check_{os.getpid()}"
    _postgres(prefix)
    try:
        yield Project("postgres", {"ECOTONE_CHECK_PG_PREFIX": prefix})
    finally:
        _postgres(prefix, drop=True)


def manage(project: Project, *args: str, case: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "ECOTONE_CHECK_CASE")}
    env.update(DJANGO_SETTINGS_MODULE=SETTINGS, ECOTONE_CHECK_CASE=case, PYTHONDONTWRITEBYTECODE="1", **project.env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def not_migrated(alias: str) -> str:
    return NOT_MIGRATED.format(alias=alias, database="" if alias == "default" else f" --database {alias}")


def refused(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The error lines of a worker that refused to start (and checks that it never started)."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "consuming" not in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_a_worker_refuses_every_unmigrated_database_it_serves(project: Project) -> None:
    lines = refused(manage(project, "consume_channel", "orders", "--stop-when-empty"))
    assert len(lines) == 2, lines
    assert re.fullmatch("CommandError: " + not_migrated("default"), lines[0]), lines
    assert re.fullmatch(not_migrated("big_corp"), lines[1]), lines

    assert manage(project, "migrate", "-v0").returncode == 0
    lines = refused(manage(project, "consume_channel", "orders", "--stop-when-empty"))
    assert len(lines) == 1 and re.fullmatch("CommandError: " + not_migrated("big_corp"), lines[0]), lines
    # --tenant narrows the databases served: the shared tenants' worker may start
    served = manage(project, "consume_channel", "orders", "--tenant", "acme", "--stop-when-empty")
    assert served.returncode == 0, served.stdout + served.stderr

    assert manage(project, "migrate", "-v0", "--database", "big_corp").returncode == 0
    started = manage(project, "consume_channel", "orders", "--stop-when-empty")
    assert started.returncode == 0, started.stdout + started.stderr
    first = started.stdout.splitlines()[0]
    assert re.fullmatch(r"ready: consuming orders \(pid \d+\)", first), started.stdout


def test_the_relay_refuses_an_unmigrated_database(project: Project) -> None:
    manage(project, "migrate", "-v0")
    lines = refused(manage(project, "relay_outbox", "--once"))
    assert len(lines) == 1 and re.fullmatch("CommandError: " + not_migrated("big_corp"), lines[0]), lines
    assert manage(project, "relay_outbox", "--once", "--database", "default").stdout.strip() == "relayed 0"


def test_a_worker_refuses_an_unknown_channel_in_one_line(project: Project) -> None:
    manage(project, "migrate", "-v0")
    lines = refused(manage(project, "consume_channel", "ordres", "--stop-when-empty"))
    assert len(lines) == 1 and lines[0].startswith("CommandError: "), lines
    assert "'ordres'" in lines[0] and "did you mean 'orders'?" in lines[0], lines


def test_a_worker_refuses_a_celery_app_that_does_not_import(project: Project) -> None:
    manage(project, "migrate", "-v0")
    manage(project, "migrate", "-v0", "--database", "big_corp")
    args = ("consume_channel", "orders", "--stop-when-empty", "--skip-checks")
    lines = refused(manage(project, *args, case="celery_app_typo"))
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "CommandError: CeleryChannel 'orders_premium': cannot import Celery app 'tests.checkproject.celery_app.ap'"
    ), lines


@pytest.mark.parametrize("skip_checks", [False, True])
def test_a_worker_refuses_handlers_that_do_not_load_naming_the_module(project: Project, skip_checks: bool) -> None:
    args = ["consume_channel", "orders", "--stop-when-empty", *(["--skip-checks"] if skip_checks else [])]
    result = manage(project, *args, case="handler_without_annotation")
    assert result.returncode == 1 and "consuming" not in result.stdout, result.stdout + result.stderr
    expected = (
        "cannot load message handlers: tests.checkproject.handlers_unannotated.ship_order: "
        "cannot inject parameter 'carrier'"
    )
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def scenario(project: Project, name: str) -> dict[str, object]:
    result = manage(project, "shell", "-c", f"from tests.checkproject.scenarios import {name}; {name}()")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_a_send_to_an_unmigrated_tenant_database_names_the_migrate_command(project: Project) -> None:
    manage(project, "migrate", "-v0")  # default only: big_corp was added and never migrated
    outcome = scenario(project, "send")
    for where in ("inside", "outside"):  # in big_corp's transaction, and in autocommit
        error = outcome[where]
        assert isinstance(error, dict) and error["error"] == "UnmigratedDatabaseError", outcome
        assert error["message"].startswith(
            f"database 'big_corp' is not migrated ({project.missing_table('ecotone_outbox')}"
        )
        assert error["message"].endswith("run `python manage.py migrate --database big_corp`")


def test_a_tenant_message_is_never_dead_lettered_in_another_database_and_stays_replayable(project: Project) -> None:
    manage(project, "migrate", "-v0")
    outcome = scenario(project, "dead_letter")
    assert outcome["reject"] == {
        "error": "UnmigratedDatabaseError",
        "message": f"database 'big_corp' is not migrated ({project.missing_table('ecotone_dead_letter')}): "
        "run `python manage.py migrate --database big_corp`",
    }
    assert outcome["letters"] == {
        "default": [],
        "big_corp": ["ProgrammingError" if project.engine == "postgres" else "OperationalError"],
    }

    manage(project, "migrate", "-v0", "--database", "big_corp")
    outcome = scenario(project, "dead_letter")
    assert outcome["reject"] == {"error": ""}
    assert outcome["letters"] == {"default": [], "big_corp": [["tests.checkproject.handlers.PlaceOrder", "big_corp"]]}
    assert outcome["replayed"] == "orders_premium"


def test_celerys_own_worker_requeues_a_message_of_an_unmigrated_database(project: Project) -> None:
    manage(project, "migrate", "-v0")
    outcome = scenario(project, "celery_task")
    assert outcome["requeue"] is True, outcome
    missing = 'relation "ecotone_' if project.engine == "postgres" else "no such table: ecotone_"
    assert f"a database is not migrated ({missing}" in str(outcome["rejected"]), outcome
    assert "run `python manage.py migrate --database ALIAS`" in str(outcome["rejected"]), outcome
