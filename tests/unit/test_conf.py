"""The ECOTONE setting: defaults, unknown keys rejected by name at every level, wrong types, retry backoff."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from ecotone_django.conf import (
    RetryConfig,
    TenancyConfig,
    WorkerConfig,
    get_config,
    parse_config,
)
from ecotone_django.exceptions import ConfigurationError

# --- defaults -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, {}])
def test_defaults(raw: Any) -> None:
    config = parse_config(raw)

    assert config.tenancy is None
    assert dict(config.channels) == {}
    assert config.default_channel is None
    assert config.celery_app is None
    assert config.retry == RetryConfig(max_attempts=5, backoff_seconds=1.0, multiplier=2.0, max_backoff_seconds=300.0)
    assert config.handler_modules == ()
    assert config.inbox_retention == timedelta(days=7)
    assert config.max_message_bytes == 1024 * 1024
    assert config.saga_not_found == "drop"
    assert config.worker == WorkerConfig(poll_interval=0.5, batch_size=100, slow_after_failures=10, relay_interval=1.0)
    assert config.database_aliases == ("default",)
    assert config.alias_for("anyone") == "default"
    assert config.alias_for(None) == "default"


def test_tenancy_defaults_and_aliases() -> None:
    config = parse_config({"TENANCY": {"CONNECTIONS": {"big": "db_big", "big2": "db_big", "x": "db_x"}}})

    assert config.tenancy == TenancyConfig(
        header="tenant",
        connections={"big": "db_big", "big2": "db_big", "x": "db_x"},
        default_connection="default",
        tenant_apps=frozenset(),
    )
    assert config.database_aliases == ("default", "db_big", "db_x"), "default first, each alias once"
    assert config.alias_for("big2") == "db_big"
    assert config.alias_for("unknown") == "default"
    assert config.alias_for(None) == "default"


def test_a_full_setting_is_parsed() -> None:
    config = parse_config(
        {
            "TENANCY": {
                "HEADER": "org",
                "CONNECTIONS": {"big_corp": "big_corp"},
                "DEFAULT_CONNECTION": "shared",
                "TENANT_APPS": ["orders", "payments"],
            },
            "CHANNELS": {
                "orders": {"BACKEND": "ecotone_django.channels.DatabaseChannel"},
                "premium": {"BACKEND": "ecotone_django.channels.CeleryChannel", "OPTIONS": {"queue": "q"}},
            },
            "DEFAULT_CHANNEL": "orders",
            "CELERY_APP": "proj.celery.app",
            "RETRY": {"MAX_ATTEMPTS": 3, "BACKOFF_SECONDS": 0.5, "MULTIPLIER": 3, "MAX_BACKOFF_SECONDS": 60},
            "HANDLER_MODULES": ["proj.handlers"],
            "INBOX_RETENTION": 3600,
            "MAX_MESSAGE_BYTES": 2048,
            "SAGA_NOT_FOUND": "raise",
            "WORKER": {"POLL_INTERVAL": 0.1, "BATCH_SIZE": 10, "SLOW_AFTER_FAILURES": 3, "RELAY_INTERVAL": 2},
        }
    )

    assert config.tenancy is not None
    assert (config.tenancy.header, config.tenancy.default_connection) == ("org", "shared")
    assert config.tenancy.tenant_apps == frozenset({"orders", "payments"})
    assert config.database_aliases == ("shared", "big_corp")
    assert config.alias_for("someone") == "shared"
    assert {name: (c.name, c.backend, dict(c.options)) for name, c in config.channels.items()} == {
        "orders": ("orders", "ecotone_django.channels.DatabaseChannel", {}),
        "premium": ("premium", "ecotone_django.channels.CeleryChannel", {"queue": "q"}),
    }
    assert (config.default_channel, config.celery_app) == ("orders", "proj.celery.app")
    assert config.retry == RetryConfig(3, 0.5, 3, 60)
    assert config.handler_modules == ("proj.handlers",)
    assert config.inbox_retention == timedelta(hours=1)
    assert (config.max_message_bytes, config.saga_not_found) == (2048, "raise")
    assert config.worker == WorkerConfig(0.1, 10, 3, 2)


def test_inbox_retention_accepts_a_timedelta() -> None:
    assert parse_config({"INBOX_RETENTION": timedelta(days=2)}).inbox_retention == timedelta(days=2)


# --- unknown keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where", "unknown", "valid"),
    [
        (
            {"CHANELS": {}},
            "ECOTONE",
            "'CHANELS' (did you mean 'CHANNELS'?)",
            "CELERY_APP, CHANNELS, DEFAULT_CHANNEL, HANDLER_MODULES",
        ),
        (
            {"TENANCY": {"HEADERS": "tenant"}},
            'ECOTONE["TENANCY"]',
            "'HEADERS' (did you mean 'HEADER'?)",
            "CONNECTIONS, DEFAULT_CONNECTION, HEADER, REQUEST, TENANT_APPS",
        ),
        (
            {"CHANNELS": {"orders": {"BACKEND": "x.Y", "OPTION": {}}}},
            "ECOTONE[\"CHANNELS\"]['orders']",
            "'OPTION' (did you mean 'OPTIONS'?)",
            "BACKEND, OPTIONS",
        ),
        (
            {"RETRY": {"MAX_ATTEMPT": 3}},
            'ECOTONE["RETRY"]',
            "'MAX_ATTEMPT' (did you mean 'MAX_ATTEMPTS'?)",
            "BACKOFF_SECONDS, JITTER, MAX_ATTEMPTS, MAX_BACKOFF_SECONDS, MULTIPLIER",
        ),
        (
            {"WORKER": {"POLL": 1, "BATCH": 2}},
            'ECOTONE["WORKER"]',
            "'BATCH' (did you mean 'BATCH_SIZE'?), 'POLL'",
            "BATCH_SIZE, CLAIM_LEASE, CLAIM_SIZE, POLL_INTERVAL, RELAY_INTERVAL, SLOW_AFTER_FAILURES",
        ),
    ],
    ids=["top level", "TENANCY", "CHANNELS entry", "RETRY", "WORKER"],
)
def test_unknown_keys_are_rejected_by_name_with_the_valid_keys(raw: Any, where: str, unknown: str, valid: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(raw)
    text = str(caught.value)
    assert text.startswith(f"{where} has unknown key(s) {unknown}; valid keys are ")
    assert valid in text


@pytest.mark.parametrize(
    ("raw", "suggestion"),
    [
        ({"chANNELS": {}}, "'chANNELS' (did you mean 'CHANNELS'?)"),  # another case wins over difflib's closest
        ({"CHANNELS": {}, "XYZZY": 1}, "'XYZZY'; valid keys"),  # nothing close: no suggestion
        ({1: "not a name"}, "unknown key(s) 1; valid keys"),
    ],
    ids=["case only", "nothing close", "not a string"],
)
def test_the_suggestion_for_an_unknown_key(raw: Any, suggestion: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(raw)
    assert suggestion in str(caught.value)


def test_configuration_errors_are_improperly_configured() -> None:
    with pytest.raises(ImproperlyConfigured):
        parse_config({"NOPE": 1})


# --- wrong types --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "ECOTONE must be a dict, got list"),
        ({"TENANCY": "yes"}, 'ECOTONE\\["TENANCY"\\] must be a dict, got str'),
        ({"TENANCY": {"HEADER": ""}}, "HEADER.* must be a non-empty string"),
        ({"TENANCY": {"HEADER": 1}}, "HEADER.* must be a non-empty string"),
        ({"TENANCY": {"CONNECTIONS": ["big_corp"]}}, "CONNECTIONS.* must be a dict, got list"),
        ({"TENANCY": {"CONNECTIONS": {"big_corp": 1}}}, "maps tenant names \\(str\\) to DATABASES aliases \\(str\\)"),
        ({"TENANCY": {"DEFAULT_CONNECTION": None}}, "DEFAULT_CONNECTION.* must be a DATABASES alias"),
        ({"TENANCY": {"TENANT_APPS": "orders"}}, "TENANT_APPS.* must be a list of app labels"),
        ({"TENANCY": {"TENANT_APPS": ["orders", 1]}}, "TENANT_APPS.* must be a list of app labels"),
        ({"CHANNELS": ["orders"]}, 'ECOTONE\\["CHANNELS"\\] must be a dict, got list'),
        ({"CHANNELS": {"orders": "db"}}, "\\['orders'\\] must be a dict, got str"),
        ({"CHANNELS": {"orders": {}}}, "\\['orders'\\] needs a BACKEND \\(a dotted path to a channel class\\)"),
        ({"CHANNELS": {"orders": {"BACKEND": "x.Y", "OPTIONS": []}}}, "\\['OPTIONS'\\] must be a dict, got list"),
        ({"DEFAULT_CHANNEL": 5}, "DEFAULT_CHANNEL.* must be a channel name"),
        ({"CELERY_APP": object()}, "CELERY_APP.* must be a dotted path to a Celery app"),
        ({"HANDLER_MODULES": "proj.handlers"}, "HANDLER_MODULES.* must be a list of dotted module paths"),
        ({"HANDLER_MODULES": [1]}, "HANDLER_MODULES.* must be a list of dotted module paths"),
        ({"SAGA_NOT_FOUND": "ignore"}, "SAGA_NOT_FOUND.* is 'ignore'; choose one of drop, raise"),
        ({"MAX_MESSAGE_BYTES": 0}, "MAX_MESSAGE_BYTES.* must be an integer >= 1, got 0"),
        ({"MAX_MESSAGE_BYTES": 1.5}, "MAX_MESSAGE_BYTES.* must be an integer >= 1, got 1.5"),
        ({"INBOX_RETENTION": "7d"}, "INBOX_RETENTION.* must be a number >= 0, got '7d'"),
        ({"RETRY": "often"}, 'ECOTONE\\["RETRY"\\] must be a dict, got str'),
        ({"RETRY": {"MAX_ATTEMPTS": 0}}, "RETRY.MAX_ATTEMPTS must be an integer >= 1, got 0"),
        ({"RETRY": {"MAX_ATTEMPTS": 2.0}}, "RETRY.MAX_ATTEMPTS must be an integer >= 1, got 2.0"),
        ({"RETRY": {"MAX_ATTEMPTS": True}}, "RETRY.MAX_ATTEMPTS must be an integer >= 1, got True"),
        ({"RETRY": {"BACKOFF_SECONDS": -1}}, "RETRY.BACKOFF_SECONDS must be a number >= 0, got -1"),
        ({"RETRY": {"MULTIPLIER": 0.5}}, "RETRY.MULTIPLIER must be a number >= 1, got 0.5"),
        ({"RETRY": {"MAX_BACKOFF_SECONDS": "300"}}, "RETRY.MAX_BACKOFF_SECONDS must be a number >= 0, got '300'"),
        ({"WORKER": None}, 'ECOTONE\\["WORKER"\\] must be a dict, got NoneType'),
        ({"WORKER": {"POLL_INTERVAL": -0.1}}, "WORKER.POLL_INTERVAL must be a number >= 0, got -0.1"),
        ({"WORKER": {"BATCH_SIZE": 0}}, "WORKER.BATCH_SIZE must be an integer >= 1, got 0"),
        ({"WORKER": {"SLOW_AFTER_FAILURES": "10"}}, "WORKER.SLOW_AFTER_FAILURES must be an integer >= 0"),
        ({"WORKER": {"RELAY_INTERVAL": None}}, "WORKER.RELAY_INTERVAL must be a number >= 0, got None"),
    ],
)
def test_wrong_types_are_rejected(raw: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_config(raw)


# --- retry backoff ------------------------------------------------------------------------------------------


def test_backoff_grows_geometrically_and_is_capped() -> None:
    retry = RetryConfig(max_attempts=10, backoff_seconds=1, multiplier=2, max_backoff_seconds=30)

    assert [retry.backoff(n).total_seconds() for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert retry.backoff(0) == timedelta(seconds=1), "attempt numbers below 1 get the first delay"
    assert retry.backoff(100) == timedelta(seconds=30)


def test_backoff_with_fractional_base_and_constant_multiplier() -> None:
    assert [RetryConfig(backoff_seconds=0.25, multiplier=3).backoff(n) for n in (1, 2, 3)] == [
        timedelta(seconds=0.25),
        timedelta(seconds=0.75),
        timedelta(seconds=2.25),
    ]
    assert {RetryConfig(backoff_seconds=5, multiplier=1).backoff(n) for n in range(1, 6)} == {timedelta(seconds=5)}
    assert RetryConfig(backoff_seconds=0, multiplier=2).backoff(4) == timedelta(0)


def test_default_backoff() -> None:
    retry = parse_config({}).retry
    assert [retry.backoff(n).total_seconds() for n in (1, 2, 9, 10)] == [1, 2, 256, 300]


def test_a_retry_delay_takes_a_random_part_of_up_to_jitter_off_the_backoff() -> None:
    retry = RetryConfig(backoff_seconds=60, multiplier=1, jitter=0.5)
    assert retry.delay(1, rand=lambda: 0.0) == timedelta(seconds=60)
    assert retry.delay(1, rand=lambda: 1.0) == timedelta(seconds=30)
    delays = [retry.delay(1).total_seconds() for _ in range(1000)]
    assert all(30 <= d <= 60 for d in delays)
    assert len(set(delays)) > 990, "one outage's failures must not all come back at the same instant"
    assert max(delays) - min(delays) > 25
    assert parse_config({}).retry.jitter == 0.5
    assert {RetryConfig(backoff_seconds=60, jitter=0).delay(1) for _ in range(50)} == {timedelta(seconds=60)}


@pytest.mark.parametrize("jitter", [-0.1, 1.5, "half", True])
def test_jitter_is_a_fraction(jitter: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"RETRY\.JITTER"):
        parse_config({"RETRY": {"JITTER": jitter}})


# --- get_config ---------------------------------------------------------------------------------------------


def test_get_config_reads_the_setting_and_is_cached() -> None:
    config = get_config()
    assert config is get_config()
    assert config == parse_config(settings.ECOTONE)
    assert config.tenancy is not None and "testapp" in config.tenancy.tenant_apps


def test_get_config_follows_setting_changes() -> None:
    before = get_config()
    with override_settings(ECOTONE={"MAX_MESSAGE_BYTES": 10}):
        assert get_config().max_message_bytes == 10
        assert get_config().tenancy is None
    assert get_config() == before


def test_get_config_raises_for_a_bad_setting() -> None:
    with override_settings(ECOTONE={"RETRY": {"MAX_ATTEMPTS": -1}}), pytest.raises(ConfigurationError):
        get_config()
