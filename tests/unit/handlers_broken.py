"""A handler module that cannot be imported: its declaration is invalid (for the E008 check)."""

from __future__ import annotations

from ecotone_django import command_handler, delayed
from tests.unit.handlers_app import PlaceOrder


@delayed(0)
@command_handler
def never_delayed(command: PlaceOrder) -> None:
    return None
