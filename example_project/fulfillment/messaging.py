"""Fulfillment handlers: hand the parcel to the carrier, report the outcome as an event."""

from __future__ import annotations

from django.utils import timezone

from ecotone_django import EventBus, asynchronous, command_handler

from . import carrier
from .messages import FulfillmentFailed, FulfillOrder, OrderShipped
from .models import Shipment


@asynchronous("orders")
@command_handler
def fulfill_order(command: FulfillOrder, events: EventBus) -> None:
    tracking_number = carrier.ship(command.order_id)
    if tracking_number is None:
        events.publish(FulfillmentFailed(command.order_id, reason="the carrier could not collect the parcel"))
        return
    Shipment.objects.create(order_id=command.order_id, tracking_number=tracking_number, shipped_at=timezone.now())
    events.publish(OrderShipped(command.order_id, tracking_number))
