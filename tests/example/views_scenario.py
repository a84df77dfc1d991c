"""The example's HTTP API checked with Django's test client, inside the example's own settings.

Run by ``test_demo.py::test_views`` as ``python -m tests.example.views_scenario`` with
``DJANGO_SETTINGS_MODULE=example_project.settings`` and a temporary ``ECOTONE_DEMO_VAR_DIR``
(pytest itself runs with ``tests.settings``). Exits non-zero at the first failed check.
"""

from __future__ import annotations

import json
import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from ecotone_django.models import OutboxMessage  # noqa: E402
from ecotone_django.worker import Worker  # noqa: E402
from example_project.accounts.models import TenantMembership  # noqa: E402
from example_project.orders.models import Order  # noqa: E402

ORDER = {"customer": "ada", "amount": "12.50"}


def post(client: Client, body: Any, tenant: str | None = None, csrf_token: str | None = None) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"X-Tenant": tenant} if tenant else {}
    if csrf_token:
        headers["X-CSRFToken"] = csrf_token
    return client.post("/orders", data, content_type="application/json", headers=headers)


def as_tenant(tenant: str) -> dict[str, str]:
    return {"X-Tenant": tenant}


def expect(response: Any, status: int, what: str) -> Any:
    assert response.status_code == status, f"{what}: expected {status}, got {response.status_code} {response.content!r}"
    return response


def signed_in(username: str, tenant: str | None, *, csrf: bool = False) -> Client:
    user = get_user_model().objects.create(username=username)
    if tenant is not None:
        TenantMembership.objects.create(user=user, tenant=tenant)
    client = Client(enforce_csrf_checks=csrf, HTTP_HOST="localhost")
    client.force_login(user)
    return client


def main() -> None:
    assert settings.SHOP_ALLOW_TENANT_HEADER, "the X-Tenant checks need SHOP_ALLOW_TENANT_HEADER=1 (and DEBUG=1)"
    for alias in settings.DATABASES:
        call_command("migrate", database=alias, interactive=False, verbosity=0)
    anonymous = Client(HTTP_HOST="localhost")

    # Who is asking decides the tenant.
    expect(post(anonymous, ORDER), 401, "no user, no X-Tenant")
    expect(post(anonymous, ORDER, tenant="Big Corp!"), 400, "malformed X-Tenant")
    with override_settings(SHOP_ALLOW_TENANT_HEADER=False):
        expect(post(anonymous, ORDER, tenant="acme"), 401, "X-Tenant without SHOP_ALLOW_TENANT_HEADER")
    expect(post(signed_in("nobody", None), ORDER), 403, "a user of no tenant")

    # The body is validated before anything is sent.
    for bad in ("not json", [ORDER], {"amount": "1"}, {**ORDER, "amount": "abc"}, {**ORDER, "amount": "-1"}):
        expect(post(anonymous, bad, tenant="acme"), 400, f"bad body {bad!r}")
    for bad_amount in ("1.234", True, 1.5, "NaN"):
        expect(post(anonymous, {**ORDER, "amount": bad_amount}, tenant="acme"), 400, f"amount {bad_amount!r}")
    expect(post(anonymous, {**ORDER, "order_id": "../x"}, tenant="acme"), 400, "bad order_id")
    assert not any(OutboxMessage.objects.using(a).exists() for a in settings.DATABASES), "a refused order was sent"

    # A premium tenant's order waits in its own database; 202 + Location.
    premium = expect(post(anonymous, ORDER, tenant="big_corp"), 202, "X-Tenant big_corp")
    premium_id = premium.json()["order_id"]
    assert premium["Location"] == f"/orders/{premium_id}", premium["Location"]
    assert OutboxMessage.objects.using("big_corp").filter(tenant="big_corp").count() == 1
    assert not OutboxMessage.objects.using("default").exists()

    # A signed-in user's POST needs the CSRF token; a retried POST with the same order id is one order.
    buyer = signed_in("buyer", "acme", csrf=True)
    expect(post(buyer, {**ORDER, "order_id": "acme-1"}), 403, "session POST without CSRF token")
    token = "abcdefghijklmnopqrstuvwxyzABCDEF"
    buyer.cookies["csrftoken"] = token
    for _ in range(2):
        expect(post(buyer, {**ORDER, "order_id": "acme-1"}, csrf_token=token), 202, "session POST with token")
    expect(buyer.get("/orders/acme-1"), 404, "an order no worker has taken yet")

    stats = Worker(["orders"], stop_when_empty=True, relay=False).run()
    assert stats.dead == 0, stats

    assert Order.objects.using("default").filter(order_id="acme-1").count() == 1, "the retried POST made two orders"
    order = expect(buyer.get("/orders/acme-1"), 200, "GET own order").json()
    assert (order["tenant"], order["stage"], order["amount"]) == ("acme", "completed", "12.50"), order
    expect(anonymous.get("/orders/acme-1", headers=as_tenant("globex")), 404, "another tenant on the shared database")
    expect(anonymous.get(f"/orders/{premium_id}", headers=as_tenant("acme")), 404, "another tenant's database")
    order = expect(
        anonymous.get(f"/orders/{premium_id}", headers=as_tenant("big_corp")), 200, "GET premium order"
    ).json()
    assert order["stage"] == "completed", order
    assert Order.objects.using("big_corp").filter(order_id=premium_id).exists()
    assert not Order.objects.using("default").filter(order_id=premium_id).exists()
    print("every view check passed")


if __name__ == "__main__":
    main()
