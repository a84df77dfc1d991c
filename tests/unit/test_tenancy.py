"""The tenant context (threads, asyncio tasks, exceptions) and the TenantRouter's database choices."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import router
from django.test import override_settings

from ecotone_django.conf import get_config
from ecotone_django.models import OutboxMessage, SagaState
from ecotone_django.routers import TenantRouter
from ecotone_django.tenancy import alias_for, current_alias, current_tenant, tenant_context
from tests.testapp.models import Record

ALIASES = ["default", "big_corp", "enterprise_x"]

# --- the context --------------------------------------------------------------------------------------------


def test_tenant_context_sets_and_restores_nested_values() -> None:
    assert current_tenant() is None
    with tenant_context("big_corp") as tenant:
        assert tenant == "big_corp"
        assert current_tenant() == "big_corp"
        with tenant_context("enterprise_x"):
            assert current_tenant() == "enterprise_x"
            with tenant_context(None):
                assert current_tenant() is None
            assert current_tenant() == "enterprise_x"
        assert current_tenant() == "big_corp"
    assert current_tenant() is None


def test_tenant_context_resets_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), tenant_context("big_corp"), tenant_context("enterprise_x"):
        raise RuntimeError("boom")
    assert current_tenant() is None

    with tenant_context("outer"):
        with pytest.raises(KeyError), tenant_context("inner"):
            raise KeyError("x")
        assert current_tenant() == "outer"


def test_a_thread_started_inside_a_context_does_not_inherit_the_tenant() -> None:
    seen: dict[str, str | None] = {}

    def work() -> None:
        seen["before"] = current_tenant()
        with tenant_context("thread_tenant"):
            seen["inside"] = current_tenant()

    with tenant_context("big_corp"):
        thread = threading.Thread(target=work)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert current_tenant() == "big_corp", "the thread's own context does not leak back"

    assert seen == {"before": None, "inside": "thread_tenant"}


def test_concurrent_asyncio_tasks_never_see_each_others_tenant() -> None:
    async def scenario() -> dict[str, list[str | None]]:
        both_set = asyncio.Barrier(2)
        reads: dict[str, list[str | None]] = {}

        async def task(tenant: str) -> None:
            with tenant_context(tenant):
                await both_set.wait()  # the other task has set its tenant by now
                observed = []
                for _ in range(20):
                    await asyncio.sleep(0)  # hand control to the other task between reads
                    observed.append(current_tenant())
                reads[tenant] = observed

        with tenant_context("parent"):
            await asyncio.gather(task("big_corp"), task("enterprise_x"))
            reads["parent"] = [current_tenant()]
        return reads

    reads = asyncio.run(scenario())

    assert reads == {"big_corp": ["big_corp"] * 20, "enterprise_x": ["enterprise_x"] * 20, "parent": ["parent"]}
    assert current_tenant() is None


def test_a_task_created_in_a_context_starts_with_a_copy_of_it() -> None:
    async def scenario() -> tuple[str | None, str | None]:
        async def child() -> str | None:
            inherited = current_tenant()
            with tenant_context("child_only"):
                await asyncio.sleep(0)
            return inherited

        with tenant_context("big_corp"):
            inherited = await asyncio.create_task(child())
            return inherited, current_tenant()

    assert asyncio.run(scenario()) == ("big_corp", "big_corp")


# --- aliases ------------------------------------------------------------------------------------------------


def test_alias_for_mapped_unknown_and_missing_tenants() -> None:
    assert alias_for("big_corp") == "big_corp"
    assert alias_for("enterprise_x") == "enterprise_x"
    assert alias_for("small_shop") == "default"
    assert alias_for("") == "default"
    assert alias_for(None) == "default"


def test_current_alias_follows_the_context() -> None:
    assert current_alias() == "default"
    with tenant_context("enterprise_x"):
        assert current_alias() == "enterprise_x"
    with tenant_context("nobody"):
        assert current_alias() == "default"


@override_settings(ECOTONE={"TENANCY": {"CONNECTIONS": {"big_corp": "big_corp"}, "DEFAULT_CONNECTION": "enterprise_x"}})
def test_unknown_tenants_use_the_configured_default_connection() -> None:
    assert alias_for("small_shop") == "enterprise_x"
    assert alias_for(None) == "enterprise_x"
    assert alias_for("big_corp") == "big_corp"


def tenant_header() -> str | None:
    """The header that carries the tenant, or ``None`` when tenancy is not configured."""
    tenancy = get_config().tenancy
    return tenancy.header if tenancy else None


@override_settings(ECOTONE={})
def test_without_tenancy_everything_is_default() -> None:
    assert alias_for("big_corp") == "default"
    assert tenant_header() is None


def test_tenant_header() -> None:
    assert tenant_header() == "tenant"
    with override_settings(ECOTONE={"TENANCY": {"HEADER": "org"}}):
        assert tenant_header() == "org"


# --- the router ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "alias"),
    [(None, "default"), ("big_corp", "big_corp"), ("enterprise_x", "enterprise_x"), ("small_shop", "default")],
)
def test_tenant_apps_read_and_write_on_the_tenants_database(tenant: str | None, alias: str) -> None:
    with tenant_context(tenant):
        assert router.db_for_read(Record) == alias
        assert router.db_for_write(Record) == alias
        # Shared apps stay on default whatever the tenant.
        assert router.db_for_read(User) == "default"
        assert router.db_for_write(ContentType) == "default"
        # ecotone_django's own tables are addressed explicitly with .using(alias), never by the context.
        assert TenantRouter().db_for_write(OutboxMessage) is None


def test_the_router_leaves_non_tenant_apps_to_other_routers() -> None:
    with tenant_context("big_corp"):
        assert TenantRouter().db_for_read(User) is None
        assert TenantRouter().db_for_write(SagaState) is None


@pytest.mark.parametrize("db", ALIASES)
@pytest.mark.parametrize(
    ("app_label", "everywhere"),
    [
        ("ecotone_django", True),
        ("testapp", True),
        ("auth", False),
        ("contenttypes", False),
        ("admin", False),
        ("sessions", False),
    ],
)
def test_allow_migrate_matrix(db: str, app_label: str, everywhere: bool) -> None:
    expected = everywhere or db == "default"
    assert router.allow_migrate(db, app_label) is expected
    assert router.allow_migrate(db, app_label, model_name="anything") is expected


@override_settings(ECOTONE={})
def test_without_tenancy_the_router_has_no_opinion() -> None:
    tenant_router = TenantRouter()
    assert tenant_router.db_for_read(Record) is None
    for db in ALIASES:
        assert tenant_router.allow_migrate(db, "auth") is None
        assert tenant_router.allow_migrate(db, "testapp") is None


def test_allow_relation_only_within_one_database() -> None:
    tenant_router = TenantRouter()
    a, b, unsaved = Record(name="a"), Record(name="b"), Record(name="c")
    a._state.db, b._state.db = "big_corp", "big_corp"
    assert tenant_router.allow_relation(a, b) is True
    b._state.db = "enterprise_x"
    assert tenant_router.allow_relation(a, b) is False
    assert tenant_router.allow_relation(a, unsaved) is None
