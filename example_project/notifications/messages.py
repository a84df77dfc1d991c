"""The notifications context's messages."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class NotificationKind(enum.StrEnum):
    SHIPPED = "shipped"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


@dataclass(frozen=True)
class SendNotification:
    order_id: str
    customer: str
    kind: NotificationKind
    text: str
