"""The shop's HTTP API.

``POST /orders`` with ``{"customer": "...", "amount": "12.50"}`` (and optionally your own
``"order_id"``, which makes a retried POST place one order) → ``202 {"order_id": ...}``.
``GET /orders/<id>`` → the order and its stage.

The tenant is the signed-in user's (accounts.TenantMembership). For local use only, with
``SHOP_ALLOW_TENANT_HEADER=1`` (and ``DEBUG=1``), an anonymous request may name it in an ``X-Tenant``
header instead (``curl -H 'X-Tenant: acme' ...``).
"""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from ecotone_django import command_bus, query_bus
from example_project.accounts.models import TenantMembership

from .messages import GetOrder, PlaceOrder

ORDER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_AMOUNT = Decimal("1000000")


class Refused(Exception):
    """A request the API answers with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _tenant(request: HttpRequest) -> tuple[str, bool]:
    """``(tenant, from_session)``: the signed-in user's tenant, else (local use only) the X-Tenant header."""
    if request.user.is_authenticated:
        membership = TenantMembership.objects.filter(user_id=request.user.pk).first()
        if membership is None:
            raise Refused(403, "your account belongs to no tenant")
        return membership.tenant, True
    header = request.headers.get("X-Tenant")
    allowed = settings.SHOP_ALLOW_TENANT_HEADER
    if allowed and header:
        if not TENANT.match(header):
            raise Refused(400, "X-Tenant must be lowercase letters, digits, _ and - (at most 64)")
        return header, False
    raise Refused(401, "sign in" + (" or send an X-Tenant header" if allowed else ""))


def _check_csrf(request: HttpRequest) -> None:
    """Session-authenticated writes need the CSRF token (the X-Tenant path carries no ambient credentials)."""
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    if check.process_view(request, lambda r: HttpResponse(), (), {}) is not None:
        raise Refused(403, "CSRF check failed: send the csrftoken cookie's value in an X-CSRFToken header")


def _order_from(body: bytes) -> tuple[str, str, Decimal]:
    try:
        data: Any = json.loads(body or b"null")
    except ValueError:
        raise Refused(400, "the body must be JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, 'the body must be a JSON object like {"customer": "ada", "amount": "12.50"}')
    customer = data.get("customer")
    if not isinstance(customer, str) or not 0 < len(customer.strip()) <= 100:
        raise Refused(400, "customer must be a non-empty string of at most 100 characters")
    raw_amount = data.get("amount")
    if isinstance(raw_amount, bool) or not isinstance(raw_amount, str | int):
        raise Refused(400, 'amount must be a decimal string like "12.50" (or an integer)')
    try:
        amount = Decimal(raw_amount)
    except InvalidOperation:
        raise Refused(400, f"amount {raw_amount!r} is not a number") from None
    if not (amount.is_finite() and 0 < amount < MAX_AMOUNT) or amount != amount.quantize(Decimal("0.01")):
        raise Refused(400, f"amount must be positive, below {MAX_AMOUNT} and have at most two decimals")
    order_id = data.get("order_id", uuid.uuid4().hex)
    if not isinstance(order_id, str) or not ORDER_ID.match(order_id):
        raise Refused(400, "order_id must be 1-64 letters, digits, '.', '_' or '-'")
    return order_id, customer.strip(), amount.quantize(Decimal("0.01"))


@csrf_exempt  # enforced in _check_csrf for session users; the local X-Tenant path has no cookies to ride on
@require_POST
def orders(request: HttpRequest) -> HttpResponse:
    try:
        tenant, from_session = _tenant(request)
        if from_session:
            _check_csrf(request)
        order_id, customer, amount = _order_from(request.body)
    except Refused as refused:
        return JsonResponse({"error": refused.message}, status=refused.status)
    # The tenant header drives every downstream decision: which database, which channel, which workers.
    command_bus.send(PlaceOrder(order_id, customer, amount, timezone.now()), metadata={"tenant": tenant})
    url = reverse("order-detail", args=[order_id])
    response = JsonResponse({"order_id": order_id, "tenant": tenant, "url": url}, status=202)
    response["Location"] = url
    return response


@require_GET
def order_detail(request: HttpRequest, order_id: str) -> HttpResponse:
    try:
        tenant, _ = _tenant(request)
    except Refused as refused:
        return JsonResponse({"error": refused.message}, status=refused.status)
    order = query_bus.send(GetOrder(order_id), metadata={"tenant": tenant})
    if order is None:
        # A new order shows up once a worker has taken its PlaceOrder.
        return JsonResponse({"error": f"no order {order_id!r} (yet)"}, status=404)
    return JsonResponse(order)
