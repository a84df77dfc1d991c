"""Payment handlers. They run on the ``orders`` channel; which queue and database that is for a
tenant is configuration (settings.ECOTONE), never decided here."""

from __future__ import annotations

import logging

from django.utils import timezone

from ecotone_django import CommandBus, EventBus, asynchronous, command_handler

from . import gateway
from .messages import ChargeCustomer, PaymentCaptured, PaymentRefunded, RefundPayment, SettlePayment
from .models import Charge, Refund

logger = logging.getLogger("example_project.payments")


@asynchronous("orders")
@command_handler
def charge_customer(command: ChargeCustomer, bus: CommandBus, events: EventBus) -> None:
    fate = gateway.fate(command.order_id)
    if fate is gateway.Fate.NEVER:
        logger.info("the gateway never confirms the payment of order %s", command.order_id)
    elif fate is gateway.Fate.LATE:
        # The gateway's confirmation (a webhook in real life) arrives after the shop stopped waiting.
        settle = SettlePayment(command.order_id, command.customer, command.amount)
        bus.send(settle, metadata={"delay": gateway.late_by()})
    else:
        _capture(command, events)


@asynchronous("orders")
@command_handler
def settle_payment(command: SettlePayment, events: EventBus) -> None:
    _capture(command, events)


def _capture(command: ChargeCustomer | SettlePayment, events: EventBus) -> None:
    charge = Charge.objects.create(
        order_id=command.order_id,
        charge_id=gateway.charge_id(command.order_id),
        customer=command.customer,
        amount=command.amount,
        captured_at=timezone.now(),
    )
    events.publish(PaymentCaptured(command.order_id, charge.charge_id, charge.amount))


@asynchronous("orders")
@command_handler
def refund_payment(command: RefundPayment, events: EventBus) -> None:
    charge = Charge.objects.get(order_id=command.order_id)
    Refund.objects.create(
        charge=charge,
        order_id=command.order_id,
        amount=charge.amount,
        reason=command.reason[:255],
        refunded_at=timezone.now(),
    )
    events.publish(PaymentRefunded(command.order_id, charge.amount))
