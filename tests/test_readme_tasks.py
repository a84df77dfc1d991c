"""The code blocks of README.md's "django.tasks" section run here: the settings, then the task and the view.

They are fenced as ``py`` (tests/test_readme.py runs the ``python`` blocks of the other sections).
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from ecotone_django.messaging import tasks_api
from ecotone_django.models import TaskRun
from ecotone_django.tenancy import tenant_context
from ecotone_django.worker import Worker

README = Path(__file__).resolve().parent.parent / "README.md"
MODULE = "readme_tasks"

if tasks_api is None or not hasattr(tasks_api, "Task") or tasks_api.__name__ != "django.tasks":
    pytest.skip("the README's example imports django.tasks (Django 6.0+)", allow_module_level=True)


def blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("\n## django.tasks\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```py\n(.*?)```", section, flags=re.S)


@pytest.fixture
def tasks_setting() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(blocks()[0], namespace)
    return namespace["TASKS"]


@pytest.fixture
def example(tasks_setting: dict[str, Any]) -> Iterator[types.ModuleType]:
    channels = {**settings.ECOTONE["CHANNELS"]}
    channels["orders"] = {
        "BACKEND": "ecotone_django.channels.DynamicChannel",
        "OPTIONS": {"header": "tenant", "mapping": {"big_corp": "db_other"}, "default": "db"},
    }
    module = types.ModuleType(MODULE)
    sys.modules[MODULE] = module
    try:
        with override_settings(TASKS=tasks_setting, ECOTONE={**settings.ECOTONE, "CHANNELS": channels}):
            exec(compile(blocks()[1], f"{MODULE}.py", "exec"), module.__dict__)
            yield module
    finally:
        del sys.modules[MODULE]


def test_the_section_has_the_blocks_this_test_runs() -> None:
    assert len(blocks()) == 2 and "TASKS = {" in blocks()[0] and ".enqueue(" in blocks()[1]


def test_the_settings_block_configures_the_outbox_backend(tasks_setting: dict[str, Any]) -> None:
    with override_settings(TASKS=tasks_setting):
        backend = tasks_api.task_backends["default"]
        assert type(backend).__name__ == "OutboxBackend"
        assert backend.channel_of("default") == settings.ECOTONE["DEFAULT_CHANNEL"]
        assert backend.channel_of("orders") == "orders"


@pytest.mark.django_db(databases=["default", "big_corp", "enterprise_x"], transaction=True)
def test_the_view_enqueues_in_the_tenants_transaction_and_a_worker_runs_it(example: types.ModuleType) -> None:
    result_id = example.place_order("o-1")
    assert TaskRun.objects.using("big_corp").filter(pk=result_id).exists()
    Worker(["db_other"], stop_when_empty=True, relay=False).run()
    with tenant_context("big_corp"):
        result = example.send_invoice.get_result(result_id)
    assert result.return_value == "invoice for o-1"
