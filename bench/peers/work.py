"""What every tool's worker does with a message: write the order's Shipment (the same code for all)."""

from __future__ import annotations

import time

from .shop.models import Shipment


def ship(order_id: int) -> None:
    """The handler body of every tool: note the start time, insert the Shipment row."""
    Shipment.objects.create(order_id=order_id, handled_at=time.time())
