"""A fake payment gateway. Each order meets one fate, fixed by a hash of its id:

- it never confirms the payment (``SHOP_UNPAID_RATE``): the saga's timeout cancels the order;
- it confirms late, after the saga gave up (``SHOP_LATE_PAYMENT_RATE``): the saga refunds it;
- otherwise it captures at once.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import timedelta

from django.conf import settings

from example_project.chance import fraction


class Fate(enum.Enum):
    NEVER = "never"
    LATE = "late"
    NOW = "now"


def fate(order_id: str) -> Fate:
    chance = fraction(order_id, "payment")
    if chance < settings.SHOP_UNPAID_RATE:
        return Fate.NEVER
    if chance < settings.SHOP_UNPAID_RATE + settings.SHOP_LATE_PAYMENT_RATE:
        return Fate.LATE
    return Fate.NOW


def late_by() -> timedelta:
    """How long a late confirmation takes: half as long again as the shop waits for it."""
    timeout: timedelta = settings.SHOP_PAYMENT_TIMEOUT
    return timeout * 1.5


def charge_id(order_id: str) -> str:
    return "ch_" + hashlib.sha256(f"charge:{order_id}".encode()).hexdigest()[:24]
