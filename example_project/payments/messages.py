"""The payments context's messages."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class ChargeCustomer:
    order_id: str
    customer: str
    amount: Decimal


@dataclass(frozen=True)
class SettlePayment:
    """The gateway's late confirmation of a payment."""

    order_id: str
    customer: str
    amount: Decimal


@dataclass(frozen=True)
class PaymentCaptured:
    order_id: str
    charge_id: str
    amount: Decimal


@dataclass(frozen=True)
class RefundPayment:
    order_id: str
    reason: str


@dataclass(frozen=True)
class PaymentRefunded:
    order_id: str
    amount: Decimal
