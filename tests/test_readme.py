"""Every ``python`` code block of README.md runs here, in order, against the real library.

The settings block is validated by the same parser Django uses; the story
block is executed as a module whose handlers form the registry; the view block
sends through that registry; then the harness plays the seed's scenarios.
"""

import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import RequestFactory, override_settings

from ecotone_django.conf import parse_config
from ecotone_django.declarations import command_handler
from ecotone_django.handlers import build_handler
from ecotone_django.middleware import TenantMiddleware
from ecotone_django.registry import Registry
from ecotone_django.testing import MessagingHarness, use_registry
from tests.testapp.models import Record

README = Path(__file__).resolve().parent.parent / "README.md"
MODULE = "readme_story"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


#: The blocks in README order, each named by a text only it contains.
BLOCKS = {
    "settings": '"orders_premium": {"BACKEND"',
    "installation": '"ecotone_django",  # its tables',
    "celery": "app = Celery(",
    "story": "@saga",
    "view": "def place_order_view",
    "tenant_views": "def place_order(request)",
    "testing": "def test_",
}


def block(name: str) -> str:
    return python_blocks()[list(BLOCKS).index(name)]


def test_readme_has_the_blocks_this_test_runs() -> None:
    blocks = python_blocks()
    assert len(blocks) == len(BLOCKS), "a new python block in README.md needs a place in tests/test_readme.py"
    for (name, marker), text in zip(BLOCKS.items(), blocks, strict=True):
        assert marker in text, f"block {name!r} of README.md should contain {marker!r}"


def test_the_installation_block_is_a_valid_configuration() -> None:
    namespace: dict[str, Any] = {}
    exec(block("installation"), namespace)
    assert "ecotone_django" in namespace["INSTALLED_APPS"]
    assert namespace["DATABASE_ROUTERS"] == ["ecotone_django.routers.TenantRouter"]
    assert namespace["MIDDLEWARE"][-1] == "ecotone_django.middleware.TenantMiddleware"
    config = parse_config(namespace["ECOTONE"])
    assert config.alias_for("big_corp") == "big_corp" and config.handler_modules == ("billing.handlers",)


def test_the_celery_block_makes_an_app_configured_from_django_settings() -> None:
    from celery import Celery

    namespace: dict[str, Any] = {}
    exec(block("celery"), namespace)
    app = namespace["app"]
    assert isinstance(app, Celery) and app.main == "myproject"
    assert app.conf.broker_url == settings.CELERY_BROKER_URL  # read from the Django settings (CELERY_ namespace)


def test_the_settings_block_is_a_valid_configuration() -> None:
    namespace: dict[str, Any] = {}
    exec(block("settings"), namespace)
    config = parse_config(namespace["ECOTONE"])
    assert namespace["DATABASE_ROUTERS"] == ["ecotone_django.routers.TenantRouter"]
    assert config.alias_for("big_corp") == "big_corp" and config.alias_for("acme") == "default"
    assert set(config.channels) == {"orders_shared", "orders_premium", "orders"}


@pytest.fixture
def story() -> Iterator[types.ModuleType]:
    module = types.ModuleType(MODULE)
    sys.modules[MODULE] = module
    try:
        exec(compile(block("story"), f"{MODULE}.py", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[MODULE]


@dataclass
class Sent:
    """The commands the story sends on, handled here so the flow can be observed."""

    messages: list[Any]


@pytest.fixture
def harness(story: types.ModuleType) -> Iterator[tuple[MessagingHarness, Sent]]:
    sent = Sent([])

    @command_handler
    def fulfil(command: story.FulfillOrder) -> None:
        sent.messages.append(command)

    @command_handler
    def cancel(command: story.CancelOrder) -> None:
        sent.messages.append(command)

    @command_handler
    def refund(command: story.RefundPayment) -> None:
        sent.messages.append(command)

    registry = Registry.from_modules([story])
    for func in (fulfil, cancel, refund):
        registry.add(build_handler(func, module=__name__, qualname=func.__name__, owner=None))
    settings_namespace: dict[str, Any] = {}
    exec(block("settings"), settings_namespace)
    ecotone = dict(settings_namespace["ECOTONE"])
    ecotone["TENANCY"] = {**ecotone["TENANCY"], "TENANT_APPS": []}
    ecotone.pop("CELERY_APP")
    with override_settings(ECOTONE=ecotone), use_registry(registry), MessagingHarness() as h:
        yield h, sent


DATABASES = ["default", "big_corp", "enterprise_x"]


@pytest.mark.django_db(databases=DATABASES)
def test_the_view_block_sends_on_the_tenants_channel(story: types.ModuleType, harness: Any) -> None:
    h, _ = harness
    namespace: dict[str, Any] = {"PlaceOrder": story.PlaceOrder, "Decimal": story.Decimal}
    exec(block("view"), namespace)
    request = types.SimpleNamespace(user=types.SimpleNamespace(profile=types.SimpleNamespace(tenant="big_corp")))
    namespace["place_order_view"](request)
    [pending] = h.pending()
    assert (pending.channel, pending._state.db, pending.tenant) == ("orders_premium", "big_corp", "big_corp")
    assert h.run() == 1 and not h.pending()


@pytest.mark.django_db(databases=DATABASES)
def test_the_saga_block_times_out_an_unpaid_order(story: types.ModuleType, harness: Any) -> None:
    h, sent = harness
    h.publish(story.OrderPlaced("o-1", story.Decimal("19.90")), metadata={"tenant": "acme"})
    h.run()
    assert h.load_saga(story.OrderSaga, "o-1", tenant="acme").stage is story.OrderStage.PLACED_AWAITING_PAYMENT
    h.advance(timedelta(minutes=29))
    assert sent.messages == []
    h.advance(timedelta(minutes=2))
    assert sent.messages == [story.CancelOrder("o-1", reason="payment timed out")]
    assert h.load_saga(story.OrderSaga, "o-1", tenant="acme").stage is story.OrderStage.CANCELLED


@pytest.mark.django_db(databases=DATABASES)
def test_the_saga_block_refunds_when_fulfilment_fails(story: types.ModuleType, harness: Any) -> None:
    h, sent = harness
    tenant = {"tenant": "enterprise_x"}
    h.publish(story.OrderPlaced("o-2", story.Decimal("5")), metadata=tenant)
    h.publish(story.PaymentCaptured("o-2"), metadata=tenant)
    h.publish(story.FulfillmentFailed("o-2", "carrier lost it"), metadata=tenant)
    h.advance(timedelta(hours=1))  # the timeout falls due after completion: ignored
    assert sent.messages == [story.FulfillOrder("o-2"), story.RefundPayment("o-2", "carrier lost it")]
    saga = h.load_saga(story.OrderSaga, "o-2", tenant="enterprise_x")
    assert saga.stage is story.OrderStage.COMPENSATED_REFUND


@pytest.mark.django_db(databases=DATABASES)
def test_the_testing_block_passes(story: types.ModuleType, harness: Any) -> None:
    h, sent = harness
    namespace = dict(story.__dict__)
    exec(block("testing"), namespace)
    namespace["test_unpaid_order_is_cancelled"](h)
    assert sent.messages == [story.CancelOrder("o-1", reason="payment timed out")]


@pytest.fixture
def tenant_views(story: types.ModuleType) -> Iterator[tuple[MessagingHarness, dict[str, Any]]]:
    settings_namespace: dict[str, Any] = {}
    exec(block("settings"), settings_namespace)
    ecotone = dict(settings_namespace["ECOTONE"])
    ecotone["TENANCY"] = {**ecotone["TENANCY"], "TENANT_APPS": ["testapp"]}
    ecotone.pop("CELERY_APP")
    namespace: dict[str, Any] = {"Order": Record, "PlaceOrder": story.PlaceOrder, "Decimal": story.Decimal}
    exec(block("tenant_views"), namespace)
    with override_settings(ECOTONE=ecotone), use_registry(Registry.from_modules([story])), MessagingHarness() as h:
        yield h, namespace


@pytest.mark.django_db(databases=DATABASES)
def test_the_tenant_views_block_commits_or_rolls_back_rows_and_message_together(tenant_views: Any) -> None:
    h, namespace = tenant_views
    view = TenantMiddleware(namespace["place_order"])
    user = types.SimpleNamespace(is_authenticated=True, tenant="big_corp")

    def post(data: dict[str, str]) -> Any:
        request = RequestFactory().post("/orders", data)
        request.user = user
        return view(request)

    assert post({"order_id": "o-1", "amount": "19.90"}).status_code == 202
    with pytest.raises(ValueError, match="rolled back"):
        post({"order_id": "o-2", "amount": "5", "fail": "1"})
    assert list(Record.objects.using("big_corp").values_list("name", flat=True)) == ["o-1"]
    assert not Record.objects.using("default").exists()
    [pending] = h.pending()
    assert (pending._state.db, pending.tenant, pending.channel) == ("big_corp", "big_corp", "orders_premium")
    assert [m.message.order_id for m in h.recorded_commands] == ["o-1", "o-2"]  # o-2 was sent, then rolled back
