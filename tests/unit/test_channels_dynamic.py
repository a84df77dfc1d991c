"""DynamicChannel: header mapping, round robin, weighted and custom routing; consumed targets; configuration errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from ecotone_django.channels import channels
from ecotone_django.channels.dynamic import DynamicChannel
from ecotone_django.exceptions import ConfigurationError, UnknownChannelError
from ecotone_django.messages import Envelope, uuid7

DYNAMIC = "ecotone_django.channels.DynamicChannel"
DB = {"BACKEND": "ecotone_django.channels.DatabaseChannel"}


def dynamic(**options: Any) -> dict[str, Any]:
    return {"BACKEND": DYNAMIC, "OPTIONS": options}


SETTING = {
    "CHANNELS": {
        "shared": DB,
        "premium": DB,
        "a": DB,
        "b": DB,
        "c": DB,
        "fast": DB,
        "slow": DB,
        "by_tenant": dynamic(
            header="tenant", mapping={"big_corp": "premium", "enterprise_x": "premium"}, default="shared"
        ),
        "rr": dynamic(round_robin=["a", "b", "c"]),
        "weighted": dynamic(weighted={"a": 3, "b": 1}),
        "custom": dynamic(resolver="tests.unit.handlers_app.by_priority", consume=["fast", "slow"]),
        "custom_unlisted": dynamic(resolver="tests.unit.handlers_app.by_priority"),
        "nested": dynamic(header="region", mapping={"eu": "by_tenant"}, default="rr"),
    }
}


@pytest.fixture(autouse=True)
def _channels() -> Iterator[None]:
    with override_settings(ECOTONE=SETTING):
        yield


def envelope(**headers: Any) -> Envelope:
    return Envelope(type="orders.PlaceOrder", payload={}, headers=headers)


# --- header mapping -----------------------------------------------------------------------------------------


def test_header_mapping_routes_mapped_values_and_defaults_the_rest() -> None:
    channel = channels["by_tenant"]

    assert isinstance(channel, DynamicChannel) and channel.is_dynamic and not channel.is_broker
    assert channel.resolve(envelope(tenant="big_corp")) == "premium"
    assert channel.resolve(envelope(tenant="enterprise_x")) == "premium"
    assert channel.resolve(envelope(tenant="small_shop")) == "shared"
    assert channel.resolve(envelope()) == "shared", "a message without the header takes the default"
    assert channel.targets() == ["premium", "shared"]


def test_header_values_are_compared_as_text() -> None:
    channel = DynamicChannel("by_level", {"header": "level", "mapping": {"1": "fast"}, "default": "slow"})
    assert channel.resolve(envelope(level=1)) == "fast"
    assert channel.resolve(envelope(level="1")) == "fast"
    assert channel.resolve(envelope(level=2)) == "slow"


def test_dynamic_channels_compose() -> None:
    channel = channels["nested"]
    assert channel.resolve(envelope(region="eu", tenant="big_corp")) == "premium"
    assert channel.resolve(envelope(region="eu", tenant="x")) == "shared"
    assert [channel.resolve(envelope(region="us")) for _ in range(3)] == ["a", "b", "c"]
    assert channel.targets() == ["by_tenant", "rr"]
    assert channels.concrete("nested") == ["premium", "shared", "a", "b", "c"]


# --- round robin --------------------------------------------------------------------------------------------


def test_round_robin_cycles_through_its_channels() -> None:
    channel = channels["rr"]
    same = envelope(tenant="big_corp")
    assert [channel.resolve(same) for _ in range(7)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert channel.targets() == ["a", "b", "c"]


def test_round_robin_targets_are_listed_once() -> None:
    channel = DynamicChannel("rr2", {"round_robin": ["a", "b", "a"]})
    assert channel.targets() == ["a", "b"]
    assert [channel.resolve(envelope()) for _ in range(4)] == ["a", "b", "a", "a"]


# --- weighted -----------------------------------------------------------------------------------------------


def test_weighted_is_deterministic_per_message_id() -> None:
    channel = channels["weighted"]
    for _ in range(50):
        message = envelope()
        first = channel.resolve(message)
        assert {channel.resolve(message) for _ in range(5)} == {first}
        assert channel.resolve(message.with_headers(attempt=3)) == first, "a retry of the message lands alike"


def test_weighted_is_roughly_proportional_over_ten_thousand_ids() -> None:
    channel = channels["weighted"]
    counts = Counter(channel.resolve(Envelope("t", {}, {}, id=str(uuid7()))) for _ in range(10_000))

    assert set(counts) == {"a", "b"}
    assert 7_200 <= counts["a"] <= 7_800, counts  # expected 7,500; sd ≈ 43
    assert channel.targets() == ["a", "b"]


# --- custom resolver ----------------------------------------------------------------------------------------


def test_a_custom_resolver_is_imported_from_its_dotted_path() -> None:
    channel = channels["custom"]
    assert channel.resolve(envelope(priority="high")) == "fast"
    assert channel.resolve(envelope(priority="low")) == "slow"
    assert channel.resolve(envelope()) == "slow"
    assert channel.targets() == ["fast", "slow"]


def test_a_custom_resolver_needs_consume_to_list_its_targets() -> None:
    channel = channels["custom_unlisted"]
    assert channel.resolve(envelope(priority="high")) == "fast", "routing works without consume"
    with pytest.raises(
        ConfigurationError, match=r"'custom_unlisted' uses a custom resolver; list .* OPTIONS\['consume'\]"
    ):
        channel.targets()


def test_an_unimportable_resolver_is_a_configuration_error() -> None:
    channel = DynamicChannel("broken", {"resolver": "tests.unit.handlers_app.no_such_resolver", "consume": ["a"]})
    with pytest.raises(
        ConfigurationError, match=r"cannot import resolver 'tests\.unit\.handlers_app\.no_such_resolver'"
    ):
        channel.resolve(envelope())


def test_consume_narrows_what_a_consumer_consumes() -> None:
    channel = DynamicChannel(
        "narrow", {"header": "tenant", "mapping": {"big_corp": "premium"}, "default": "shared", "consume": ["premium"]}
    )
    assert channel.targets() == ["premium"]
    assert channel.resolve(envelope(tenant="small")) == "shared", "consume does not change routing"


def test_a_target_that_is_not_configured_is_an_error_at_resolve_time() -> None:
    channel = DynamicChannel("lost", {"header": "tenant", "mapping": {}, "default": "nowhere"})
    with pytest.raises(UnknownChannelError, match="channel 'nowhere' is not defined"):
        channel.resolve(envelope())


# --- configuration errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"needs exactly one strategy of header \(\+mapping/default\), round_robin, weighted, resolver; got none"),
        ({"default": "shared"}, "needs exactly one strategy .*; got none"),
        ({"header": "tenant", "round_robin": ["a"]}, r"needs exactly one strategy .*; got \['header', 'round_robin'\]"),
        ({"weighted": {"a": 1}, "resolver": "x.y"}, r"got \['weighted', 'resolver'\]"),
        ({"header": "tenant", "mapping": {"big_corp": "premium"}}, "a header strategy needs a 'default' channel"),
        ({"round_robin": []}, "round_robin needs at least one channel"),
        ({"weighted": {}}, "weighted needs positive integer weights"),
        ({"weighted": {"a": 2, "b": 0}}, "weighted needs positive integer weights"),
        (
            {"header": "tenant", "default": "shared", "mapping_": {}},
            r"has unknown OPTIONS 'mapping_' \(did you mean 'mapping'\?\); valid options: ",
        ),
    ],
    ids=[
        "no strategy",
        "only a default",
        "header and round robin",
        "weighted and resolver",
        "header without default",
        "empty round robin",
        "no weights",
        "zero weight",
        "unknown option",
    ],
)
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        DynamicChannel("dyn", options)


def test_unknown_option_error_lists_the_valid_options() -> None:
    with pytest.raises(ConfigurationError) as caught:
        DynamicChannel("dyn", {"round_robin": ["a"], "fallback": "b"})
    assert "valid options: consume, default, header, mapping, resolver, round_robin, weighted" in str(caught.value)
