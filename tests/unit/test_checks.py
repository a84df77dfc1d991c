"""System checks: each ``ecotone.E0xx`` fires on the configuration mistake it names, and a clean setup has none."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import CheckMessage, run_checks
from django.test import override_settings

from ecotone_django import asynchronous, command_handler, deduplicated, delayed, event_handler, query_handler
from ecotone_django.checks import check_ecotone
from ecotone_django.registry import Registry
from ecotone_django.routers import TenantRouter
from ecotone_django.testing import registry_of, use_registry

DB = {"BACKEND": "ecotone_django.channels.DatabaseChannel"}
BASE: dict[str, Any] = {"CHANNELS": {"db": DB}}
TENANCY = {"CONNECTIONS": {"big_corp": "big_corp"}, "TENANT_APPS": ["testapp"]}


@dataclass(frozen=True)
class Pay:
    order_id: str


@dataclass(frozen=True)
class Paid:
    order_id: str


@dataclass(frozen=True)
class Balance:
    account: str


@command_handler
def pay(command: Pay) -> None:
    return None


@command_handler
def pay_again(command: Pay) -> None:
    return None


@query_handler
def balance(query: Balance) -> int:
    return 0


@query_handler
def balance_again(query: Balance) -> int:
    return 0


@event_handler
def on_paid(event: Paid) -> None:
    return None


@asynchronous("db")
@event_handler
def on_paid_later(event: Paid) -> None:
    return None


@asynchronous("nowhere")
@event_handler
def on_paid_nowhere(event: Paid) -> None:
    return None


@delayed(timedelta(minutes=5))
@event_handler
def remind(event: Paid) -> None:
    return None


@asynchronous("db")
@query_handler
def balance_async(query: Balance) -> int:
    return 0


@deduplicated("order_id")
@event_handler
def dedup_sync(event: Paid) -> None:
    return None


@deduplicated("order_id")
@asynchronous("db")
@event_handler
def dedup_async(event: Paid) -> None:
    return None


@pytest.fixture
def registry() -> Iterator[Registry]:
    """An empty registry installed for the test; tests add the handlers they need."""
    empty = Registry()
    with use_registry(empty):
        yield empty


def install(registry: Registry, *objects: Any) -> None:
    for handler in registry_of(*objects):
        registry.add(handler)


def ids(messages: list[CheckMessage]) -> list[str]:
    return sorted(str(m.id) for m in messages)


def only(messages: list[CheckMessage], check_id: str) -> CheckMessage:
    assert ids(messages) == [check_id], [str(m) for m in messages]
    return messages[0]


# --- clean configurations -----------------------------------------------------------------------------------


def test_the_test_suites_own_configuration_is_clean() -> None:
    assert check_ecotone() == []


@override_settings(ECOTONE={**BASE, "DEFAULT_CHANNEL": "db", "TENANCY": TENANCY})
def test_a_clean_configuration_with_every_kind_of_handler_has_no_errors(registry: Registry) -> None:
    install(registry, pay, balance, on_paid, on_paid_later, remind, dedup_async)
    assert check_ecotone() == []


@override_settings(ECOTONE={"CHANELS": {}})
def test_the_checks_are_registered_with_django() -> None:
    # No database named: Django 6.1 then leaves out database-tagged checks, and Django's model checks (which ask
    # the tenant router, whose config is invalid here) touch no connection. tests/unit/test_check_command.py
    # runs the real `manage.py check` and `runserver`.
    assert [m.id for m in run_checks(databases=[]) if str(m.id).startswith("ecotone.")] == ["ecotone.E001"]


# --- E001 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE={"CHANELS": {"db": DB}})
def test_e001_a_typo_in_the_setting_names_the_key_and_the_valid_keys() -> None:
    error = only(check_ecotone(), "ecotone.E001")
    assert "unknown key(s) 'CHANELS'" in error.msg
    assert "valid keys are ADMIN_DATABASES, CELERY_APP, CHANNELS, DEFAULT_CHANNEL" in error.msg
    assert error.hint and "README" in error.hint


@override_settings(ECOTONE={"RETRY": {"MAX_ATTEMPTS": 0}})
def test_e001_a_wrong_type() -> None:
    assert "RETRY.MAX_ATTEMPTS must be an integer >= 1" in only(check_ecotone(), "ecotone.E001").msg


# --- E002 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_e002_two_handlers_for_one_command(registry: Registry) -> None:
    install(registry, pay, pay_again)
    error = only(check_ecotone(), "ecotone.E002")
    assert error.msg == (
        "2 command handlers for tests.unit.test_checks.Pay: "
        "tests.unit.test_checks.pay, tests.unit.test_checks.pay_again"
    )


@override_settings(ECOTONE=BASE)
def test_e002_two_handlers_for_one_query(registry: Registry) -> None:
    install(registry, balance, balance_again)
    assert "2 query handlers for tests.unit.test_checks.Balance" in only(check_ecotone(), "ecotone.E002").msg


@override_settings(ECOTONE=BASE)
def test_many_subscribers_of_one_event_are_fine(registry: Registry) -> None:
    install(registry, on_paid, on_paid_later)
    assert check_ecotone() == []


# --- E003 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE={**BASE, "TENANCY": {"CONNECTIONS": {"big_corp": "big_corp", "gold": "gold_db"}}})
def test_e003_a_tenant_alias_missing_from_databases(registry: Registry) -> None:
    error = only(check_ecotone(), "ecotone.E003")
    assert error.msg == "tenant 'gold' maps to database alias 'gold_db', which is not in DATABASES"
    assert error.hint and "'gold_db'" in error.hint


@override_settings(ECOTONE={**BASE, "TENANCY": {"DEFAULT_CONNECTION": "shared"}})
def test_e003_the_default_connection_missing_from_databases(registry: Registry) -> None:
    assert "DEFAULT_CONNECTION'] is 'shared', not in DATABASES" in only(check_ecotone(), "ecotone.E003").msg


# --- E004 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_e004_a_handler_on_an_unknown_channel(registry: Registry) -> None:
    install(registry, on_paid_nowhere)
    error = only(check_ecotone(), "ecotone.E004")
    assert error.msg == (
        "tests.unit.test_checks.on_paid_nowhere is @asynchronous('nowhere'), but no such channel is configured"
    )
    assert error.hint == "Defined channels: db."


@override_settings(ECOTONE={**BASE, "DEFAULT_CHANNEL": "orders"})
def test_e004_an_unknown_default_channel(registry: Registry) -> None:
    error = only(check_ecotone(), "ecotone.E004")
    assert "DEFAULT_CHANNEL'] is 'orders', which ECOTONE['CHANNELS'] does not define" in error.msg
    assert error.hint == "Defined channels: db."


@override_settings(
    ECOTONE={
        "CHANNELS": {
            "db": DB,
            "orders": {
                "BACKEND": "ecotone_django.channels.DynamicChannel",
                "OPTIONS": {"header": "tenant", "mapping": {"big_corp": "premium"}, "default": "db"},
            },
        }
    }
)
def test_e004_a_dynamic_channel_routing_to_an_unknown_channel(registry: Registry) -> None:
    error = only(check_ecotone(), "ecotone.E004")
    assert error.msg.startswith("channel 'orders' routes to an unknown channel: channel 'premium' is not defined")


# --- E005 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_e005_delayed_without_any_channel(registry: Registry) -> None:
    install(registry, remind)
    error = only(check_ecotone(), "ecotone.E005")
    assert error.msg == "tests.unit.test_checks.remind is @delayed but has no channel to wait on"
    assert error.hint and "ECOTONE['DEFAULT_CHANNEL']" in error.hint


@override_settings(ECOTONE={**BASE, "DEFAULT_CHANNEL": "db"})
def test_delayed_with_a_default_channel_is_fine(registry: Registry) -> None:
    install(registry, remind)
    assert check_ecotone() == []


def test_delayed_on_an_asynchronous_class_is_fine(registry: Registry) -> None:
    @asynchronous("db")
    class Reminders:
        @delayed(60)
        @event_handler
        def remind(self, event: Paid) -> None:
            return None

    with override_settings(ECOTONE=BASE):
        install(registry, Reminders)
        assert check_ecotone() == []


# --- E006 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE={**BASE, "TENANCY": TENANCY}, DATABASE_ROUTERS=[])
def test_e006_tenancy_without_the_router(registry: Registry) -> None:
    error = only(check_ecotone(), "ecotone.E006")
    assert error.hint == "Add 'ecotone_django.routers.TenantRouter' to DATABASE_ROUTERS."


@override_settings(ECOTONE={**BASE, "TENANCY": TENANCY}, DATABASE_ROUTERS=[TenantRouter()])
def test_the_router_given_as_an_instance_counts(registry: Registry) -> None:
    assert check_ecotone() == []


@override_settings(ECOTONE=BASE, DATABASE_ROUTERS=[])
def test_no_router_is_needed_without_tenancy(registry: Registry) -> None:
    assert check_ecotone() == []


# --- E007 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"BACKEND": "ecotone_django.channels.NoSuchChannel"},
            "channel 'bad': cannot import BACKEND 'ecotone_django.channels.NoSuchChannel'",
        ),
        ({"BACKEND": "no_such_package.Channel"}, "cannot import BACKEND 'no_such_package.Channel'"),
        ({"BACKEND": "collections.OrderedDict"}, "channel 'bad': collections.OrderedDict is not a Channel subclass"),
        (
            {"BACKEND": "ecotone_django.channels.DatabaseChannel", "OPTIONS": {"queue": "q"}},
            "channel 'bad' \\(DatabaseChannel\\) has unknown OPTIONS 'queue'; valid options: none",
        ),
        (
            {"BACKEND": "ecotone_django.channels.CeleryChannel", "OPTIONS": {"queue": "q", "prefetch": 4}},
            "has unknown OPTIONS 'prefetch' \\(did you mean 'prefetch_count'\\?\\); "
            "valid options: app, breaker_cool_down, connect_timeout, heartbeat, prefetch_count, publish_timeout, "
            "queue, socket_timeout",
        ),
        (
            {"BACKEND": "ecotone_django.channels.CeleryChannel", "OPTIONS": {"publish_timeout": 0}},
            "CeleryChannel 'bad': OPTIONS\\['publish_timeout'\\] must be a number of seconds above 0, got 0",
        ),
        (
            {"BACKEND": "ecotone_django.channels.DynamicChannel", "OPTIONS": {"default": "db"}},
            "DynamicChannel 'bad' needs exactly one strategy",
        ),
    ],
    ids=[
        "unknown class",
        "unknown module",
        "not a channel",
        "database option",
        "celery option",
        "celery deadline",
        "dynamic strategy",
    ],
)
def test_e007_a_bad_channel_backend_or_options(registry: Registry, spec: dict[str, Any], message: str) -> None:
    with override_settings(ECOTONE={"CHANNELS": {"db": DB, "bad": spec}}):
        error = only(check_ecotone(), "ecotone.E007")
    assert error.msg.startswith("channel 'bad': ")
    assert re.search(message, error.msg), error.msg


@pytest.mark.parametrize(("tenant_header", "channel_header"), [("tenant", "Tenant"), ("Tenant", "tenant")])
def test_e007_a_dynamic_channel_on_the_tenant_header_in_another_case(
    registry: Registry, tenant_header: str, channel_header: str
) -> None:
    options = {"header": channel_header, "mapping": {"big_corp": "db"}, "default": "db"}
    channels = {"db": DB, "orders": {"BACKEND": "ecotone_django.channels.DynamicChannel", "OPTIONS": options}}
    with override_settings(ECOTONE={"CHANNELS": channels, "TENANCY": {**TENANCY, "HEADER": tenant_header}}):
        error = only(check_ecotone(), "ecotone.E007")
    assert error.msg == (
        f"channel 'orders' routes on the header {channel_header!r} (did you mean {tenant_header!r}?); "
        f"the tenant header is {tenant_header!r} and header names are case-sensitive"
    )


def test_a_dynamic_channel_on_another_header_is_fine(registry: Registry) -> None:
    options = {"header": "tenant_plan", "mapping": {"gold": "db"}, "default": "db"}
    channels = {"db": DB, "orders": {"BACKEND": "ecotone_django.channels.DynamicChannel", "OPTIONS": options}}
    with override_settings(ECOTONE={"CHANNELS": channels, "TENANCY": TENANCY}):
        assert check_ecotone() == []


# --- E008 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE={**BASE, "HANDLER_MODULES": ["tests.unit.handlers_broken"]})
def test_e008_a_handler_module_with_a_bad_declaration() -> None:
    error = only(check_ecotone(), "ecotone.E008")
    assert error.msg == "cannot load message handlers: @delayed needs a positive delay, got 0:00:00"


@override_settings(ECOTONE={**BASE, "HANDLER_MODULES": ["tests.unit.handlers_no_kind"]})
def test_e008_a_handler_module_with_a_modifier_but_no_kind() -> None:
    assert "handlers_no_kind.forgot_the_kind has @asynchronous" in only(check_ecotone(), "ecotone.E008").msg


@override_settings(ECOTONE={**BASE, "HANDLER_MODULES": ["tests.unit.no_such_handlers"]})
def test_e008_a_handler_module_that_does_not_exist() -> None:
    error = only(check_ecotone(), "ecotone.E008")
    assert "cannot load message handlers" in error.msg
    assert "tests.unit.no_such_handlers" in error.msg


# --- E009 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_e009_an_asynchronous_query_handler(registry: Registry) -> None:
    install(registry, balance_async)
    error = only(check_ecotone(), "ecotone.E009")
    assert error.msg == (
        "tests.unit.test_checks.balance_async is an asynchronous query handler; queries answer synchronously"
    )


# --- E010 ---------------------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_e010_deduplicated_on_a_synchronous_handler(registry: Registry) -> None:
    install(registry, dedup_sync, dedup_async)
    error = only(check_ecotone(), "ecotone.E010")
    assert error.msg.startswith("tests.unit.test_checks.dedup_sync is @deduplicated but synchronous")
    assert error.hint == "Add @asynchronous('<channel>')."


# --- several at once ----------------------------------------------------------------------------------------


@override_settings(ECOTONE=BASE)
def test_every_mistake_is_reported_not_only_the_first(registry: Registry) -> None:
    install(registry, pay, pay_again, on_paid_nowhere, remind, balance_async, dedup_sync)
    assert ids(check_ecotone()) == [
        "ecotone.E002",
        "ecotone.E004",
        "ecotone.E005",
        "ecotone.E009",
        "ecotone.E010",
    ]
