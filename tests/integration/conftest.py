"""Shared fixtures for integration tests (real databases, brokers and worker processes).

* ``_database_service`` (autouse): on ``ECOTONE_TEST_DB=postgres|mariadb`` the database server must be
  reachable — skipped locally when it is not, a failure under ``CI=true`` (see ``tests.helpers.services``).
* ``worker``: a factory that starts ``manage.py consume_channel ARGS...`` as a real process wired to this
  pytest process's test databases, waits until it is consuming, and stops it at teardown::

      @pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)  # rows must be committed
      def test_something(worker):
          proc = worker("db", "--no-relay")             # returns a running ManagedProcess
          ...
          assert proc.stop() == 0                       # SIGTERM; or proc.kill9(), proc.wait() ...

  Tests that use it must be ``transaction=True``: the worker is another process and only sees
  committed rows. The fixture is torn down before pytest-django flushes the databases, so no
  worker holds a lock while the tables are emptied.
* ``stats_of(output)``: the counters of the worker's last ``stopped: handled=… duplicates=…`` line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping

import pytest
from django.conf import settings

from tests.helpers.processes import ManagedProcess, spawn_manage, wait_for
from tests.helpers.services import require

#: Every database alias of the test settings: the shared one first, then the dedicated tenant ones.
ALL_DATABASES = ["default", "big_corp", "enterprise_x"]

#: What ``consume_channel`` prints once it is set up and about to consume.
READY_MARK = "ready: consuming "

WorkerFactory = Callable[..., ManagedProcess]


@pytest.fixture(scope="session", autouse=True)
def _database_service() -> None:
    """The engine picked by ECOTONE_TEST_DB must be up (skip locally, fail in CI); SQLite needs nothing."""
    engine = settings.ENGINE
    if engine in ("postgres", "mariadb"):
        require(engine)


def worker_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str | None]:
    """The environment a worker process needs to use this pytest process's test databases."""
    env: dict[str, str | None] = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "ECOTONE_TEST_SUBPROCESS": "1",
        "ECOTONE_TEST_DB": settings.ENGINE,
        "ECOTONE_TEST_RUN_ID": os.environ["ECOTONE_TEST_RUN_ID"],
    }
    env.update(extra or {})
    return env


@pytest.fixture
def worker() -> Iterator[WorkerFactory]:
    """``worker(*args, env=None, ready=True, timeout=30)`` starts ``manage.py consume_channel *args``.

    With ``ready=True`` it waits (up to ``timeout`` s) until the process prints that it consumes — a
    process that exits first fails the test with its output. Every process is stopped at teardown
    (SIGTERM, then SIGKILL after 10 s).
    """
    started: list[ManagedProcess] = []

    def start(
        *args: str, env: Mapping[str, str | None] | None = None, ready: bool = True, timeout: float = 30.0
    ) -> ManagedProcess:
        proc = spawn_manage("consume_channel", *args, env=worker_env(env))
        started.append(proc)
        if ready:

            def consuming() -> bool:
                if READY_MARK in proc.output():
                    return True
                if not proc.is_running():
                    raise AssertionError(f"{proc!r} exited before consuming\n--- output ---\n{proc.output_tail()}")
                return False

            wait_for(consuming, timeout=timeout, message=f"{proc!r} to start consuming")
        return proc

    yield start
    for proc in started:
        proc.stop()


_STATS = re.compile(r"stopped: ((?:\w+=\d+ ?)+)")


def stats_of(output: str) -> dict[str, int]:
    """The counters of the last ``stopped: handled=N duplicates=N …`` line a worker printed."""
    lines = _STATS.findall(output)
    assert lines, f"the worker printed no 'stopped:' line\n--- output ---\n{output[-4000:]}"
    return {key: int(value) for key, value in (pair.split("=") for pair in lines[-1].split())}
