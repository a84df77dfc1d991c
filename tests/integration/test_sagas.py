"""The order saga of the seed: in-process with the test clock (``ecotone`` harness, no worker), then with
real ``consume_channel`` worker processes.

Side effects are rows with a UNIQUE order id, so "exactly once" is a count of 1 and a double would
dead-letter. Worker processes shorten the 30-minute payment timeout with SAGAAPP_PAYMENT_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Model
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from ecotone_django import command_bus, delayed, event_bus, event_handler, identifier, saga
from ecotone_django.clock import now
from ecotone_django.models import DeadLetter, OutboxMessage, SagaHistory, SagaState
from ecotone_django.outbox import Relay
from ecotone_django.sagas import is_completed, load_saga
from ecotone_django.testing import MessagingHarness, registry_of, use_registry
from ecotone_django.worker import Worker
from tests.helpers.processes import ManagedProcess, wait_for
from tests.integration.broker_fixtures import rabbit_queue  # noqa: F401 - a fixture
from tests.integration.conftest import WorkerFactory
from tests.sagaapp.messages import (
    CancelOrder,
    CustomerNoted,
    FulfillOrder,
    InvoiceIssued,
    NotifyCustomer,
    OrderPlaced,
    OrderStage,
    PaymentCaptured,
    PlaceOrder,
    RefundPayment,
    StockReserved,
)
from tests.sagaapp.messaging import NOWHERE, OrderSaga
from tests.sagaapp.models import Cancellation, Notification, Refund, Shipment

ALL = ["default", "big_corp", "enterprise_x"]
SHOP = {"tenant": "shop-7"}  # a standard-plan tenant: the shared database
SAGA = "tests.sagaapp.messaging.OrderSaga"
pytestmark = pytest.mark.django_db(databases=ALL)


def place(ecotone: MessagingHarness, order_id: str, destination: str = "Lisbon", metadata: dict | None = None) -> None:
    ecotone.send(PlaceOrder(order_id, Decimal("99.90"), destination), metadata=metadata or SHOP)
    ecotone.run()


def pay(ecotone: MessagingHarness, order_id: str, metadata: dict | None = None) -> None:
    ecotone.publish(PaymentCaptured(order_id, captured_at=datetime.now(UTC)), metadata=metadata or SHOP)
    ecotone.run()


def row(order_id: str, using: str = "default") -> SagaState:
    return SagaState.objects.using(using).get(saga_type=SAGA, saga_id=order_id)


def handled_by(order_id: str, using: str = "default") -> list[str]:
    return [h.handler.rsplit(".", 1)[1] for h in SagaHistory.objects.using(using).filter(saga__saga_id=order_id)]


def test_payment_captured_leads_to_fulfillment_and_notification(ecotone: MessagingHarness) -> None:
    place(ecotone, "o-1")
    assert ecotone.load_saga(OrderSaga, "o-1", tenant="shop-7").stage is OrderStage.PLACED_AWAITING_PAYMENT

    pay(ecotone, "o-1")

    assert Shipment.objects.using("default").get().order_id == "o-1"
    assert Notification.objects.using("default").get().order_id == "o-1"
    order = ecotone.load_saga(OrderSaga, "o-1", tenant="shop-7")
    assert order.stage is OrderStage.FULFILLED and is_completed(order)
    assert [type(r.message) for r in ecotone.recorded_commands] == [PlaceOrder, FulfillOrder, NotifyCustomer]
    assert row("o-1").status == SagaState.COMPLETED and row("o-1").version == 3
    assert handled_by("o-1") == ["start", "on_payment_captured", "on_fulfilled"]
    assert not ecotone.dead_letters()


def test_unpaid_order_is_cancelled_by_the_timeout_exactly_once(ecotone: MessagingHarness) -> None:
    place(ecotone, "o-2")
    timeout = ecotone.pending()
    assert [r.handler.rsplit(".", 1)[1] for r in timeout] == ["payment_timeout"]
    assert timeout[0].channel == "db" and timeout[0].tenant == "shop-7"

    ecotone.advance(timedelta(minutes=29))
    assert not Cancellation.objects.using("default").exists()

    ecotone.advance(timedelta(minutes=2))
    cancellation = Cancellation.objects.using("default").get()
    assert (cancellation.order_id, cancellation.reason) == ("o-2", "Payment timed out")
    assert ecotone.load_saga(OrderSaga, "o-2", tenant="shop-7").stage is OrderStage.CANCELLED

    ecotone.advance(timedelta(hours=2))
    assert Cancellation.objects.using("default").count() == 1
    assert [r.message for r in ecotone.recorded_messages(of=CancelOrder)] == [CancelOrder("o-2", "Payment timed out")]
    assert not ecotone.pending() and not ecotone.dead_letters()


def test_failed_fulfillment_refunds_the_payment_exactly_once(ecotone: MessagingHarness) -> None:
    place(ecotone, "o-3", destination=NOWHERE)
    pay(ecotone, "o-3")

    refund = Refund.objects.using("default").get()
    assert (refund.order_id, refund.reason) == ("o-3", f"no carrier delivers to {NOWHERE}")
    assert not Shipment.objects.using("default").exists()
    assert ecotone.load_saga(OrderSaga, "o-3", tenant="shop-7").stage is OrderStage.COMPENSATED_REFUND
    ecotone.advance(timedelta(hours=1))
    assert Refund.objects.using("default").count() == 1
    assert len(ecotone.recorded_messages(of=RefundPayment)) == 1
    assert not Cancellation.objects.using("default").exists() and not ecotone.dead_letters()


def test_timeout_after_completion_is_ignored(ecotone: MessagingHarness) -> None:
    place(ecotone, "o-4")
    pay(ecotone, "o-4")
    completed = row("o-4")
    assert completed.status == SagaState.COMPLETED

    ecotone.advance(timedelta(minutes=31))

    assert not ecotone.pending(), "the timeout was delivered"
    after = row("o-4")
    assert (after.version, after.state, after.updated_at) == (completed.version, completed.state, completed.updated_at)
    assert "payment_timeout" not in handled_by("o-4")
    assert not Cancellation.objects.using("default").exists()


def test_a_second_start_message_does_not_create_a_second_saga(ecotone: MessagingHarness) -> None:
    placed = OrderPlaced("o-5", Decimal("10"), "Porto", placed_at=datetime(2030, 1, 1, tzinfo=UTC))
    ecotone.publish(placed, metadata=SHOP)
    ecotone.run()
    ecotone.publish(OrderPlaced("o-5", Decimal("20"), "Faro", placed_at=datetime.now(UTC)), metadata=SHOP)
    ecotone.run()

    assert SagaState.objects.using("default").filter(saga_id="o-5").count() == 1
    order = ecotone.load_saga(OrderSaga, "o-5", tenant="shop-7")
    assert (order.amount, order.destination) == (Decimal("10"), "Porto")
    assert handled_by("o-5") == ["start"]
    assert not ecotone.dead_letters()


def test_an_event_for_a_missing_saga_is_logged_and_dropped(
    ecotone: MessagingHarness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ecotone_django.sagas"):
        pay(ecotone, "nobody")

    assert "no tests.sagaapp.messaging.OrderSaga with id 'nobody'" in caplog.text
    assert not SagaState.objects.using("default").exists()
    assert not ecotone.dead_letters() and not ecotone.pending()
    assert FulfillOrder not in [r.type for r in ecotone.recorded_commands]


def test_an_event_for_a_missing_saga_raises_when_configured(ecotone: MessagingHarness) -> None:
    with override_settings(ECOTONE={**settings.ECOTONE, "SAGA_NOT_FOUND": "raise"}):
        pay(ecotone, "nobody")

    [letter] = ecotone.dead_letters()
    assert letter.handler == f"{SAGA}.on_payment_captured"
    assert letter.exception_type == "SagaNotFoundError" and "'nobody'" in letter.reason


def test_saga_state_round_trips_enum_datetime_decimal_and_lists(ecotone: MessagingHarness) -> None:
    placed_at = datetime(2030, 5, 17, 9, 30, 15, 123456, tzinfo=UTC)
    ecotone.publish(OrderPlaced("o-6", Decimal("1234.5600"), "Braga", placed_at), metadata=SHOP)
    ecotone.run()
    ecotone.publish(CustomerNoted("ring twice"), metadata={**SHOP, "order": "o-6"})
    ecotone.publish(CustomerNoted("leave at door"), metadata={**SHOP, "order": "o-6"})
    ecotone.run()

    stored = row("o-6").state
    assert stored["stage"] == "placed_awaiting_payment" and stored["amount"] == "1234.5600"
    assert stored["placed_at"] == "2030-05-17T09:30:15.123456+00:00" and stored["paid_at"] is None
    order = ecotone.load_saga(OrderSaga, "o-6", tenant="shop-7")
    assert order.stage is OrderStage.PLACED_AWAITING_PAYMENT
    assert order.amount == Decimal("1234.5600") and isinstance(order.amount, Decimal)
    assert order.placed_at == placed_at and order.paid_at is None
    assert order.notes == ["ring twice", "leave at door"]
    assert OrderSaga().notes == [], "the class default was mutated"


def test_history_records_every_handled_message(ecotone: MessagingHarness) -> None:
    place(ecotone, "o-7")
    pay(ecotone, "o-7")

    history = list(SagaHistory.objects.using("default").filter(saga__saga_id="o-7"))
    events = ecotone.recorded_events
    placed = next(r for r in events if isinstance(r.message, OrderPlaced))
    paid = next(r for r in events if isinstance(r.message, PaymentCaptured))
    assert [(h.handler, h.message_type, h.message_id) for h in history[:2]] == [
        (f"{SAGA}.start", "tests.sagaapp.messages.OrderPlaced", placed.message_id),
        (f"{SAGA}.on_payment_captured", "tests.sagaapp.messages.PaymentCaptured", paid.message_id),
    ]
    assert history[2].handler == f"{SAGA}.on_fulfilled"
    assert history[0].handled_at <= history[1].handled_at <= history[2].handled_at


def test_a_dedicated_tenant_keeps_its_saga_in_its_own_database(ecotone: MessagingHarness) -> None:
    big_corp = {"tenant": "big_corp"}  # its "orders" channel is RabbitMQ; the harness keeps it in the database
    place(ecotone, "o-8", metadata=big_corp)
    pay(ecotone, "o-8", metadata=big_corp)

    assert row("o-8", using="big_corp").status == SagaState.COMPLETED
    assert row("o-8", using="big_corp").tenant == "big_corp"
    assert Notification.objects.using("big_corp").get().order_id == "o-8"
    assert not SagaState.objects.using("default").exists()
    assert not Notification.objects.using("default").exists()
    assert all(r.headers["tenant"] == "big_corp" for r in ecotone.recorded)


@dataclass(frozen=True)
class TicketOpened:
    ticket_id: str


@dataclass(frozen=True)
class TicketAnswered:
    ticket_id: str


@saga
class TicketSaga:
    """Synchronous: its handlers run in the publisher's transaction; its @delayed one waits on DEFAULT_CHANNEL."""

    ticket_id: str = identifier()
    answered: bool = False
    escalated: bool = False

    @event_handler
    @staticmethod
    def open(event: TicketOpened) -> TicketSaga:
        ticket = TicketSaga()
        ticket.ticket_id = event.ticket_id
        return ticket

    @event_handler
    def answer(self, event: TicketAnswered) -> None:
        self.answered = True

    @delayed(timedelta(hours=1))
    @event_handler
    def escalate(self, event: TicketOpened) -> None:
        self.escalated = not self.answered


def test_a_synchronous_saga_runs_in_the_publishers_transaction(ecotone: MessagingHarness) -> None:
    tickets = SagaState.objects.using("default").filter(saga_id="t-1")
    with use_registry(registry_of(TicketSaga)):
        with pytest.raises(RuntimeError), transaction.atomic(using="default"):
            ecotone.publish(TicketOpened("t-1"), metadata=SHOP)
            assert tickets.exists()
            raise RuntimeError("the publisher fails")
        assert not tickets.exists() and not ecotone.pending()

        ecotone.publish(TicketOpened("t-1"), metadata=SHOP)
        assert tickets.exists(), "started without any run()"
        [timeout] = ecotone.pending()
        assert timeout.channel == "db" and timeout.available_at > now() + timedelta(minutes=59)

        ecotone.advance(timedelta(minutes=61))
        assert ecotone.load_saga(TicketSaga, "t-1", tenant="shop-7").escalated is True
        assert tickets.get().version == 2


# -- with worker processes ----------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], what: str, *procs: ManagedProcess, timeout: float = 30) -> None:
    try:
        wait_for(predicate, timeout=timeout, message=what)
    except AssertionError as exc:
        outputs = "\n".join(f"--- {p!r} ---\n{p.output_tail()}" for p in procs)
        raise AssertionError(f"{exc}\n{outputs}") from None


def saga_exists(order_id: str, using: str = "default") -> bool:
    return SagaState.objects.using(using).filter(saga_type=SAGA, saga_id=order_id).exists()


def pending_timeout(order_id: str, using: str = "default") -> OutboxMessage | None:
    return (
        OutboxMessage.objects.using(using)
        .filter(handler=f"{SAGA}.payment_timeout", body__contains=f'"order_id":"{order_id}"')
        .first()
    )


def run_three_scenarios(tenant: str, using: str, channel: str, procs: tuple[ManagedProcess, ...]) -> None:
    """Paid → shipped and notified; shipping fails → refunded; never paid → cancelled by the timeout."""
    metadata = {"tenant": tenant}
    for order_id, destination in (("paid", "Lisbon"), ("unshippable", NOWHERE), ("unpaid", "Porto")):
        command_bus.send(PlaceOrder(order_id, Decimal("5.00"), destination), metadata=metadata)
    for order_id in ("paid", "unshippable", "unpaid"):
        wait_until(lambda o=order_id: saga_exists(o, using), f"saga {order_id} started", *procs)
    for order_id in ("paid", "unshippable"):
        event_bus.publish(PaymentCaptured(order_id, captured_at=datetime.now(UTC)), metadata=metadata)
    held = pending_timeout("unpaid", using)  # the timeout waits in the tenant's database, not in a broker
    assert held is not None and held.channel == channel and held.available_at > now()

    def effect(model: type[Model], order_id: str) -> Callable[[], bool]:
        return lambda: model.objects.using(using).filter(order_id=order_id).exists()

    wait_until(effect(Notification, "paid"), "the paid order's notification", *procs)
    wait_until(effect(Refund, "unshippable"), "the refund", *procs)
    wait_until(effect(Cancellation, "unpaid"), "the cancellation by timeout", *procs)
    wait_until(lambda: not OutboxMessage.objects.using(using).exists(), "every timeout delivered", *procs)

    assert list(Shipment.objects.using(using).values_list("order_id", flat=True)) == ["paid"]
    assert list(Notification.objects.using(using).values_list("order_id", flat=True)) == ["paid"]
    assert list(Refund.objects.using(using).values_list("order_id", flat=True)) == ["unshippable"]
    assert list(Cancellation.objects.using(using).values_list("order_id", flat=True)) == ["unpaid"]
    stages = {o: load_saga(OrderSaga, o, using=using).stage for o in ("paid", "unshippable", "unpaid")}
    assert stages == {
        "paid": OrderStage.FULFILLED,
        "unshippable": OrderStage.COMPENSATED_REFUND,
        "unpaid": OrderStage.CANCELLED,
    }
    assert "payment_timeout" not in handled_by("paid", using) + handled_by("unshippable", using)
    assert SagaState.objects.using(using).filter(status=SagaState.COMPLETED).count() == 3
    assert not DeadLetter.objects.using(using).exists()


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_the_three_scenarios_with_a_worker_on_the_database_channel(worker: WorkerFactory) -> None:
    proc = worker("db", env={"SAGAAPP_PAYMENT_TIMEOUT_SECONDS": "3"})
    run_three_scenarios("shop-7", "default", "db", (proc,))
    assert not SagaState.objects.using("big_corp").exists()


@pytest.mark.usefixtures("rabbit_queue")  # only in the PostgreSQL run; needs RabbitMQ
@pytest.mark.django_db(databases=ALL, transaction=True)
def test_the_three_scenarios_for_a_dedicated_tenant_on_rabbitmq(worker: WorkerFactory) -> None:
    proc = worker("rabbit", env={"SAGAAPP_PAYMENT_TIMEOUT_SECONDS": "3"})
    run_three_scenarios("big_corp", "big_corp", "rabbit", (proc,))
    assert not SagaState.objects.using("default").exists()


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_two_workers_updating_one_saga_at_once_lose_no_update(worker: WorkerFactory, tmp_path: Path) -> None:
    if settings.ENGINE == "sqlite":
        pytest.skip("SQLite serialises writers: two transactions cannot update one saga at the same moment")
    procs = (worker("db"), worker("db"))
    event_bus.publish(OrderPlaced("c-1", Decimal("3"), "Lisbon", placed_at=datetime.now(UTC)), metadata=SHOP)
    wait_until(lambda: saga_exists("c-1"), "the saga started", *procs)

    # Both handlers wait for each other after loading the saga, so both load version 1 and race to save.
    # The second event is sent once the first is in a worker's hands, so that each worker claims one.
    event_bus.publish(InvoiceIssued("c-1", "INV-1", rendezvous=str(tmp_path)), metadata=SHOP)
    wait_until((tmp_path / "invoice").exists, "a worker to take the first event", *procs)
    event_bus.publish(StockReserved("c-1", "north", rendezvous=str(tmp_path)), metadata=SHOP)
    in_flight = OutboxMessage.objects.using("default").exclude(handler=f"{SAGA}.payment_timeout")
    wait_until(lambda: not in_flight.exists(), "both events handled", *procs)

    assert row("c-1").version == 3

    order = load_saga(OrderSaga, "c-1", using="default")
    assert (order.invoice_no, order.warehouse) == ("INV-1", "north")
    attempts = [len((tmp_path / f"{who}.attempts").read_text().split()) for who in ("invoice", "stock")]
    assert sorted(attempts) == [1, 2], "the loser of the version check runs again on fresh state"
    assert len({pid for who in ("invoice", "stock") for pid in (tmp_path / f"{who}.attempts").read_text().split()}) == 2
    assert handled_by("c-1")[0] == "start" and sorted(handled_by("c-1")[1:]) == [
        "on_invoice_issued",
        "on_stock_reserved",
    ]
    assert not DeadLetter.objects.using("default").exists()


@pytest.mark.django_db(databases=ALL, transaction=True)
def test_a_timeout_due_while_every_worker_is_down_fires_when_they_return(worker: WorkerFactory) -> None:
    env = {"SAGAAPP_PAYMENT_TIMEOUT_SECONDS": "1"}
    first = worker("db", env=env)
    command_bus.send(PlaceOrder("late", Decimal("8"), "Faro"), metadata=SHOP)
    wait_until(lambda: saga_exists("late") and pending_timeout("late"), "the saga and its timeout", first)
    first.kill9()
    due = pending_timeout("late")
    assert due is not None
    wait_for(lambda: now() > due.available_at, timeout=10, message="the timeout to fall due")
    assert not Cancellation.objects.using("default").exists()

    second = worker("db", env=env)
    wait_until(lambda: Cancellation.objects.using("default").filter(order_id="late").exists(), "cancelled", second)
    wait_until(lambda: not OutboxMessage.objects.using("default").exists(), "the outbox drained", second)
    assert Cancellation.objects.using("default").count() == 1
    assert load_saga(OrderSaga, "late", using="default").stage is OrderStage.CANCELLED


# -- many delayed messages ----------------------------------------------------------------------------------

DELAYED = 100_000


def _due_queries(alias: str) -> list[str]:
    """The SQL the worker (database channel) and the relay (broker channel) run to find due rows."""
    with CaptureQueriesContext(connections[alias]) as worker_queries:
        assert Worker(["db"], relay=False).consume_database_once(alias) is False
    with CaptureQueriesContext(connections[alias]) as relay_queries:
        assert Relay([alias], ["rabbit"]).run_once() == 0
    found = [
        q["sql"]
        for q in [*worker_queries.captured_queries, *relay_queries.captured_queries]
        if "ecotone_outbox" in q["sql"]
        and (
            q["sql"].lstrip().upper().startswith("SELECT")
            # the relay on PostgreSQL: one DELETE … WHERE id IN (SELECT … SKIP LOCKED) takes a batch
            or (q["sql"].lstrip().upper().startswith("DELETE") and "SKIP LOCKED" in q["sql"])
        )
    ]
    assert len(found) == 2, found
    return found


@pytest.mark.django_db(databases=["default"], transaction=True)
def test_finding_due_messages_among_100k_delayed_ones_is_an_index_lookup() -> None:
    if settings.ENGINE == "sqlite":
        pytest.skip("query plans are checked on PostgreSQL and MariaDB")
    moment = now()
    OutboxMessage.objects.using("default").bulk_create(
        (
            OutboxMessage(
                message_id=f"00000000-0000-7000-8000-{i:012d}",
                channel="db" if i % 2 else "rabbit",
                handler=f"{SAGA}.payment_timeout",
                message_type="tests.sagaapp.messages.OrderPlaced",
                tenant="shop-7",
                body="{}",
                available_at=moment + timedelta(days=1, seconds=i),
                created_at=moment,
            )
            for i in range(DELAYED)
        ),
        batch_size=20000,
    )
    with connections["default"].cursor() as cursor:
        cursor.execute("ANALYZE ecotone_outbox" if settings.ENGINE == "postgres" else "ANALYZE TABLE ecotone_outbox")
        if settings.ENGINE == "mariadb":
            cursor.fetchall()  # ANALYZE TABLE returns a status row
        for sql in _due_queries("default"):
            cursor.execute(f"EXPLAIN {sql}")
            plan = cursor.fetchall()
            if settings.ENGINE == "postgres":
                text = "\n".join(line for (line,) in plan)
                assert "Scan using ecotone_outbox_due" in text, text  # an Index Scan or Index Only Scan
                assert "Seq Scan" not in text, text
            else:
                columns = [c[0] for c in cursor.description]
                [step] = [dict(zip(columns, line, strict=True)) for line in plan]
                assert step["key"] == "ecotone_outbox_due", step
                assert int(step["rows"]) < 100, step
    assert OutboxMessage.objects.using("default").count() == DELAYED
