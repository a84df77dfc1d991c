"""Two views of a shop: place an order, report a captured payment (the telemetry tests call them)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from django.http import HttpRequest, HttpResponse
from django.urls import path

from ecotone_django import command_bus, event_bus
from tests.sagaapp.messages import PaymentCaptured, PlaceOrder


def place_order(request: HttpRequest, tenant: str, order_id: str, destination: str) -> HttpResponse:
    command_bus.send(PlaceOrder(order_id, Decimal("5.00"), destination), metadata={"tenant": tenant})
    return HttpResponse(status=202)


def payment_captured(request: HttpRequest, tenant: str, order_id: str) -> HttpResponse:
    event_bus.publish(PaymentCaptured(order_id, captured_at=datetime.now(UTC)), metadata={"tenant": tenant})
    return HttpResponse(status=202)


urlpatterns = [
    path("orders/<str:tenant>/<str:order_id>/<str:destination>", place_order),
    path("payments/<str:tenant>/<str:order_id>", payment_captured),
]
