"""A scanned module with ``@delayed`` on a method that declares no handler kind (a mistake)."""

from __future__ import annotations

from datetime import timedelta

from ecotone_django import delayed
from tests.unit.handlers_app import OrderPlaced


class Reminders:
    @delayed(timedelta(minutes=5))
    def remind(self, event: OrderPlaced) -> None:
        return None
