"""Tests for ecotone_django.serialization: round trips, conversion errors and JSON edge cases."""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Literal, NewType
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecotone_django.exceptions import ConversionError, DecodeError
from ecotone_django.serialization import dumps, from_primitive, loads, to_primitive


class Currency(enum.StrEnum):
    EUR = "EUR"
    USD = "USD"
    JPY = "JPY"


class Priority(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: Currency


@dataclass(frozen=True)
class Line:
    sku: str
    qty: int
    price: Money
    tags: list[str]


@dataclass(frozen=True)
class Order:
    id: UUID
    placed_at: datetime
    day: date
    lines: list[Line]
    note: str | None
    meta: dict[str, int]
    flags: frozenset[str]
    pair: tuple[int, str]


@dataclass(frozen=True)
class Node:
    name: str
    children: list[Node] = field(default_factory=list)


@dataclass
class Invoice:
    number: str
    lines: tuple[Money, ...] = ()
    status: Literal["draft", "sent"] = "draft"
    priority: Priority = Priority.LOW
    total: Decimal = field(init=False)

    def __post_init__(self) -> None:
        self.total = sum((line.amount for line in self.lines), Decimal(0))


Sku = NewType("Sku", str)


@dataclass(frozen=True)
class Misc:
    sku: Sku
    weight: Annotated[float, "kg"]
    code: int | str
    by_priority: dict[Priority, str]
    by_currency: dict[Currency, int]
    counts: dict[int, str]
    anything: Any
    numbers: set[int]
    rest: tuple[int, ...]


@dataclass(frozen=True)
class Broken:
    thing: DoesNotExist  # type: ignore[name-defined]  # noqa: F821


# --- strategies -------------------------------------------------------------------------------

# Whole-second offsets: Python 3.11 fromisoformat drops an offset's microseconds (none exist in practice).
_offsets = st.integers(-86_399, 86_399).map(lambda seconds: timezone(timedelta(seconds=seconds)))
fixed_zones = st.one_of(st.just(UTC), _offsets)
datetimes = st.one_of(st.datetimes(), st.datetimes(timezones=fixed_zones))
decimals = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False),
    st.builds(
        lambda sign, digits, exponent: Decimal((sign, tuple(digits), exponent)),
        st.integers(0, 1),
        st.lists(st.integers(0, 9), min_size=1, max_size=40),
        st.integers(-(10**6), 10**6),
    ),
)
money = st.builds(Money, amount=decimals, currency=st.sampled_from(Currency))
lines = st.builds(Line, sku=st.text(), qty=st.integers(), price=money, tags=st.lists(st.text(), max_size=3))
orders = st.builds(
    Order,
    id=st.uuids(),
    placed_at=datetimes,
    day=st.dates(),
    lines=st.lists(lines, max_size=4),
    note=st.none() | st.text(),
    meta=st.dictionaries(st.text(), st.integers(), max_size=4),
    flags=st.frozensets(st.text(), max_size=4),
    pair=st.tuples(st.integers(), st.text()),
)


def round_trip(tp: Any, value: object) -> Any:
    return from_primitive(tp, loads(dumps(to_primitive(value)).encode("utf-8")))


# --- round trips ------------------------------------------------------------------------------


@settings(deadline=None)
@given(orders)
def test_order_round_trip(order: Order) -> None:
    assert from_primitive(Order, loads(dumps(to_primitive(order)))) == order
    assert round_trip(Order, order) == order


@settings(deadline=None)
@given(decimals)
def test_decimal_round_trip_is_exact(value: Decimal) -> None:
    assert round_trip(Decimal, value).as_tuple() == value.as_tuple()


@pytest.mark.parametrize("text", ["12.30", "1E+2", "-0", "-0.000", "1E-999999", "-123456789012345678901234.5"])
def test_decimal_keeps_its_representation(text: str) -> None:
    assert to_primitive(Decimal(text)) == text
    assert str(from_primitive(Decimal, text)) == text


@settings(deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_zoned_datetime_keeps_wall_time_and_offset(value: datetime) -> None:
    # Zone names are not part of ISO 8601: the result has a fixed offset, the same instant.
    result = round_trip(datetime, value)
    assert result.utcoffset() == value.utcoffset()
    assert result.replace(tzinfo=None) == value.replace(tzinfo=None)


def test_to_primitive_shape() -> None:
    order = Order(
        id=UUID("12345678-1234-5678-1234-567812345678"),
        placed_at=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        day=date(2024, 5, 1),
        lines=[Line("A-1", 2, Money(Decimal("12.30"), Currency.EUR), ["x"])],
        note=None,
        meta={"a": 1},
        flags=frozenset({"b", "a"}),
        pair=(1, "één"),
    )
    assert to_primitive(order) == {
        "id": "12345678-1234-5678-1234-567812345678",
        "placed_at": "2024-05-01T12:30:00+02:00",
        "day": "2024-05-01",
        "lines": [{"sku": "A-1", "qty": 2, "price": {"amount": "12.30", "currency": "EUR"}, "tags": ["x"]}],
        "note": None,
        "meta": {"a": 1},
        "flags": ["a", "b"],
        "pair": [1, "één"],
    }
    assert dumps({"pair": [1, "één"]}) == '{"pair":[1,"één"]}'


def test_defaults_init_false_literal_and_int_enum() -> None:
    assert from_primitive(Invoice, {"number": "A1"}) == Invoice("A1")
    invoice = Invoice("A2", (Money(Decimal("1.5"), Currency.USD), Money(Decimal(2), Currency.USD)), "sent")
    data = to_primitive(invoice)
    assert data["total"] == "3.5"
    assert data["priority"] == 1
    result = from_primitive(Invoice, data)
    assert result == invoice
    assert result.total == Decimal("3.5")


def test_forward_references_and_recursion() -> None:
    tree = Node("root", [Node("a"), Node("b", [Node("c")])])
    assert round_trip(Node, tree) == tree


def test_misc_types_round_trip() -> None:
    misc = Misc(
        sku=Sku("S-1"),
        weight=1.5,
        code="X",
        by_priority={Priority.HIGH: "h"},
        by_currency={Currency.JPY: 3},
        counts={-4: "minus four", 10: "ten"},
        anything={"free": [1, "form"]},
        numbers={3, 1, 2},
        rest=(1, 2, 3),
    )
    data = to_primitive(misc)
    assert data["by_priority"] == {"2": "h"}
    assert data["counts"] == {"-4": "minus four", "10": "ten"}
    assert data["numbers"] == [1, 2, 3]
    assert round_trip(Misc, misc) == misc


def test_scalar_rules() -> None:
    assert from_primitive(float, 2) == 2.0
    assert type(from_primitive(float, 2)) is float
    assert from_primitive(int, 3.0) == 3
    assert from_primitive(Decimal, 7) == Decimal(7)
    assert from_primitive(int | str, "5") == "5"
    assert from_primitive(int | str, 5) == 5
    assert from_primitive(int | Decimal, "1.5") == Decimal("1.5")
    assert from_primitive(typing.Optional[int], None) is None  # noqa: UP045
    assert from_primitive(typing.Union[int, None], 4) == 4  # noqa: UP007
    assert from_primitive(Literal["a", 1], 1) == 1
    assert from_primitive(Literal[Currency.EUR], "EUR") is Currency.EUR
    assert from_primitive(Priority, 2) is Priority.HIGH
    assert from_primitive(datetime, "2024-05-01T10:00:00Z") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert from_primitive(tuple[int, ...], []) == ()
    assert from_primitive(set[str], ["a", "a"]) == {"a"}
    assert from_primitive(Any, {"x": [1]}) == {"x": [1]}
    assert from_primitive(list, [1, "a"]) == [1, "a"]


# --- conversion errors ------------------------------------------------------------------------


def order_data() -> dict[str, Any]:
    line = Line("A-1", 2, Money(Decimal("12.30"), Currency.EUR), ["x"])
    order = Order(
        UUID(int=1),
        datetime(2024, 5, 1, tzinfo=UTC),
        date(2024, 5, 1),
        [line, line],
        None,
        {},
        frozenset(),
        (1, "a"),
    )
    data: dict[str, Any] = to_primitive(order)
    return data


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def _delete(*path: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return change


@pytest.mark.parametrize(
    ("change", "field_path", "reason"),
    [
        (_delete("day"), "day", "missing required field"),
        (_delete("lines", 1, "sku"), "lines[1].sku", "missing required field"),
        (_set(("lines", 1, "qty"), "x"), "lines[1].qty", "expected int, got str 'x'"),
        (_set(("lines", 0, "price", "extra"), 1), "lines[0].price.extra", "unknown field"),
        (_set(("surplus",), 1), "surplus", "unknown field"),
        (_set(("lines", 0, "qty"), True), "lines[0].qty", "expected int, got bool"),
        (_set(("lines", 0, "qty"), 1.5), "lines[0].qty", "expected int, got float"),
        (_set(("lines", 0, "price", "amount"), 12.3), "lines[0].price.amount", "inexact"),
        (_set(("lines", 0, "price", "amount"), "twelve"), "lines[0].price.amount", "decimal number"),
        (_set(("lines", 0, "price", "amount"), "NaN"), "lines[0].price.amount", "finite"),
        (_set(("lines", 0, "price", "currency"), "XYZ"), "lines[0].price.currency", "not a valid Currency"),
        (_set(("placed_at",), "2024-13-01T00:00"), "placed_at", "expected datetime string"),
        (_set(("day",), 20240501), "day", "expected date string"),
        (_set(("id",), "not-a-uuid"), "id", "expected UUID string"),
        (_set(("meta",), {"a": "1"}), "meta['a']", "expected int, got str"),
        (_set(("pair",), [1, "a", 2]), "pair", "expected 2 items, got 3"),
        (_set(("pair",), [1, 2]), "pair[1]", "expected str, got int"),
        (_set(("lines", 1), []), "lines[1]", "expected object for Line"),
        (_set(("flags",), "ab"), "flags", "expected array"),
        (_set(("note",), 5), "note", "expected str, got int"),
    ],
)
def test_from_primitive_errors_name_type_and_field(change: Any, field_path: str, reason: str) -> None:
    data = order_data()
    change(data)
    with pytest.raises(ConversionError) as info:
        from_primitive(Order, data)
    assert info.value.type_name == "Order"
    assert info.value.field == field_path
    assert reason in info.value.reason
    assert "Order" in str(info.value)
    assert repr(field_path) in str(info.value)


@pytest.mark.parametrize(
    ("tp", "data", "field_path", "reason"),
    [
        (bool, 1, "", "expected bool, got int"),
        (Priority, True, "", "not a valid Priority"),
        (dict[str, int], {1: 2}, "[1]", "dict key int 1 is not a str"),
        (dict[int, str], {"01": "x"}, "['01']", "not an integer"),
        (dict[Currency, str], {"GBP": "x"}, "['GBP']", "not a valid Currency"),
        (int | Decimal, [], "", "matches none of"),
        (Literal["a", "b"], "c", "", "is not one of"),
        (None, 0, "", "expected null"),
        (set[list[int]], [[1]], "", "not hashable"),
        (list[object], {}, "", "expected array"),
        (complex, "1j", "", "unsupported type complex"),
        (Broken, {"thing": 1}, "", "cannot resolve type hints of Broken"),
        (Invoice, {"number": "A", "status": "void"}, "status", "is not one of"),
    ],
)
def test_from_primitive_errors(tp: Any, data: Any, field_path: str, reason: str) -> None:
    with pytest.raises(ConversionError) as info:
        from_primitive(tp, data)
    assert info.value.field == field_path
    assert reason in info.value.reason


def test_to_primitive_rejects_unsupported_values_with_their_path() -> None:
    line = Line("A", 1, Money(Decimal(1), Currency.EUR), ["ok", object()])  # type: ignore[list-item]
    order = Order(UUID(int=1), datetime(2024, 1, 1), date(2024, 1, 1), [line], None, {}, frozenset(), (1, ""))
    with pytest.raises(ConversionError) as info:
        to_primitive(order)
    assert (info.value.type_name, info.value.field) == ("Order", "lines[0].tags[1]")
    assert "unsupported type object" in str(info.value)
    assert "Order" in str(info.value) and "'lines[0].tags[1]'" in str(info.value)

    with pytest.raises(ConversionError, match="cannot convert object: unsupported type object"):
        to_primitive(object())


@pytest.mark.parametrize(
    ("value", "field_path", "reason"),
    [
        ({"meta": {1.5: 1}}, "['meta']", "dict key float 1.5 is not a str, int or Enum"),
        ({"meta": {True: 1}}, "['meta']", "dict key bool True"),
        ({"x": [float("nan")]}, "['x'][0]", "not a finite number"),
        ({"x": Decimal("Infinity")}, "['x']", "not a finite number"),
    ],
)
def test_to_primitive_errors(value: Any, field_path: str, reason: str) -> None:
    with pytest.raises(ConversionError) as info:
        to_primitive(value)
    assert info.value.type_name == "dict"
    assert info.value.field == field_path
    assert reason in info.value.reason


# --- JSON text --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), {"x": float("inf")}, [float("-inf")], {"x": object()}])
def test_dumps_rejects_non_json_values(value: Any) -> None:
    with pytest.raises(ConversionError):
        dumps(value)


@pytest.mark.parametrize(
    "text",
    ["NaN", '{"x": Infinity}', "[-Infinity]", "{", "", b"\xff\xfe", b'"\xc3"', "[" * 100_000, "[1] x"],
)
def test_loads_rejects_invalid_json(text: str | bytes) -> None:
    with pytest.raises(DecodeError):
        loads(text)


def test_loads_accepts_str_and_utf8_bytes() -> None:
    assert loads('{"a":"é"}') == {"a": "é"}
    assert loads('{"a":"é"}'.encode()) == {"a": "é"}
    assert loads(bytearray(b"[1.5,null,true]")) == [1.5, None, True]


# --- pydantic (optional) ----------------------------------------------------------------------


def test_pydantic_models() -> None:
    pytest.importorskip("pydantic")
    from pydantic import BaseModel

    class Item(BaseModel):
        sku: str
        qty: int
        price: Decimal

    class Cart(BaseModel):
        placed_at: datetime
        items: list[Item]

    cart = Cart(placed_at=datetime(2024, 5, 1, tzinfo=UTC), items=[Item(sku="A", qty=1, price=Decimal("1.10"))])
    data = to_primitive({"cart": cart})
    assert data["cart"]["items"][0] == {"sku": "A", "qty": 1, "price": "1.10"}
    assert round_trip(Cart, cart) == cart

    data["cart"]["items"][0]["qty"] = "many"
    with pytest.raises(ConversionError) as info:
        from_primitive(Cart, data["cart"])
    assert (info.value.type_name, info.value.field) == ("test_pydantic_models.<locals>.Cart", "items[0].qty")

    with pytest.raises(ConversionError) as info:
        from_primitive(list[Item], [{"sku": "A", "qty": 1, "price": "1"}, {"sku": "B", "price": "1"}])
    assert info.value.field == "[1].qty"
    assert "required" in info.value.reason.lower()


@dataclass(frozen=True)
class Flat:
    """Every field a JSON scalar: what most messages are, and what from_primitive takes without a field walk."""

    name: str
    count: int
    ratio: float
    ready: bool

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "a", "count": 2, "ratio": 0.5, "ready": True}, Flat("a", 2, 0.5, True)),
        ({"name": "a", "count": 2.0, "ratio": 1, "ready": False}, Flat("a", 2, 1.0, False)),  # converted
    ],
)
def test_flat_dataclass_is_built_with_its_field_types(data: dict[str, Any], expected: Flat) -> None:
    built = from_primitive(Flat, data)
    assert built == expected
    assert [type(v) for v in (built.name, built.count, built.ratio, built.ready)] == [str, int, float, bool]


@pytest.mark.parametrize(
    ("data", "field_path", "reason"),
    [
        ({"name": "a", "count": True, "ratio": 0.5, "ready": True}, "count", "expected int"),
        ({"name": "a", "count": 1, "ratio": 0.5, "ready": 1}, "ready", "expected bool"),
        ({"name": "a", "count": 1, "ratio": 0.5, "extra": True}, "extra", "unknown field"),
        ({"name": "a", "count": 1, "ratio": 0.5}, "ready", "missing required field"),
        ({"name": "a", "count": -1, "ratio": 0.5, "ready": True}, "", "Flat() rejected the data: count must not"),
    ],
)
def test_flat_dataclass_errors_are_those_of_the_full_path(data: dict[str, Any], field_path: str, reason: str) -> None:
    with pytest.raises(ConversionError) as caught:
        from_primitive(Flat, data)
    assert caught.value.field == field_path and reason in str(caught.value), str(caught.value)
