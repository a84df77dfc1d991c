"""What the startup and unmigrated-database tests run inside the check project (``manage.py shell -c``).

Each prints one JSON line: what happened, for the test to assert on.
"""

from __future__ import annotations

import json

from django.db import transaction

from ecotone_django import command_bus
from ecotone_django.channels import Delivery
from ecotone_django.messages import Envelope
from ecotone_django.models import DeadLetter
from ecotone_django.processing import reject
from ecotone_django.replay import replay

from .handlers import PlaceOrder


def _outcome(call: object) -> dict[str, str]:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": ""}


def send() -> None:
    """A send for big_corp inside its transaction and outside any."""

    def inside() -> None:
        with transaction.atomic(using="big_corp"):
            command_bus.send(PlaceOrder("o-1"), metadata={"tenant": "big_corp"})

    def outside() -> None:
        command_bus.send(PlaceOrder("o-2"), metadata={"tenant": "big_corp"})

    print(json.dumps({"inside": _outcome(inside), "outside": _outcome(outside)}))


def dead_letter() -> None:
    """A big_corp delivery that failed unexpectedly is dead-lettered in big_corp or nowhere, never in default."""
    envelope = Envelope("tests.checkproject.handlers.PlaceOrder", {"order_id": "o-3"}, {"tenant": "big_corp"})
    delivery = Delivery(envelope.encode(), "tests.checkproject.handlers.place_order", "orders_premium", 0, envelope)
    outcome = _outcome(lambda: reject(delivery, "internal error: boom", RuntimeError("boom")))
    letters = {}
    for alias in ("default", "big_corp"):
        try:
            letters[alias] = [[d.message_type, d.tenant] for d in DeadLetter.objects.using(alias).all()]
        except Exception as exc:
            letters[alias] = [type(exc).__name__]
    replayed = ""
    if outcome["error"] == "":
        replayed = replay(DeadLetter.objects.using("big_corp").get(), "big_corp").channel
    print(json.dumps({"reject": outcome, "letters": letters, "replayed": replayed}))


def celery_task() -> None:
    """Celery's own worker running a big_corp message: the task is rejected and requeued, not failed (and acked)."""
    from celery.exceptions import Reject

    from ecotone_django.tasks import handle

    envelope = Envelope("tests.checkproject.handlers.PlaceOrder", {"order_id": "o-4"}, {"tenant": "big_corp"})
    try:
        handle.run(envelope.encode(), "tests.checkproject.handlers.place_order", "orders_premium", 0)
    except Reject as exc:
        print(json.dumps({"rejected": str(exc.reason), "requeue": exc.requeue}))
        return
    print(json.dumps({"rejected": "", "requeue": None}))
