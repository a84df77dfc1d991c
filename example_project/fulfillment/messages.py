"""The fulfillment context's messages."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FulfillOrder:
    order_id: str


@dataclass(frozen=True)
class OrderShipped:
    order_id: str
    tracking_number: str


@dataclass(frozen=True)
class FulfillmentFailed:
    order_id: str
    reason: str
