"""The orders context's messages and the stages an order goes through."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class OrderStage(enum.StrEnum):
    PLACED_AWAITING_PAYMENT = "placed_awaiting_payment"
    PAID_AWAITING_FULFILLMENT = "paid_awaiting_fulfillment"
    CANCELLED = "cancelled"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    COMPLETED = "completed"

    @property
    def is_final(self) -> bool:
        return self in (OrderStage.CANCELLED, OrderStage.REFUNDED, OrderStage.COMPLETED)


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    customer: str
    amount: Decimal
    placed_at: datetime


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: str
    amount: Decimal


@dataclass(frozen=True)
class CancelOrder:
    order_id: str
    reason: str


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str


@dataclass(frozen=True)
class GetOrder:
    """Query: the order as a JSON-ready dict, or ``None``."""

    order_id: str
