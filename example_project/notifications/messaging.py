"""Notification handlers: tell the customer how their order ended."""

from __future__ import annotations

import logging

from django.utils import timezone

from ecotone_django import asynchronous, command_handler

from .messages import SendNotification
from .models import Notification

logger = logging.getLogger("example_project.notifications")


@asynchronous("orders")
@command_handler
def send_notification(command: SendNotification) -> None:
    Notification.objects.create(
        order_id=command.order_id,
        customer=command.customer,
        kind=command.kind.value,
        text=command.text[:255],
        sent_at=timezone.now(),
    )
    logger.info("to %s: %s", command.customer, command.text)
