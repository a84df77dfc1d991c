"""A fake carrier: ships at once, except for the orders it fails to ship."""

from __future__ import annotations

import hashlib

from django.conf import settings

from example_project.chance import fraction


def ships(order_id: str) -> bool:
    """Whether the carrier can ship this order (``SHOP_SHIPMENT_FAILURE_RATE`` of orders: no)."""
    return fraction(order_id, "shipment") >= settings.SHOP_SHIPMENT_FAILURE_RATE


def ship(order_id: str) -> str | None:
    """The tracking number of the parcel, or ``None`` when the carrier cannot ship it."""
    if not ships(order_id):
        return None
    return "TRK" + hashlib.sha256(f"parcel:{order_id}".encode()).hexdigest()[:20].upper()
