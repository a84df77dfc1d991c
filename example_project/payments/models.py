"""Money that moved. At most one charge and one refund per order: a double fails loudly."""

from __future__ import annotations

from django.db import models


class Charge(models.Model):
    order_id = models.CharField(max_length=64, unique=True)
    charge_id = models.CharField(max_length=64, unique=True)
    customer = models.CharField(max_length=100)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    captured_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.charge_id}: {self.amount} for order {self.order_id}"


class Refund(models.Model):
    charge = models.OneToOneField(Charge, on_delete=models.PROTECT, related_name="refund")
    order_id = models.CharField(max_length=64, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    reason = models.CharField(max_length=255)
    refunded_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"refund of {self.amount} for order {self.order_id}"
