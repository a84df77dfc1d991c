"""Messages of the order saga (the seed's story) and of the order pipeline."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class OrderStage(enum.Enum):
    PLACED_AWAITING_PAYMENT = "placed_awaiting_payment"
    PAID_AWAITING_FULFILLMENT = "paid_awaiting_fulfillment"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    COMPENSATED_REFUND = "compensated_refund"


# -- the order saga -----------------------------------------------------------


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    amount: Decimal
    destination: str = "Lisbon"


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    amount: Decimal
    destination: str
    placed_at: datetime


@dataclass(frozen=True)
class PaymentCaptured:
    order_id: str
    captured_at: datetime


@dataclass(frozen=True)
class FulfillOrder:
    order_id: str
    destination: str


@dataclass(frozen=True)
class OrderFulfilled:
    order_id: str


@dataclass(frozen=True)
class FulfillmentFailed:
    order_id: str
    reason: str


@dataclass(frozen=True)
class CancelOrder:
    order_id: str
    reason: str


@dataclass(frozen=True)
class RefundPayment:
    order_id: str
    reason: str


@dataclass(frozen=True)
class NotifyCustomer:
    order_id: str
    text: str


@dataclass(frozen=True)
class InvoiceIssued:
    """One of two independent facts about an order; ``rendezvous`` makes two workers handle both at once."""

    order_id: str
    invoice_no: str
    rendezvous: str = ""


@dataclass(frozen=True)
class StockReserved:
    order_id: str
    warehouse: str
    rendezvous: str = ""


@dataclass(frozen=True)
class CustomerNoted:
    """Finds its saga through a header (``identifier_mapping``), not an attribute."""

    note: str


# -- the order pipeline -------------------------------------------------------


@dataclass(frozen=True)
class ProcessOrder:
    order_id: str
    quantity: int
    hold: str = ""


@dataclass(frozen=True)
class ValidatedOrder:
    order_id: str
    quantity: int
    hold: str = ""


@dataclass(frozen=True)
class ReservedOrder:
    order_id: str
    quantity: int
