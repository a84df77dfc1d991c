"""Saga declarations, state conversion and saga lookup — no database."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from ecotone_django import event_handler, identifier, saga
from ecotone_django.exceptions import ConversionError, HandlerDeclarationError
from ecotone_django.messages import Envelope
from ecotone_django.saga_declarations import is_completed, load_instance, meta_of, state_of
from ecotone_django.sagas import saga_id_for
from ecotone_django.testing import registry_of


class Stage(enum.Enum):
    NEW = "new"
    PAID = "paid"


@dataclass(frozen=True)
class Opened:
    order_id: str


@dataclass(frozen=True)
class Paid:
    order_id: str
    at: datetime


@dataclass(frozen=True)
class Renamed:
    id: str


@dataclass(frozen=True)
class Anonymous:
    text: str


class Base:
    tenant_note: str = ""


@saga
class Order(Base):
    order_id: str = identifier()
    stage: Stage = Stage.NEW
    total: Decimal = Decimal("0")
    paid_at: datetime | None = None
    lines: list[str] = []
    later: Later | None = None  # a forward reference, resolved on first use
    limit: ClassVar[int] = 3
    _cache: dict[str, Any] = {}

    @event_handler
    @classmethod
    def open(cls, event: Opened) -> Order:
        order = cls()
        order.order_id = event.order_id
        return order

    @event_handler
    def pay(self, event: Paid) -> None:
        self.stage = Stage.PAID

    @event_handler(identifier_mapping={"order_id": "payload.id"})
    def rename(self, event: Renamed) -> None: ...

    @event_handler(identifier_mapping={"order_id": "headers.order"})
    def note(self, event: Anonymous) -> None: ...


@dataclass(frozen=True)
class Later:
    code: int


@dataclass(frozen=True)
class Ping:
    text: str


@saga
class Pinged:
    order_id: str = identifier()

    @event_handler
    @staticmethod
    def begin(event: Opened) -> Pinged:
        return Pinged()

    @event_handler
    def ping(self, event: Ping) -> None: ...


def test_state_is_the_public_annotated_attributes_including_inherited_ones() -> None:
    meta = meta_of(Order)
    assert meta.identifier == "order_id"
    assert list(meta.fields) == ["tenant_note", "order_id", "stage", "total", "paid_at", "lines", "later"]


def test_state_round_trips_enum_decimal_datetime_optional_list_and_nested() -> None:
    order = Order()
    order.order_id, order.stage, order.total = "o-1", Stage.PAID, Decimal("12.30")
    order.paid_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    order.lines.append("book")
    order.later = Later(7)

    state = state_of(order)
    assert state == {
        "tenant_note": "",
        "order_id": "o-1",
        "stage": "paid",
        "total": "12.30",
        "paid_at": "2030-01-02T03:04:05+00:00",
        "lines": ["book"],
        "later": {"code": 7},
    }
    loaded = load_instance(Order, state)
    assert (loaded.stage, loaded.total, loaded.paid_at, loaded.lines, loaded.later) == (
        Stage.PAID,
        Decimal("12.30"),
        order.paid_at,
        ["book"],
        Later(7),
    )
    assert not is_completed(loaded) and is_completed(load_instance(Order, state, completed=True))


def test_missing_state_keeps_defaults_and_a_bad_value_names_the_field() -> None:
    loaded = load_instance(Order, {"order_id": "o-2"})
    assert (loaded.order_id, loaded.stage, loaded.lines) == ("o-2", Stage.NEW, [])
    with pytest.raises(ConversionError, match="Order field 'stage'"):
        load_instance(Order, {"order_id": "o-3", "stage": "lost"})


def test_mutable_defaults_are_not_shared_between_instances() -> None:
    first, second = Order(), Order()
    first.lines.append("x")
    assert second.lines == [] and Order.lines == []


def test_complete_marks_the_instance() -> None:
    order = Order()
    assert not is_completed(order)
    order.complete()  # type: ignore[attr-defined]
    assert is_completed(order)


def _handler(name: str) -> Any:
    return registry_of(Order).get(f"{__name__}.Order.{name}")


@pytest.mark.parametrize(
    ("handler", "message", "headers", "expected"),
    [
        ("pay", Paid("o-1", datetime.now(UTC)), {}, "o-1"),
        ("pay", Paid("o-1", datetime.now(UTC)), {"order_id": "other"}, "o-1"),
        ("rename", Renamed("o-2"), {}, "o-2"),
        ("note", Anonymous("hi"), {"order": "o-3"}, "o-3"),
        ("note", Anonymous("hi"), {}, None),
    ],
    ids=["attribute", "attribute-before-header", "payload-mapping", "header-mapping", "nothing"],
)
def test_the_saga_id_comes_from_the_mapping_the_attribute_or_the_header(
    handler: str, message: Any, headers: dict[str, str], expected: str | None
) -> None:
    envelope = Envelope(type="t", payload=None, headers=headers)
    assert saga_id_for(_handler(handler), message, envelope) == expected


def test_a_header_named_like_the_identifier_finds_the_saga() -> None:
    handler = registry_of(Pinged).get(f"{__name__}.Pinged.ping")
    assert saga_id_for(handler, Ping("x"), Envelope(type="t", payload=None, headers={"order_id": 42})) == "42"


def test_class_and_static_handlers_start_the_saga() -> None:
    starts = {h.id.rsplit(".", 1)[1]: h.starts_saga for h in registry_of(Order, Pinged)}
    assert starts == {"open": True, "pay": False, "rename": False, "note": False, "begin": True, "ping": False}


def test_a_saga_needs_exactly_one_identifier() -> None:
    with pytest.raises(HandlerDeclarationError, match="exactly one attribute marked identifier"):

        @saga
        class NoId:
            name: str = ""

    with pytest.raises(HandlerDeclarationError, match=r"\['a', 'b'\]"):

        @saga
        class TwoIds:
            a: str = identifier()
            b: str = identifier()


def test_a_saga_needs_a_start_handler() -> None:
    with pytest.raises(HandlerDeclarationError, match="no start handler"):

        @saga
        class NeverStarts:
            order_id: str = identifier()

            @event_handler
            def pay(self, event: Paid) -> None: ...


@pytest.mark.parametrize(
    "mapping", [{"order_id": "id"}, {"order_id": "body.id"}, {"orderId": "payload.id"}, {"order_id": "payload."}]
)
def test_a_bad_identifier_mapping_is_a_declaration_error(mapping: dict[str, str]) -> None:
    with pytest.raises(HandlerDeclarationError, match="identifier_mapping must map 'order_id'"):

        @saga
        class Mapped:
            order_id: str = identifier()

            @event_handler
            @classmethod
            def begin(cls, event: Opened) -> Mapped:
                return cls()

            @event_handler(identifier_mapping=mapping)
            def on(self, event: Renamed) -> None: ...
