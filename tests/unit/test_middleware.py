"""TenantMiddleware's resolvers: the signed-in user, the subdomain, and a header only when enabled."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from ecotone_django.exceptions import ConfigurationError
from ecotone_django.middleware import TenantMiddleware, tenant_from_header, tenant_from_subdomain, tenant_from_user
from ecotone_django.tenancy import current_alias, current_tenant


def configured(**request: Any) -> Any:
    tenancy = {**settings.ECOTONE["TENANCY"], "REQUEST": request}
    return override_settings(ECOTONE={**settings.ECOTONE, "TENANCY": tenancy})


def signed_in(**attributes: Any) -> HttpRequest:
    request = RequestFactory().get("/")
    request.user = types.SimpleNamespace(is_authenticated=True, **attributes)  # type: ignore[assignment]
    return request


@pytest.fixture
def seen() -> Iterator[list[tuple[str | None, str]]]:
    yield []


def middleware(seen: list[tuple[str | None, str]]) -> TenantMiddleware:
    def view(request: HttpRequest) -> HttpResponse:
        seen.append((current_tenant(), current_alias()))
        return HttpResponse("ok")

    return TenantMiddleware(view)


def test_the_default_resolver_takes_the_signed_in_users_tenant(seen: list[Any]) -> None:
    request = signed_in(tenant="big_corp")
    assert middleware(seen)(request).status_code == 200
    assert seen == [("big_corp", "big_corp")] and request.tenant == "big_corp"  # type: ignore[attr-defined]
    assert current_tenant() is None  # reset after the request


def test_user_attribute_may_be_a_dotted_path_and_anonymous_users_have_no_tenant(seen: list[Any]) -> None:
    profile = types.SimpleNamespace(tenant="enterprise_x")
    with configured(USER_ATTRIBUTE="profile.tenant"):
        assert tenant_from_user(signed_in(profile=profile)) == "enterprise_x"
        assert tenant_from_user(signed_in(profile=None)) is None
        anonymous = RequestFactory().get("/")
        anonymous.user = types.SimpleNamespace(is_authenticated=False)  # type: ignore[assignment]
        assert tenant_from_user(anonymous) is None
        middleware(seen)(anonymous)
    assert seen == [(None, "default")]


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("acme.shop.example.com", "acme"),
        ("big-corp.shop.example.com:8000", "big-corp"),
        ("ACME.Shop.Example.com", "acme"),
        ("shop.example.com", None),
        ("a.b.shop.example.com", None),
        ("acme.elsewhere.com", None),
    ],
)
def test_the_subdomain_resolver_takes_one_label_under_domain(host: str, tenant: str | None) -> None:
    request = RequestFactory().get("/", HTTP_HOST=host)
    subdomains = configured(RESOLVER="ecotone_django.middleware.tenant_from_subdomain", DOMAIN="shop.example.com")
    with subdomains, override_settings(ALLOWED_HOSTS=["*"]):
        assert tenant_from_subdomain(request) == tenant


def test_the_subdomain_resolver_needs_its_domain() -> None:
    no_domain = configured(RESOLVER="ecotone_django.middleware.tenant_from_subdomain")
    refused = pytest.raises(ConfigurationError, match=r"needs ECOTONE\['TENANCY'\]\['REQUEST'\]\['DOMAIN'\]")
    with no_domain, override_settings(ALLOWED_HOSTS=["*"]), refused:
        tenant_from_subdomain(RequestFactory().get("/", HTTP_HOST="acme.shop.example.com"))


def test_the_header_resolver_is_off_until_the_header_is_named(seen: list[Any]) -> None:
    request = RequestFactory().get("/", HTTP_X_TENANT="big_corp")
    off = configured(RESOLVER="ecotone_django.middleware.tenant_from_header")
    with off, pytest.raises(ConfigurationError, match="tenant_from_header is off"):
        middleware(seen)(request)
    with configured(RESOLVER="ecotone_django.middleware.tenant_from_header", HEADER="X-Tenant"):
        assert tenant_from_header(request) == "big_corp"
        middleware(seen)(request)
    assert seen == [("big_corp", "big_corp")]


def test_a_custom_resolver_is_a_dotted_path(seen: list[Any]) -> None:
    with configured(RESOLVER="tests.unit.test_middleware.always_enterprise_x"):
        middleware(seen)(RequestFactory().get("/"))
    assert seen == [("enterprise_x", "enterprise_x")]
    missing = configured(RESOLVER="tests.unit.test_middleware.no_such_resolver")
    with (
        missing,
        pytest.raises(ConfigurationError, match=r"RESOLVER.*'tests\.unit\.test_middleware\.no_such_resolver'"),
    ):
        middleware(seen)(RequestFactory().get("/"))


def always_enterprise_x(request: HttpRequest) -> str:
    return "enterprise_x"


@pytest.mark.parametrize(
    ("request_settings", "message"),
    [
        ({"RESOLVERS": "x"}, "unknown key(s) 'RESOLVERS' (did you mean 'RESOLVER'?)"),
        ({"HEADER": ""}, "['HEADER'] must be a non-empty string"),
        ({"ATOMIC": "yes"}, "['ATOMIC'] must be True or False"),
    ],
)
def test_request_settings_are_validated(request_settings: dict[str, Any], message: str) -> None:
    from ecotone_django.conf import parse_config

    with pytest.raises(ConfigurationError) as caught:
        parse_config({"TENANCY": {"REQUEST": request_settings}})
    assert message in str(caught.value)
