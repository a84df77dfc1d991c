"""Envelopes on the wire, uuid7 ids and message wire names."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from ecotone_django import messages
from ecotone_django.exceptions import DecodeError
from ecotone_django.messages import Envelope, message_name, uuid7


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str


@dataclass(frozen=True)
class Named:
    __message_name__ = "orders.v2.Named"
    order_id: str


@dataclass(frozen=True)
class InheritsAName(Named):
    """``__message_name__`` is not inherited: a subclass is a different message."""


class Outer:
    @dataclass(frozen=True)
    class Nested:
        x: int


class EmptyName:
    __message_name__ = ""


# --- envelope round trip ------------------------------------------------------------------------------------


def test_an_envelope_round_trips_through_json() -> None:
    envelope = Envelope(
        type="orders.PlaceOrder",
        payload={"order_id": "o-1", "lines": [{"sku": "a", "qty": 2}], "note": None, "total": "9.90"},
        headers={"tenant": "big_corp", "correlation_id": "c-1", "attempt": 2, "vip": True},
    )

    body = envelope.encode()
    decoded = Envelope.decode(body)

    assert decoded == envelope
    assert Envelope.decode(body.encode()) == envelope, "bytes are accepted as well as str"
    assert json.loads(body) == {
        "id": envelope.id,
        "type": "orders.PlaceOrder",
        "payload": envelope.payload,
        "headers": dict(envelope.headers),
    }


def test_an_envelope_without_headers_decodes_with_empty_headers() -> None:
    message_id = str(uuid7())
    decoded = Envelope.decode(json.dumps({"id": message_id, "type": "t", "payload": 1}))
    assert (decoded.id, decoded.type, decoded.payload, dict(decoded.headers)) == (message_id, "t", 1, {})


def test_a_new_envelope_gets_a_fresh_uuid7_id() -> None:
    first, second = Envelope("t", None), Envelope("t", None)
    assert first.id != second.id
    assert uuid.UUID(first.id).version == 7


def test_header_access_and_with_headers_keep_the_id() -> None:
    envelope = Envelope("t", {"a": 1}, {"tenant": "x"})
    changed = envelope.with_headers(attempt=3, tenant="y")

    assert changed.id == envelope.id and changed.payload == envelope.payload
    assert dict(changed.headers) == {"tenant": "y", "attempt": 3}
    assert dict(envelope.headers) == {"tenant": "x"}, "the original is unchanged"
    assert envelope.header("tenant") == "x"
    assert envelope.header("missing") is None
    assert envelope.header("missing", "fallback") == "fallback"


# --- decode errors ------------------------------------------------------------------------------------------

VALID_ID = "0190f3a4-1c2b-7def-8abc-0123456789ab"


def _body(**fields: Any) -> str:
    data = {"id": VALID_ID, "type": "orders.PlaceOrder", "payload": {}, "headers": {}}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json at all", None),
        ("{'id': 1}", None),
        (b"\xff\xfe\x00", None),
        ("[1, 2, 3]", "an envelope is a JSON object, got list"),
        ('"just a string"', "an envelope is a JSON object, got str"),
        ("null", "an envelope is a JSON object, got NoneType"),
        (_body(id=...), "envelope lacks id"),
        (_body(type=..., payload=...), "envelope lacks payload, type"),
        (_body(extra=1, more=2), "envelope has unknown keys extra, more"),
        (_body(id="not-a-uuid"), "envelope id 'not-a-uuid' is not a UUID"),
        (_body(id=12), "envelope id 12 is not a UUID"),
        (_body(headers=["tenant"]), "envelope headers must be a JSON object"),
        (_body(headers="tenant=x"), "envelope headers must be a JSON object"),
        (_body(headers=None), "envelope headers must be a JSON object"),
        (_body(type=5), "envelope type must be a non-empty string"),
        (_body(type=""), "envelope type must be a non-empty string"),
        (_body(type=None), "envelope type must be a non-empty string"),
    ],
    ids=[
        "not json",
        "python repr",
        "not utf-8",
        "a list",
        "a string",
        "null",
        "missing id",
        "missing type and payload",
        "unknown keys",
        "non-uuid id",
        "numeric id",
        "headers a list",
        "headers a string",
        "headers null",
        "type an int",
        "type empty",
        "type null",
    ],
)
def test_invalid_bodies_raise_decode_error(body: str | bytes, message: str | None) -> None:
    with pytest.raises(DecodeError) as caught:
        Envelope.decode(body)
    if message is not None:
        assert str(caught.value) == message


def test_a_pickle_body_is_refused() -> None:
    import pickle

    with pytest.raises(DecodeError):
        Envelope.decode(pickle.dumps({"id": VALID_ID, "type": "t", "payload": {}}))


# --- uuid7 --------------------------------------------------------------------------------------------------


def test_uuid7_sets_version_and_variant_bits() -> None:
    for _ in range(200):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert (value.int >> 76) & 0xF == 7
        assert (value.int >> 62) & 0b11 == 0b10


def test_uuid7_carries_the_current_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_uuid7_is_time_ordered_across_a_thousand_ids() -> None:
    ids = [uuid7() for _ in range(1000)]

    prefixes = [value.int >> 80 for value in ids]
    assert prefixes == sorted(prefixes), "the millisecond prefix never goes backwards"
    assert len(set(ids)) == 1000
    # Sorting the text form sorts by time too (what a database index on message_id sees).
    assert [str(v)[:13] for v in ids] == sorted(str(v)[:13] for v in ids)


def test_uuid7_is_strictly_increasing_within_a_millisecond() -> None:
    ids = [uuid7() for _ in range(20_000)]
    assert [v.int for v in ids] == sorted({v.int for v in ids}), "every id is greater than the one before"
    assert [str(v) for v in ids] == sorted(str(v) for v in ids)
    per_millis = Counter(v.int >> 80 for v in ids)
    assert max(per_millis.values()) > 1, "the test made several ids in one millisecond"


def test_uuid7_stays_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first = uuid7()
    monkeypatch.setattr(messages, "_stdlib_uuid7", None)  # the counter method, also on Python >= 3.14
    monkeypatch.setattr(messages, "_last_millis", messages._last_millis)
    monkeypatch.setattr(messages.time, "time_ns", lambda: ((first.int >> 80) - 5_000) * 1_000_000)
    later = [messages.uuid7() for _ in range(100)]
    assert [v.int for v in later] == sorted({v.int for v in later}) and later[0].int > first.int
    assert {v.int >> 80 for v in later} == {first.int >> 80}, "the timestamp never goes back"


def test_uuid7_borrows_the_next_millisecond_when_its_counter_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messages, "_stdlib_uuid7", None)
    monkeypatch.setattr(messages, "_last_millis", messages._last_millis)  # restored after the test
    monkeypatch.setattr(messages.time, "time_ns", lambda: 4_000_000_000_000 * 1_000_000)
    before = messages.uuid7()
    monkeypatch.setattr(messages, "_counter", messages._COUNTER_MAX)
    after = messages.uuid7()
    assert after.int > before.int and after.int >> 80 == (before.int >> 80) + 1
    assert (after.version, after.variant) == (7, uuid.RFC_4122)


def test_uuid7_random_bits_differ_within_one_millisecond() -> None:
    ids = [uuid7() for _ in range(50)]
    by_millis: dict[int, set[int]] = {}
    for value in ids:
        by_millis.setdefault(value.int >> 80, set()).add(value.int & ((1 << 62) - 1))
    assert sum(len(randoms) for randoms in by_millis.values()) == 50


# --- wire names ---------------------------------------------------------------------------------------------


def test_message_name_is_the_dotted_path_by_default() -> None:
    assert message_name(PlaceOrder) == "tests.unit.test_messages.PlaceOrder"
    assert message_name(Outer.Nested) == "tests.unit.test_messages.Outer.Nested"


def test_message_name_uses_an_explicit_message_name() -> None:
    assert message_name(Named) == "orders.v2.Named"


def test_an_explicit_name_is_not_inherited_and_an_empty_one_is_ignored() -> None:
    assert message_name(InheritsAName) == "tests.unit.test_messages.InheritsAName"
    assert message_name(EmptyName) == "tests.unit.test_messages.EmptyName"
