"""Stateless pipelines: validate (``db``) → reserve (``db_other``) → notify (``db``), each hop durable.

Every step writes a row with a UNIQUE order id, so an effect that ran twice would fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ecotone_django import asynchronous, command_bus, internal_handler
from ecotone_django.exceptions import HandlerDeclarationError
from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage
from ecotone_django.testing import MessagingHarness, registry_of
from tests.helpers.processes import ManagedProcess, wait_for
from tests.integration.conftest import WorkerFactory
from tests.sagaapp.messages import ProcessOrder, ReservedOrder, ValidatedOrder
from tests.sagaapp.models import Notification, Reservation, Validation

ALL = ["default", "big_corp", "enterprise_x"]
SHOP = {"tenant": "shop-7"}
STEPS = "tests.sagaapp.messaging"


def effects(order_id: str, using: str = "default") -> tuple[int, int, int]:
    """How many validations, reservations and notifications order ``order_id`` has."""
    validated, reserved, notified = (
        model.objects.using(using).filter(order_id=order_id).count()
        for model in (Validation, Reservation, Notification)
    )
    return validated, reserved, notified


def pending_steps(ecotone: MessagingHarness) -> list[tuple[str, str]]:
    return [(row.handler.removeprefix(f"{STEPS}."), row.channel) for row in ecotone.pending()]


@pytest.mark.django_db(databases=ALL)
def test_each_step_runs_once_on_its_own_channel(ecotone: MessagingHarness) -> None:
    command = ecotone.send(ProcessOrder("p-1", 3), metadata=SHOP)
    assert command is None  # asynchronous
    assert pending_steps(ecotone) == [("validate_order", "db")]

    assert ecotone.run(channels=["db"]) == 1
    assert effects("p-1") == (1, 0, 0)
    assert pending_steps(ecotone) == [("reserve_stock", "db_other")]

    assert ecotone.run(channels=["db_other"]) == 1
    assert effects("p-1") == (1, 1, 0)
    assert pending_steps(ecotone) == [("notify_reserved", "db")]

    ecotone.run()
    assert effects("p-1") == (1, 1, 1)
    assert Notification.objects.using("default").get().text == "3 reserved"
    first, *steps = ecotone.recorded
    assert [(r.kind, r.message) for r in steps] == [
        ("internal", ValidatedOrder("p-1", 3)),
        ("internal", ReservedOrder("p-1", 3)),
    ]
    assert all(r.headers["tenant"] == "shop-7" for r in steps)
    assert all(r.headers["correlation_id"] == first.message_id for r in steps)
    assert steps[1].headers["causation_id"] == steps[0].message_id
    assert not ecotone.pending() and not ecotone.dead_letters()


@pytest.mark.django_db(databases=ALL)
def test_a_step_returning_none_ends_the_chain(ecotone: MessagingHarness) -> None:
    ecotone.send(ProcessOrder("p-2", 0), metadata=SHOP)
    assert ecotone.run() == 1
    assert effects("p-2") == (0, 0, 0)
    assert ecotone.recorded_messages("internal") == []
    assert not ecotone.pending() and not ecotone.dead_letters()


@pytest.mark.django_db(databases=ALL)
def test_a_failing_step_is_retried_and_dead_lettered_without_rerunning_earlier_steps(
    ecotone: MessagingHarness,
) -> None:
    ecotone.send(ProcessOrder("p-3", 500), metadata={"tenant": "enterprise_x"})
    handled = ecotone.run()

    assert handled == 1 + 3  # validate once, reserve MAX_ATTEMPTS (3) times
    assert effects("p-3", using="enterprise_x") == (1, 0, 0)
    [letter] = ecotone.dead_letters()
    assert (letter.handler, letter.channel, letter.tenant) == (f"{STEPS}.reserve_stock", "db_other", "enterprise_x")
    assert "only 100 in stock" in letter.reason and letter.attempts == 3
    assert DeadLetter.objects.using("enterprise_x").count() == 1


@pytest.mark.django_db(databases=ALL)
def test_a_step_delivered_twice_is_handled_once(ecotone: MessagingHarness) -> None:
    ecotone.send(ProcessOrder("p-4", 7), metadata=SHOP)
    ecotone.run(channels=["db"])
    [step] = ecotone.pending()
    step.pk = None  # the same envelope once more, as after a crash before the broker ack
    step.save(using="default")

    assert ecotone.run() == 3
    assert effects("p-4") == (1, 1, 1)
    assert not ecotone.dead_letters()
    assert InboxEntry.objects.using("default").filter(handler=f"{STEPS}.reserve_stock").count() == 1


def test_an_asynchronous_step_must_name_its_message_class() -> None:
    @asynchronous("db")
    @internal_handler("somewhere")
    def untyped(message):  # type: ignore[no-untyped-def]
        return message

    with pytest.raises(HandlerDeclarationError, match="annotate it with the message class"):
        registry_of(untyped)


# -- with worker processes ----------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], what: str, *procs: ManagedProcess) -> None:
    try:
        wait_for(predicate, timeout=30, message=what)
    except AssertionError as exc:
        outputs = "\n".join(f"--- {p!r} ---\n{p.output_tail()}" for p in procs)
        raise AssertionError(f"{exc}\n{outputs}") from None


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_the_pipeline_survives_workers_killed_between_steps(worker: WorkerFactory, tmp_path: Path) -> None:
    hold = tmp_path / "reserve"
    on_db, on_other = worker("db"), worker("db_other")
    command_bus.send(ProcessOrder("k-1", 2, hold=str(hold)), metadata=SHOP)
    wait_until(Path(f"{hold}.started").exists, "the reserve step to start", on_db, on_other)
    assert effects("k-1") == (1, 0, 0)  # validate committed; reserve is in the worker's open transaction

    on_other.kill9()
    on_db.kill9()
    assert effects("k-1") == (1, 0, 0)
    [waiting] = OutboxMessage.objects.using("default").all()
    assert (waiting.handler, waiting.channel) == (f"{STEPS}.reserve_stock", "db_other")

    Path(f"{hold}.release").touch()
    procs = (worker("db_other"), worker("db"))
    wait_until(lambda: effects("k-1") == (1, 1, 1), "every step done", *procs)
    wait_until(lambda: not OutboxMessage.objects.using("default").exists(), "the outbox drained", *procs)
    assert effects("k-1") == (1, 1, 1)
    assert not DeadLetter.objects.using("default").exists()
    handlers = sorted(InboxEntry.objects.using("default").values_list("handler", flat=True))
    assert handlers == [f"{STEPS}.{name}" for name in ("notify_reserved", "reserve_stock", "validate_order")]
