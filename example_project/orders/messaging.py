"""Orders: place and cancel orders, answer "where is my order?", and the OrderSaga that coordinates
payment → fulfillment → notification, with a payment timeout and a refund as compensation.

Every handler here is tenant-agnostic. The ``tenant`` header the view put on PlaceOrder travels on
every message that follows; it alone decides the database (settings.ECOTONE["TENANCY"]) and the
queue (the ``orders`` dynamic channel) — no handler looks at a tenant's plan.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from django.conf import settings
from django.utils import timezone

from ecotone_django import (
    CommandBus,
    EventBus,
    Header,
    asynchronous,
    command_handler,
    deduplicated,
    delayed,
    event_handler,
    identifier,
    query_handler,
    saga,
)
from example_project.fulfillment.messages import FulfillmentFailed, FulfillOrder, OrderShipped
from example_project.notifications.messages import NotificationKind, SendNotification
from example_project.payments.messages import ChargeCustomer, PaymentCaptured, PaymentRefunded, RefundPayment

from .messages import CancelOrder, GetOrder, OrderCancelled, OrderPlaced, OrderStage, PlaceOrder
from .models import Cancellation, Order

# A cron-free timeout: the delayed copy of OrderPlaced waits in the tenant's database.
# settings.TIME_SCALE (ECOTONE_DEMO_TIME_SCALE) shrinks it for the demo.
PAYMENT_TIMEOUT = settings.SHOP_PAYMENT_TIMEOUT


# -- the orders context -----------------------------------------------------------------------


@deduplicated("order_id")  # a client that retries its POST with the same order id places one order
@asynchronous("orders")
@command_handler
def place_order(command: PlaceOrder, events: EventBus, tenant: Annotated[str, Header("tenant")]) -> None:
    Order.objects.create(
        order_id=command.order_id,
        tenant=tenant,
        customer=command.customer,
        amount=command.amount,
        stage=OrderStage.PLACED_AWAITING_PAYMENT,
        placed_at=command.placed_at,
        updated_at=timezone.now(),
    )
    events.publish(OrderPlaced(command.order_id, command.customer, command.amount))


@asynchronous("orders")
@command_handler
def cancel_order(command: CancelOrder, events: EventBus) -> None:
    Cancellation.objects.create(order_id=command.order_id, reason=command.reason, cancelled_at=timezone.now())
    events.publish(OrderCancelled(command.order_id, command.reason))


@query_handler
def get_order(query: GetOrder, tenant: Annotated[str, Header("tenant")]) -> dict[str, Any] | None:
    # The database is the tenant's already; on the shared one, other tenants' orders sit beside ours.
    order = Order.objects.filter(order_id=query.order_id, tenant=tenant).first()
    if order is None:
        return None
    return {
        "order_id": order.order_id,
        "tenant": order.tenant,
        "customer": order.customer,
        "amount": str(order.amount),
        "stage": order.stage,
        "placed_at": order.placed_at.isoformat(),
        "finished_at": order.finished_at.isoformat() if order.finished_at else None,
    }


# -- the saga ---------------------------------------------------------------------------------


@saga
class OrderSaga:
    """order → payment → fulfillment → notification, persisted by ``order_id``.

    Its handlers without ``@asynchronous`` run in the transaction of the handler that published
    the event, so a stage change and the commands it sends commit together.
    """

    order_id: str = identifier()
    stage: OrderStage = OrderStage.PLACED_AWAITING_PAYMENT
    customer: str = ""
    amount: Decimal = Decimal(0)
    # A cancelled order that was paid late ends with two messages, in either order: OrderCancelled (the
    # customer is told) and PaymentRefunded. The saga completes only after both — completed earlier, it
    # would ignore the other one (tests/chaos found orders whose cancellation was never notified).
    cancellation_told: bool = False
    late_payment_refunded: bool = False

    @event_handler
    @classmethod
    def start(cls, event: OrderPlaced, bus: CommandBus) -> OrderSaga:
        order = cls()
        order.order_id = event.order_id
        order.customer = event.customer
        order.amount = event.amount
        bus.send(ChargeCustomer(event.order_id, event.customer, event.amount))
        return order

    @delayed(PAYMENT_TIMEOUT)
    @event_handler
    def payment_timeout(self, event: OrderPlaced, bus: CommandBus) -> None:
        if self.stage is OrderStage.PLACED_AWAITING_PAYMENT:
            self._move(OrderStage.CANCELLED)
            bus.send(CancelOrder(self.order_id, reason="payment timed out"))

    @event_handler
    def on_order_cancelled(self, event: OrderCancelled, bus: CommandBus) -> None:
        self._notify(bus, NotificationKind.CANCELLED, f"Order {self.order_id} was cancelled: {event.reason}.")
        self.cancellation_told = True
        if self.late_payment_refunded:
            self.complete()  # type: ignore[attr-defined]
        # Else the saga stays open: a gateway may still settle the payment late, and then it is refunded.

    @event_handler
    def on_payment_captured(self, event: PaymentCaptured, bus: CommandBus) -> None:
        if self.stage is OrderStage.PLACED_AWAITING_PAYMENT:
            self._move(OrderStage.PAID_AWAITING_FULFILLMENT)
            bus.send(FulfillOrder(self.order_id))
        elif self.stage is OrderStage.CANCELLED:
            bus.send(RefundPayment(self.order_id, reason="payment captured after the order was cancelled"))

    @event_handler
    def on_fulfillment_failed(self, event: FulfillmentFailed, bus: CommandBus) -> None:
        # Compensation: the customer paid for something we cannot ship.
        self._move(OrderStage.REFUNDING)
        bus.send(RefundPayment(self.order_id, reason=event.reason))

    @event_handler
    def on_payment_refunded(self, event: PaymentRefunded, bus: CommandBus) -> None:
        if self.stage is OrderStage.REFUNDING:
            self._move(OrderStage.REFUNDED)
            text = f"Order {self.order_id} could not ship; {event.amount} refunded."
            self._notify(bus, NotificationKind.REFUNDED, text)
            self.complete()  # type: ignore[attr-defined]
            return
        self.late_payment_refunded = True  # the order was cancelled before the payment came
        if self.cancellation_told:
            self.complete()  # type: ignore[attr-defined]

    @event_handler
    def on_order_shipped(self, event: OrderShipped, bus: CommandBus) -> None:
        self._move(OrderStage.COMPLETED)
        self._notify(bus, NotificationKind.SHIPPED, f"Order {self.order_id} is on its way: {event.tracking_number}.")
        self.complete()  # type: ignore[attr-defined]

    # -- helpers ----------------------------------------------------------------------------

    def _move(self, stage: OrderStage) -> None:
        """Change stage; the Order row customers read follows in the same transaction."""
        self.stage = stage
        moment = timezone.now()
        Order.objects.filter(order_id=self.order_id).update(
            stage=stage, updated_at=moment, finished_at=moment if stage.is_final else None
        )

    def _notify(self, bus: CommandBus, kind: NotificationKind, text: str) -> None:
        bus.send(SendNotification(self.order_id, self.customer, kind, text))
