"""``TenantMiddleware``: each request runs in its tenant's context.

Add ``"ecotone_django.middleware.TenantMiddleware"`` to ``MIDDLEWARE``, after Django's
``AuthenticationMiddleware``. For each request it asks a resolver — a callable taking the request and
returning a tenant name or ``None`` — and runs the rest of the request in
:func:`~ecotone_django.tenancy.tenant_context`: the router sends tenant apps' queries to the tenant's
database, sends carry the tenant header without ``metadata={"tenant": ...}``, and
:func:`~ecotone_django.tenancy.tenant_atomic` opens its transaction there. ``request.tenant`` holds the
name. ``None`` (no tenant) leaves the request on the default connection, where a send is refused with
``MissingTenantError``.

``ECOTONE["TENANCY"]["REQUEST"]`` configures it:

- ``RESOLVER``: a dotted path; default :func:`tenant_from_user`. Built-ins: :func:`tenant_from_user`,
  :func:`tenant_from_subdomain`, :func:`tenant_from_header`.
- ``USER_ATTRIBUTE``: for :func:`tenant_from_user`, a dotted attribute path on ``request.user``
  (default ``"tenant"``; e.g. ``"profile.tenant"``).
- ``DOMAIN``: for :func:`tenant_from_subdomain`, the parent domain (``"shop.example.com"``).
- ``HEADER``: for :func:`tenant_from_header`, the HTTP header (``"X-Tenant"``). It is off until set:
  a header is whatever the client says it is, so use it only behind a proxy that sets it.
- ``ATOMIC``: ``True`` runs each request in :func:`~ecotone_django.tenancy.tenant_atomic` — the
  tenant's database's ``ATOMIC_REQUESTS`` — rolled back when the view raises.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponseBase
from django.utils.module_loading import import_string

from .conf import RequestConfig, get_config
from .exceptions import ConfigurationError
from .tenancy import current_alias, tenant_atomic, tenant_context

__all__ = ["TenantMiddleware", "tenant_from_header", "tenant_from_subdomain", "tenant_from_user"]

Resolver = Callable[[HttpRequest], str | None]


def _request_config() -> RequestConfig:
    tenancy = get_config().tenancy
    if tenancy is None:
        raise ConfigurationError("TenantMiddleware needs ECOTONE['TENANCY']")
    return tenancy.request


def tenant_from_user(request: HttpRequest) -> str | None:
    """The signed-in user's tenant: ``request.user.<USER_ATTRIBUTE>`` (dotted), ``None`` when anonymous."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    value: Any = user
    for name in _request_config().user_attribute.split("."):
        value = getattr(value, name, None)
        if value is None:
            return None
    return str(value) or None


def tenant_from_subdomain(request: HttpRequest) -> str | None:
    """``acme`` for ``acme.<DOMAIN>``; ``None`` for the bare domain, deeper names and other hosts."""
    domain = _request_config().domain
    if domain is None:
        raise ConfigurationError(
            "tenant_from_subdomain needs ECOTONE['TENANCY']['REQUEST']['DOMAIN'], the parent domain of the tenants"
        )
    host = request.get_host().rsplit(":", 1)[0].lower().rstrip(".")
    suffix = "." + domain.lower().strip(".")
    label = host[: -len(suffix)] if host.endswith(suffix) else ""
    return label if label and "." not in label else None


def tenant_from_header(request: HttpRequest) -> str | None:
    """The value of the HTTP header ``REQUEST["HEADER"]``; refused while that setting is unset."""
    header = _request_config().header
    if header is None:
        raise ConfigurationError(
            "tenant_from_header is off: set ECOTONE['TENANCY']['REQUEST']['HEADER'] to the HTTP header a trusted "
            "proxy sets (a client can send any header)"
        )
    return request.headers.get(header) or None


def resolver() -> Resolver:
    """The configured resolver (``REQUEST["RESOLVER"]``)."""
    path = _request_config().resolver
    try:
        found: Resolver = import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"ECOTONE['TENANCY']['REQUEST']['RESOLVER'] {path!r} cannot be imported: {exc}"
        ) from exc
    return found


class TenantMiddleware:
    """Run each request in its tenant's context (and, with ``REQUEST["ATOMIC"]``, its transaction)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if get_config().tenancy is None:
            return self.get_response(request)
        tenant = resolver()(request)
        request.tenant = tenant  # type: ignore[attr-defined]
        with ExitStack() as stack:
            stack.enter_context(tenant_context(tenant))
            if _request_config().atomic:
                stack.enter_context(tenant_atomic())
            return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        """A view that raised: its request's tenant transaction rolls back (as with ``ATOMIC_REQUESTS``)."""
        if get_config().tenancy is not None and _request_config().atomic:
            transaction.set_rollback(True, using=current_alias())
