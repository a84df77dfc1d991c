"""``ecotone_django.task_backends.OutboxBackend``: enqueue in the caller's transaction on the tenant's
database, queues as channels, JSON-only arguments, results, retries and dead letters, signals, async.

The worker runs in this process (``Worker(...).run()`` with ``stop_when_empty``); the real-process tests
are in ``tests/integration/test_task_workers.py``. Runs on Django 6.x (``django.tasks``) and on 5.2 with
the ``django-tasks`` backport.
"""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.db import connections, transaction
from django.test import override_settings

from ecotone_django.clock import clock, now
from ecotone_django.exceptions import MissingTenantError, TenantTransactionError
from ecotone_django.messages import Envelope
from ecotone_django.messaging import WORKER_ID, tasks_api, tasks_signals
from ecotone_django.models import DeadLetter, OutboxMessage, TaskRun
from ecotone_django.replay import replay
from ecotone_django.tenancy import tenant_context
from ecotone_django.worker import Worker
from tests.testapp.models import Record

if tasks_api is None:  # pragma: no cover - every supported leg installs django.tasks or the backport
    pytest.skip("needs django.tasks or the django-tasks backport", allow_module_level=True)

from ecotone_django.task_backends import InvalidTask, OutboxBackend, TaskResultDoesNotExist
from tests.testapp import jobs

ALL = ["default", "big_corp", "enterprise_x"]
pytestmark = pytest.mark.django_db(databases=ALL, transaction=True)
Status = tasks_api.TaskResultStatus


def drain(*channel_names: str) -> None:
    Worker(list(channel_names or ["db"]), stop_when_empty=True, relay=False).run()


def test_the_default_backend_is_ours() -> None:
    assert isinstance(tasks_api.task_backends["default"], OutboxBackend)
    assert OutboxBackend.supports_get_result and OutboxBackend.supports_defer and OutboxBackend.supports_async_task


def test_enqueue_writes_the_task_and_its_result_in_the_tenants_database_and_the_worker_runs_it() -> None:
    with tenant_context("big_corp"):
        result = jobs.record.enqueue("r1")
    assert result.status == Status.READY and result.backend == "default" and result.args == ["r1"]
    assert OutboxMessage.objects.using("big_corp").filter(channel="db").count() == 1
    assert TaskRun.objects.using("big_corp").filter(pk=result.id, tenant="big_corp").exists()
    assert not TaskRun.objects.using("default").exists()

    drain()

    with tenant_context("big_corp"):
        done = jobs.record.get_result(result.id)
    assert done.status == Status.SUCCESSFUL
    assert done.return_value["tenant"] == "big_corp"
    assert done.worker_ids == [WORKER_ID] and done.attempts == 1
    assert done.started_at is not None and done.finished_at is not None and done.errors == []
    assert list(Record.objects.using("big_corp").values_list("name", "tenant")) == [("r1", "big_corp")]
    with tenant_context("enterprise_x"), pytest.raises(TaskResultDoesNotExist):
        jobs.record.get_result(result.id)  # read under the tenant context: not in another tenant's database


def test_a_rolled_back_transaction_leaves_no_task() -> None:
    with tenant_context("enterprise_x"):
        with pytest.raises(RuntimeError), transaction.atomic(using="enterprise_x"):
            result = jobs.record.enqueue("rolled-back")
            assert OutboxMessage.objects.using("enterprise_x").count() == 1
            raise RuntimeError("abort")
        assert not OutboxMessage.objects.using("enterprise_x").exists()
        with pytest.raises(TaskResultDoesNotExist):
            jobs.record.get_result(result.id)
    drain()
    assert not Record.objects.using("enterprise_x").exists()


def test_enqueue_in_a_transaction_on_another_database_is_refused_as_a_send_is() -> None:
    refused = pytest.raises(TenantTransactionError, match=r"'big_corp'.*'default'")
    with tenant_context("big_corp"), refused, transaction.atomic(using="default"):
        jobs.record.enqueue("escaping")
    assert not any(OutboxMessage.objects.using(a).exists() or TaskRun.objects.using(a).exists() for a in ALL)


def test_without_a_tenant_enqueue_raises_the_same_error_as_send() -> None:
    with pytest.raises(MissingTenantError, match="'tenant' header"):
        jobs.add.enqueue(1, 2)
    assert not any(OutboxMessage.objects.using(a).exists() or TaskRun.objects.using(a).exists() for a in ALL)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((now(),), {}), ((), {"key": {1, 2}}), (({1: "a"},), {}), ((float("nan"),), {})],
    ids=["datetime", "set", "int-keys", "nan"],
)
def test_arguments_that_do_not_round_trip_through_json_fail_at_enqueue(args: Any, kwargs: Any) -> None:
    with tenant_context("big_corp"), pytest.raises(TypeError, match="round-trip through JSON"):
        jobs.add.enqueue(*args, **kwargs)
    assert not OutboxMessage.objects.using("big_corp").exists()


def test_tuples_become_lists_as_django_does() -> None:
    with tenant_context("big_corp"):
        result = jobs.add.enqueue(1, b=(2,))
    assert result.kwargs == {"b": [2]}


def test_queues_are_channels_default_is_default_channel_and_others_are_invalid() -> None:
    backend = tasks_api.task_backends["default"]
    assert backend.channel_of("default") == "db"
    assert backend.channel_of("orders") == "orders"
    with pytest.raises(InvalidTask, match="not valid for backend"):
        jobs.add.using(queue_name="db_other")  # a channel, but not in QUEUES
    unchecked = {"default": {"BACKEND": "ecotone_django.task_backends.OutboxBackend", "QUEUES": []}}
    with override_settings(TASKS=unchecked), pytest.raises(InvalidTask, match="names no ECOTONE channel"):
        tasks_api.task_backends["default"].channel_of("nowhere")


def test_a_dynamic_queue_routes_per_tenant() -> None:
    with tenant_context("enterprise_x"):
        jobs.add.using(queue_name="orders").enqueue(1, 1)
    assert list(OutboxMessage.objects.using("enterprise_x").values_list("channel", flat=True)) == ["db"]


def test_run_after_is_held_in_the_database_until_due() -> None:
    later = now() + timedelta(hours=1)
    with tenant_context("big_corp"):
        result = jobs.record.using(run_after=later).enqueue("later")
    assert OutboxMessage.objects.using("big_corp").get().available_at == later
    drain()
    assert not Record.objects.using("big_corp").exists()
    clock.advance(timedelta(hours=1, seconds=1))
    drain()
    with tenant_context("big_corp"):
        assert jobs.record.get_result(result.id).status == Status.SUCCESSFUL


def test_priority_orders_the_claims_of_a_database_channel() -> None:
    with tenant_context("big_corp"):
        for name in ("a", "b"):
            jobs.record.enqueue(name)
        jobs.urgent.using(queue_name="db").enqueue("first")
    drain()
    assert list(Record.objects.using("big_corp").order_by("pk").values_list("name", flat=True)) == ["first", "a", "b"]


def test_a_failing_task_is_retried_with_the_attempt_in_its_context_and_its_failed_writes_undone() -> None:
    with tenant_context("big_corp"):
        result = jobs.flaky.enqueue("f", succeed_on=3)
    drain()
    with tenant_context("big_corp"):
        done = jobs.flaky.get_result(result.id)
    assert done.status == Status.SUCCESSFUL and done.return_value == 3 and done.attempts == 3
    assert [e.exception_class_path for e in done.errors] == ["builtins.ValueError", "builtins.ValueError"]
    assert "attempt 1 fails" in done.errors[0].traceback
    assert list(Record.objects.using("big_corp").values_list("name", flat=True)) == ["f-3"]
    assert not DeadLetter.objects.using("big_corp").exists()


def test_after_the_last_attempt_the_result_is_failed_and_a_replayable_dead_letter_exists() -> None:
    with tenant_context("big_corp"):
        result = jobs.flaky.enqueue("g", succeed_on=4)  # MAX_ATTEMPTS is 3 in the test settings
    drain()
    with tenant_context("big_corp"):
        failed = jobs.flaky.get_result(result.id)
    assert failed.status == Status.FAILED and failed.attempts == 3 and len(failed.errors) == 3
    with pytest.raises(ValueError, match="Task failed"):
        _ = failed.return_value
    letter = DeadLetter.objects.using("big_corp").get()
    assert letter.handler == "ecotone_django.messaging.run_task" and letter.attempts == 3
    assert Envelope.decode(letter.body).payload["result_id"] == result.id

    replay(letter, "big_corp")
    drain()
    with tenant_context("big_corp"):
        done = jobs.flaky.get_result(result.id)
    assert done.status == Status.SUCCESSFUL and done.return_value == 4
    assert list(Record.objects.using("big_corp").values_list("name", flat=True)) == ["g-4"]


def test_a_return_value_that_is_not_json_fails_the_attempt() -> None:
    with tenant_context("big_corp"):
        result = jobs.returns_a_set.enqueue()
    drain()
    with tenant_context("big_corp"):
        failed = jobs.returns_a_set.get_result(result.id)
    assert failed.status == Status.FAILED
    assert failed.errors[-1].exception_class_path == "builtins.TypeError"


def test_signals_are_sent_as_django_sends_them() -> None:
    seen: list[tuple[str, Any, str]] = []

    def receiver(name: str) -> Any:
        def record(sender: Any, task_result: Any, **kwargs: Any) -> None:
            seen.append((name, sender, task_result.status))

        return record

    receivers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
    for name, function in receivers.items():
        getattr(tasks_signals, f"task_{name}").connect(function)
    try:
        with tenant_context("big_corp"):
            jobs.add.enqueue(1, 2)
        drain()
    finally:
        for name, function in receivers.items():
            getattr(tasks_signals, f"task_{name}").disconnect(function)
    assert seen == [
        ("enqueued", OutboxBackend, Status.READY),
        ("started", OutboxBackend, Status.RUNNING),
        ("finished", OutboxBackend, Status.SUCCESSFUL),
    ]


def test_async_enqueue_task_and_result() -> None:
    async def scenario() -> Any:
        try:
            with tenant_context("enterprise_x"):
                result = await jobs.arecord.aenqueue("x")
                await sync_to_async(drain)()
                return await jobs.arecord.aget_result(result.id)
        finally:  # the thread sync_to_async ran on keeps its connections: close them before teardown
            await sync_to_async(connections.close_all)()

    done = asyncio.run(scenario())
    assert done.status == Status.SUCCESSFUL and done.return_value == "X"
    assert list(Record.objects.using("enterprise_x").values_list("name", "handler")) == [("x", "arecord")]


def test_cleanup_deletes_finished_results_past_the_retention_only() -> None:
    with tenant_context("big_corp"):
        old = jobs.add.enqueue(1, 1)
        drain()
        pending = jobs.add.using(run_after=now() + timedelta(days=30)).enqueue(2, 2)
    clock.advance(timedelta(days=8))
    with tenant_context("big_corp"):
        fresh = jobs.add.enqueue(3, 3)
    out = io.StringIO()
    call_command("ecotone_cleanup", "--database", "big_corp", stdout=out)
    assert "Deleted 1 finished task result(s)" in out.getvalue()
    assert set(TaskRun.objects.using("big_corp").values_list("pk", flat=True)) == {pending.id, fresh.id}
    assert old.id not in {pending.id, fresh.id}


def test_a_queue_naming_no_channel_is_a_system_check_error() -> None:
    assert tasks_api.task_backends["default"].check() == []
    broken = {"default": {"BACKEND": "ecotone_django.task_backends.OutboxBackend", "QUEUES": ["default", "nope"]}}
    with override_settings(TASKS=broken):
        errors = tasks_api.task_backends["default"].check()
    assert [e.id for e in errors] == ["ecotone.T001"] and "'nope' names no ECOTONE channel" in errors[0].msg


def test_the_testing_harness_runs_tasks_like_any_message(ecotone: Any) -> None:
    with tenant_context("big_corp"):
        result = jobs.record.using(run_after=now() + timedelta(minutes=5)).enqueue("harnessed")
    assert [m.message.task_path for m in ecotone.recorded_commands] == ["tests.testapp.jobs.record"]
    assert ecotone.run() == 0
    ecotone.advance(timedelta(minutes=6))
    with tenant_context("big_corp"):
        assert jobs.record.get_result(result.id).status == Status.SUCCESSFUL


def test_a_result_carries_the_task_as_enqueued() -> None:
    later = now() + timedelta(minutes=1)
    with tenant_context("big_corp"):
        enqueued = jobs.record.using(run_after=later, priority=7).enqueue("as-enqueued")
        read = jobs.record.get_result(enqueued.id)
    assert read.task.func is jobs.record.func
    assert (read.task.run_after, read.task.priority, read.task.queue_name) == (later, 7, "db")
    assert read.enqueued_at == enqueued.enqueued_at and read.args == ["as-enqueued"]
    with tenant_context("big_corp"), pytest.raises(tasks_api.exceptions.TaskResultMismatch):
        jobs.add.get_result(enqueued.id)


def test_a_broken_ecotone_setting_is_left_to_the_ecotone_checks() -> None:
    with override_settings(ECOTONE={"CHANELS": {}}):
        assert tasks_api.task_backends["default"].check() == []
