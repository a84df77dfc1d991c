"""Parcels handed to the carrier. At most one per order: a double fails loudly."""

from __future__ import annotations

from django.db import models


class Shipment(models.Model):
    order_id = models.CharField(max_length=64, unique=True)
    tracking_number = models.CharField(max_length=64, unique=True)
    shipped_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"order {self.order_id} shipped as {self.tracking_number}"
