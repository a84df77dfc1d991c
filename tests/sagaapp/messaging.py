"""The seed's order saga and a three-step order pipeline, driven by the saga and pipeline tests.

``OrderSaga`` coordinates order → payment → fulfillment → notification with a
payment timeout and a refund as compensation. Every handler runs on the
``orders`` channel (a database channel for shared tenants, RabbitMQ for
big_corp): routing is configuration. Side-effect handlers write rows with a
UNIQUE order id, so a double effect fails loudly.

The payment timeout is 30 minutes; worker processes started by tests shorten it
with ``SAGAAPP_PAYMENT_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from decimal import Decimal

from ecotone_django import (
    CommandBus,
    EventBus,
    asynchronous,
    command_handler,
    delayed,
    event_handler,
    identifier,
    internal_handler,
    saga,
)
from ecotone_django.clock import now

from .checkpoints import hold, rendezvous
from .messages import (
    CancelOrder,
    CustomerNoted,
    FulfillmentFailed,
    FulfillOrder,
    InvoiceIssued,
    NotifyCustomer,
    OrderFulfilled,
    OrderPlaced,
    OrderStage,
    PaymentCaptured,
    PlaceOrder,
    ProcessOrder,
    RefundPayment,
    ReservedOrder,
    StockReserved,
    ValidatedOrder,
)
from .models import Cancellation, Notification, Refund, Reservation, Shipment, Validation

PAYMENT_TIMEOUT = timedelta(seconds=float(os.environ.get("SAGAAPP_PAYMENT_TIMEOUT_SECONDS", 30 * 60)))
NOWHERE = "Atlantis"  # no carrier delivers there: fulfillment fails


@asynchronous("orders")
@saga
class OrderSaga:
    order_id: str = identifier()
    stage: OrderStage = OrderStage.PLACED_AWAITING_PAYMENT
    amount: Decimal = Decimal("0")
    destination: str = ""
    placed_at: datetime | None = None
    paid_at: datetime | None = None
    invoice_no: str = ""
    warehouse: str = ""
    notes: list[str] = []  # @saga gives each instance its own copy

    @event_handler
    @classmethod
    def start(cls, event: OrderPlaced) -> OrderSaga:
        order = cls()
        order.order_id = event.order_id
        order.amount = event.amount
        order.destination = event.destination
        order.placed_at = event.placed_at
        return order

    @event_handler
    def on_payment_captured(self, event: PaymentCaptured, bus: CommandBus) -> None:
        if self.stage is not OrderStage.PLACED_AWAITING_PAYMENT:
            return
        self.stage = OrderStage.PAID_AWAITING_FULFILLMENT
        self.paid_at = event.captured_at
        bus.send(FulfillOrder(self.order_id, self.destination))

    @delayed(PAYMENT_TIMEOUT)
    @event_handler
    def payment_timeout(self, event: OrderPlaced, bus: CommandBus) -> None:
        if self.stage is OrderStage.PLACED_AWAITING_PAYMENT:
            bus.send(CancelOrder(self.order_id, reason="Payment timed out"))
            self.stage = OrderStage.CANCELLED
            self.complete()

    @event_handler
    def on_fulfilled(self, event: OrderFulfilled, bus: CommandBus) -> None:
        self.stage = OrderStage.FULFILLED
        bus.send(NotifyCustomer(self.order_id, "Your order is on its way"))
        self.complete()

    @event_handler
    def on_fulfillment_failed(self, event: FulfillmentFailed, bus: CommandBus) -> None:
        bus.send(RefundPayment(self.order_id, event.reason))  # compensation
        self.stage = OrderStage.COMPENSATED_REFUND
        self.complete()

    @event_handler
    def on_invoice_issued(self, event: InvoiceIssued) -> None:
        rendezvous(event.rendezvous, "invoice", "stock")
        self.invoice_no = event.invoice_no

    @event_handler
    def on_stock_reserved(self, event: StockReserved) -> None:
        rendezvous(event.rendezvous, "stock", "invoice")
        self.warehouse = event.warehouse

    @event_handler(identifier_mapping={"order_id": "headers.order"})
    def on_customer_noted(self, event: CustomerNoted) -> None:
        self.notes.append(event.note)


@asynchronous("orders")
@command_handler
def place_order(command: PlaceOrder, events: EventBus) -> None:
    events.publish(OrderPlaced(command.order_id, command.amount, command.destination, placed_at=now()))


@asynchronous("orders")
@command_handler
def fulfill_order(command: FulfillOrder, events: EventBus) -> None:
    if command.destination == NOWHERE:
        events.publish(FulfillmentFailed(command.order_id, reason=f"no carrier delivers to {NOWHERE}"))
        return
    Shipment.objects.create(order_id=command.order_id, destination=command.destination)
    events.publish(OrderFulfilled(command.order_id))


@asynchronous("orders")
@command_handler
def cancel_order(command: CancelOrder) -> None:
    Cancellation.objects.create(order_id=command.order_id, reason=command.reason)


@asynchronous("orders")
@command_handler
def refund_payment(command: RefundPayment) -> None:
    Refund.objects.create(order_id=command.order_id, reason=command.reason)


@asynchronous("orders")
@command_handler
def notify_customer(command: NotifyCustomer) -> None:
    Notification.objects.create(order_id=command.order_id, text=command.text)


# -- the pipeline: validate (db) → reserve (db_other) → notify (db) ----------


@asynchronous("db")
@command_handler(output_channel="orders.reserve")
def validate_order(command: ProcessOrder) -> ValidatedOrder | None:
    if command.quantity <= 0:
        return None  # ends the pipeline
    Validation.objects.create(order_id=command.order_id)
    return ValidatedOrder(command.order_id, command.quantity, command.hold)


@asynchronous("db_other")
@internal_handler("orders.reserve", output_channel="orders.notify")
def reserve_stock(order: ValidatedOrder) -> ReservedOrder:
    if order.quantity > 100:
        raise RuntimeError(f"only 100 in stock, {order.quantity} asked for")
    Reservation.objects.create(order_id=order.order_id, quantity=order.quantity)
    hold(order.hold)  # a test kills the worker here
    return ReservedOrder(order.order_id, order.quantity)


@asynchronous("db")
@internal_handler("orders.notify")
def notify_reserved(order: ReservedOrder) -> None:
    Notification.objects.create(order_id=order.order_id, text=f"{order.quantity} reserved")
