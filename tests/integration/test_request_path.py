"""The request path: a view's rows and messages commit or roll back together on the tenant's database.

Real requests through Django's test client and ``TenantMiddleware``, real databases (``big_corp`` is a
database of its own), and a real ``consume_channel`` process that shows what was delivered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

from ecotone_django import command_bus
from ecotone_django.exceptions import TenantTransactionError
from ecotone_django.models import OutboxMessage
from ecotone_django.tenancy import current_alias, tenant_atomic
from tests.helpers.services import require
from tests.integration.conftest import ALL_DATABASES, WorkerFactory, stats_of
from tests.testapp.messaging import RecordAsync, RecordOnOrders
from tests.testapp.models import Record


def _work(request: HttpRequest, message: type = RecordAsync) -> HttpResponse:
    name = request.POST["name"]
    Record.objects.create(name=name, handler="view")
    command_bus.send(message(name))  # the tenant header comes from the middleware
    if request.POST.get("fail"):
        raise RuntimeError("the view failed after sending")
    return HttpResponse(current_alias(), status=202)


@tenant_atomic
def tenant_view(request: HttpRequest) -> HttpResponse:
    return _work(request, RecordOnOrders if request.POST.get("broker") else RecordAsync)


def default_atomic_view(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():  # the mistake: a transaction on "default" for a tenant with its own database
        return _work(request)


def both_view(request: HttpRequest) -> HttpResponse:
    with transaction.atomic(), tenant_atomic():
        return _work(request)


def plain_view(request: HttpRequest) -> HttpResponse:
    return _work(request)


urlpatterns = [
    path("tenant", tenant_view),
    path("default-atomic", default_atomic_view),
    path("both", both_view),
    path("plain", plain_view),
]

MIDDLEWARE = [*settings.MIDDLEWARE, "ecotone_django.middleware.TenantMiddleware"]


def request_settings(**extra: Any) -> Any:
    request = {"RESOLVER": "ecotone_django.middleware.tenant_from_header", "HEADER": "X-Tenant", **extra}
    tenancy = {**settings.ECOTONE["TENANCY"], "REQUEST": request}
    return override_settings(
        ROOT_URLCONF=__name__, MIDDLEWARE=MIDDLEWARE, ECOTONE={**settings.ECOTONE, "TENANCY": tenancy}
    )


@pytest.fixture
def client() -> Iterator[Client]:
    with request_settings():
        yield Client(raise_request_exception=False)


def post(client: Client, url: str, tenant: str, **data: str) -> Any:
    return client.post(url, data, headers={"X-Tenant": tenant})


def stored() -> dict[str, list[str]]:
    return {
        alias: sorted(
            [f"record:{r.name}" for r in Record.objects.using(alias).all()]
            + [f"outbox:{r.tenant}" for r in OutboxMessage.objects.using(alias).all()]
        )
        for alias in ALL_DATABASES
    }


def delivered(worker: WorkerFactory, channel: str) -> int:
    proc = worker(channel, "--no-relay", "--stop-when-empty")
    assert proc.wait(60) == 0, proc.output_tail()
    return stats_of(proc.output())["handled"]


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_a_view_that_rolls_back_never_delivers_its_message(client: Client, worker: WorkerFactory) -> None:
    assert post(client, "/tenant", "big_corp", name="kept").status_code == 202
    assert post(client, "/tenant", "big_corp", name="lost", fail="1").status_code == 500
    assert stored() == {"default": [], "big_corp": ["outbox:big_corp", "record:kept"], "enterprise_x": []}

    assert delivered(worker, "db") == 1
    handled = sorted(Record.objects.using("big_corp").values_list("name", "handler"))
    assert handled == [("kept", "record_async"), ("kept", "view")]  # "lost": neither its row nor its message


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_a_broker_message_of_a_view_that_rolls_back_is_never_published(client: Client, worker: WorkerFactory) -> None:
    require("rabbitmq")
    assert post(client, "/tenant", "big_corp", name="lost", broker="1", fail="1").status_code == 500
    assert post(client, "/tenant", "big_corp", name="kept", broker="1").status_code == 202
    assert delivered(worker, "rabbit") == 1
    assert sorted(Record.objects.using("big_corp").values_list("name", flat=True)) == ["kept", "kept"]


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
@pytest.mark.parametrize("internals", ["auto", "avoid"])  # Django's private transaction state, or the public API
def test_a_send_in_a_transaction_on_another_database_is_refused_naming_both(client: Client, internals: str) -> None:
    strict = Client(raise_request_exception=True)
    ecotone = {**settings.ECOTONE, "TRANSACTION_INTERNALS": internals}
    with pytest.raises(TenantTransactionError) as caught, override_settings(ECOTONE=ecotone):
        post(strict, "/default-atomic", "big_corp", name="escaping")
    text = str(caught.value)
    assert "stored in database 'big_corp', but the open transaction is on 'default'" in text
    assert "tenant_atomic()" in text and "transaction.atomic(using='big_corp')" in text
    # The view's own row went to big_corp in autocommit (that is the mistake); its message went nowhere.
    assert stored() == {"default": [], "big_corp": ["record:escaping"], "enterprise_x": []}


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
@pytest.mark.parametrize(
    ("url", "tenant", "alias"),
    [
        ("/default-atomic", "acme", "default"),  # a shared tenant: its database is the one in the transaction
        ("/both", "big_corp", "big_corp"),  # the tenant's database has a transaction of its own
        ("/plain", "big_corp", "big_corp"),  # no transaction anywhere: the send commits on its own
    ],
)
def test_a_send_whose_tenant_database_follows_the_transaction_is_allowed(
    client: Client, url: str, tenant: str, alias: str
) -> None:
    assert post(client, url, tenant, name="ok").status_code == 202
    assert stored()[alias] == [f"outbox:{tenant}", "record:ok"]


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_atomic_requests_on_the_tenants_database(worker: WorkerFactory) -> None:
    with request_settings(ATOMIC=True):
        client = Client(raise_request_exception=False)
        assert post(client, "/plain", "big_corp", name="lost", fail="1").status_code == 500
        assert post(client, "/plain", "enterprise_x", name="kept").status_code == 202
    assert stored() == {"default": [], "big_corp": [], "enterprise_x": ["outbox:enterprise_x", "record:kept"]}
    assert delivered(worker, "db") == 1
