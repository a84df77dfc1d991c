"""A scanned module with ``@asynchronous`` on a function that declares no handler kind (a mistake)."""

from __future__ import annotations

from ecotone_django import asynchronous
from tests.unit.handlers_app import PlaceOrder


@asynchronous("orders")
def forgot_the_kind(command: PlaceOrder) -> None:
    return None
