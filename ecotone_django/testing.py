"""Testing support: :class:`MessagingHarness` and the ``ecotone`` pytest fixture.

The harness runs a messaging flow inside the test process — no worker, no
broker, no waiting::

    @pytest.mark.django_db(databases="__all__")
    def test_unpaid_order_is_cancelled(ecotone):
        ecotone.send(PlaceOrder("o-1"), metadata={"tenant": "acme"})
        ecotone.run()                               # every due message, until quiet
        ecotone.advance(timedelta(minutes=31))      # the test clock; due timeouts fire
        assert [r.message for r in ecotone.recorded_commands][-1] == CancelOrder("o-1", "Payment timed out")
        assert ecotone.load_saga(OrderSaga, "o-1", tenant="acme").stage is OrderStage.CANCELLED

Broker channels become database channels while it is active, every message
sent is recorded, and time is the test clock (:mod:`ecotone_django.harness`
says more). To test handlers apart from the project's, ``registry_of(*handlers)``
builds a registry and ``with use_registry(registry):`` puts it in force.

pytest loads this module as a plugin (entry point ``pytest11``) before Django is
configured, so it imports neither Django nor the rest of ecotone_django: its
names come from :mod:`ecotone_django.harness` on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .harness import HarnessError, MessagingHarness, RecordedMessage, registry_of, use_registry

__all__ = ["HarnessError", "MessagingHarness", "RecordedMessage", "registry_of", "use_registry"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".harness", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if importlib.util.find_spec("pytest") is not None:
    import pytest

    @pytest.fixture
    def ecotone() -> Iterator[MessagingHarness]:
        """A :class:`MessagingHarness`, active for the test. Mark the test ``django_db`` for the databases it uses."""
        with __getattr__("MessagingHarness")() as harness:
            yield harness
