"""``django.tasks`` tasks run by real ``manage.py consume_channel`` processes, on the database channel and on
RabbitMQ, with the tenant databases of the engine under test (PostgreSQL or MariaDB; SQLite too).

A worker killed with SIGKILL in the middle of a task commits nothing: the next worker runs the task again,
and its effects and its result are written once.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from ecotone_django.channels import channels
from ecotone_django.messaging import tasks_api
from ecotone_django.models import InboxEntry, OutboxMessage, TaskRun
from ecotone_django.tenancy import tenant_context
from tests.helpers.processes import wait_for
from tests.helpers.services import require
from tests.integration.broker_fixtures import delete, purge, queue_name, rabbit_url
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, stats_of
from tests.testapp.models import Record

if tasks_api is None:  # pragma: no cover - every supported leg installs django.tasks or the backport
    pytest.skip("needs django.tasks or the django-tasks backport", allow_module_level=True)

from tests.testapp import jobs

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)

TENANTS = {"big_corp": "big_corp", "enterprise_x": "enterprise_x", "free_tier": "default"}
HOST = socket.gethostname()


@pytest.fixture
def rabbit_tasks() -> Iterator[str]:
    """The ``rabbit`` channel's queue, empty, on any database engine (the tasks' rows live in the tenant's)."""
    require("rabbitmq")
    name = queue_name("rabbit")
    purge(rabbit_url(), name)
    yield name
    channels.reset()
    delete(rabbit_url(), name)


def result_of(tenant: str, result_id: str) -> Any:
    with tenant_context(tenant):
        return tasks_api.default_task_backend.get_result(result_id)


def finished(tenant: str, result_id: str) -> Any:
    result = result_of(tenant, result_id)
    return result if result.is_finished else None


def test_tasks_of_every_tenant_run_in_a_worker_and_results_land_in_the_tenants_database(worker: WorkerFactory) -> None:
    ids = {}
    for tenant, alias in TENANTS.items():
        with tenant_context(tenant), transaction.atomic(using=alias):
            ids[tenant] = jobs.record.enqueue(f"t-{tenant}").id
    with tenant_context("big_corp"), pytest.raises(RuntimeError), transaction.atomic(using="big_corp"):
        jobs.record.enqueue("rolled-back")
        raise RuntimeError("abort")

    proc = worker("db", "--no-relay")
    for tenant, alias in TENANTS.items():
        result = wait_for(lambda t=tenant: finished(t, ids[t]), message=f"the task of {tenant}")
        assert result.status == tasks_api.TaskResultStatus.SUCCESSFUL
        assert result.return_value["tenant"] == tenant
        assert result.worker_ids == [f"{HOST}:{proc.pid}"]
        assert list(Record.objects.using(alias).values_list("name", flat=True)) == [f"t-{tenant}"]
        assert TaskRun.objects.using(alias).count() == 1
    assert proc.stop() == 0
    assert stats_of(proc.output())["handled"] == 3


@pytest.mark.rabbitmq
def test_tasks_on_rabbitmq_run_after_commit_and_a_rolled_back_one_never_runs(
    rabbit_tasks: str, worker: WorkerFactory
) -> None:
    proc = worker("rabbit")
    with tenant_context("enterprise_x"):
        with pytest.raises(RuntimeError), transaction.atomic(using="enterprise_x"):
            jobs.record_on_rabbit.enqueue("rolled-back")
            raise RuntimeError("abort")
        with transaction.atomic(using="enterprise_x"):
            first = jobs.record_on_rabbit.enqueue("first")
        second = jobs.record_on_rabbit.enqueue("second")  # autocommit: published at once
    for result_id in (first.id, second.id):
        result = wait_for(lambda r=result_id: finished("enterprise_x", r), message="the task on RabbitMQ")
        assert result.status == tasks_api.TaskResultStatus.SUCCESSFUL, result.errors
    assert proc.stop() == 0
    assert sorted(Record.objects.using("enterprise_x").values_list("name", flat=True)) == ["first", "second"]
    assert not OutboxMessage.objects.using("enterprise_x").exists()


def _kill_mid_task(worker: WorkerFactory, tmp_path: Path, queue: str, worker_args: tuple[str, ...]) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    with tenant_context("enterprise_x"):
        result_id = jobs.slow.using(queue_name=queue).enqueue("K", str(started), str(release)).id

    first = worker(*worker_args)
    wait_for(started.exists, message="the first worker to be inside the task")
    assert first.kill9() == -9
    started.unlink()
    assert not Record.objects.using("enterprise_x").exists()  # the killed attempt rolled back...
    assert result_of("enterprise_x", result_id).status == tasks_api.TaskResultStatus.READY  # ...its result too

    second = worker(*worker_args)
    wait_for(
        lambda: started.exists() and started.read_text() == str(second.pid),
        timeout=60,
        message="the second worker to run the task again",
    )
    release.touch()
    result = wait_for(lambda: finished("enterprise_x", result_id), message="the task to finish")
    assert second.stop() == 0

    assert result.status == tasks_api.TaskResultStatus.SUCCESSFUL and result.return_value == "K"
    assert result.worker_ids == [f"{HOST}:{second.pid}"] and result.errors == []
    assert list(Record.objects.using("enterprise_x").values_list("name", "handler")) == [("K", "slow")]
    assert TaskRun.objects.using("enterprise_x").count() == 1
    assert InboxEntry.objects.using("enterprise_x").count() == 1


def test_a_worker_killed_mid_task_on_the_database_channel(worker: WorkerFactory, tmp_path: Path) -> None:
    _kill_mid_task(worker, tmp_path, "db", ("db", "--no-relay"))


@pytest.mark.rabbitmq
def test_a_worker_killed_mid_task_on_rabbitmq(rabbit_tasks: str, worker: WorkerFactory, tmp_path: Path) -> None:
    _kill_mid_task(worker, tmp_path, "rabbit", ("rabbit",))
