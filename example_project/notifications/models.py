"""Messages sent to customers. One per order (its final outcome): a double fails loudly."""

from __future__ import annotations

from django.db import models

from .messages import NotificationKind


class Notification(models.Model):
    order_id = models.CharField(max_length=64, unique=True)
    customer = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=[(k.value, k.value) for k in NotificationKind])
    text = models.CharField(max_length=255)
    sent_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"to {self.customer}: {self.text}"
