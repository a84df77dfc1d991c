"""The orders context's tables (one set per tenant database: ``orders`` is a tenant app)."""

from __future__ import annotations

from django.db import models

from .messages import OrderStage


class Order(models.Model):
    """An order as customers see it; the OrderSaga moves its stage."""

    order_id = models.CharField(max_length=64, unique=True)
    tenant = models.CharField(max_length=64, db_index=True)
    customer = models.CharField(max_length=100)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    stage = models.CharField(max_length=40, choices=[(s.value, s.value.replace("_", " ")) for s in OrderStage])
    placed_at = models.DateTimeField(help_text="When the customer's request arrived.")
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the order reached its final stage.")

    def __str__(self) -> str:
        return f"order {self.order_id} ({self.stage})"


class Cancellation(models.Model):
    """An order cancelled by the saga's payment timeout. At most one per order: a double fails loudly."""

    order_id = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=255)
    cancelled_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"order {self.order_id} cancelled: {self.reason}"
