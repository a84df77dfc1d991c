"""System checks: configuration mistakes are errors with ids ``ecotone.E001``…, never silent.

- E001  the ECOTONE setting is invalid
- E002  two handlers for one command or query
- E003  a tenant's database alias is missing from DATABASES
- E004  a handler or setting names an unknown channel
- E005  a @delayed handler has no channel (no @asynchronous and no DEFAULT_CHANNEL)
- E006  TENANCY is configured but TenantRouter is not in DATABASE_ROUTERS
- E007  a channel's BACKEND or OPTIONS are invalid
- E008  handlers could not be loaded (a bad declaration)
- E009  an asynchronous query handler (queries answer synchronously)
- E010  @deduplicated or @delayed on a synchronous handler without a channel to run on
- E011  TENANCY["TENANT_APPS"] names an app that is not installed
- E012  the request path: TENANCY["REQUEST"] names a resolver that cannot work, or TenantMiddleware is misplaced
- E020  ECOTONE["SIGNING"] is invalid (wrong shape, an empty secret, CURRENT not in KEYS)
- E021  ECOTONE["ADMIN_DATABASES"] does not name a callable

They are static (they read settings and handler declarations, never a database), so they carry their own tag,
``ecotone``, and not ``database``: Django 6.1 runs database-tagged checks only when ``check --database`` names an
alias, and these must run under plain ``manage.py check``, ``runserver`` and every command that checks first.
Names that resemble a valid one get a "did you mean" (difflib).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from .channels import channels
from .channels.celery import CeleryChannel
from .conf import (
    BUILTIN_RESOLVERS,
    HEADER_RESOLVER,
    SUBDOMAIN_RESOLVER,
    USER_RESOLVER,
    EcotoneConfig,
    get_config,
)
from .declarations import Kind
from .discovery import get_registry
from .exceptions import ConfigurationError, UnknownChannelError, did_you_mean
from .signing import parse_signing

ROUTER = "ecotone_django.routers.TenantRouter"
MIDDLEWARE = "ecotone_django.middleware.TenantMiddleware"
TAG = "ecotone"


@register(TAG)
def check_ecotone(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        config = get_config()
    except ConfigurationError as exc:
        return [Error(str(exc), id="ecotone.E001", hint="See the Settings section of the ecotone_django README.")]
    errors: list[CheckMessage] = []
    errors += _check_tenancy(config)
    errors += _check_request_path(config)
    errors += _check_channels(config)
    errors += _check_handlers(config)
    errors += _check_signing(config)
    errors += _check_admin_databases(config)
    return errors


def _check_admin_databases(config: EcotoneConfig) -> list[CheckMessage]:
    if config.admin_databases is None:
        return []
    try:
        hook = import_string(config.admin_databases)
    except ImportError as exc:
        return [Error(f"ECOTONE['ADMIN_DATABASES'] cannot be imported: {exc}", id="ecotone.E021")]
    if not callable(hook):
        return [Error(f"ECOTONE['ADMIN_DATABASES'] ({config.admin_databases}) is not callable", id="ecotone.E021")]
    return []


def _check_signing(config: EcotoneConfig) -> list[CheckMessage]:
    try:
        parse_signing(config.signing)
    except ConfigurationError as exc:
        hint = 'ECOTONE["SIGNING"] = {"KEYS": {"<key id>": "<secret>", ...}, "CURRENT": "<key id>"}'
        return [Error(str(exc), hint=hint, id="ecotone.E020")]
    return []


def _check_tenancy(config: EcotoneConfig) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if config.tenancy is None:
        return errors
    for tenant, alias in sorted(config.tenancy.connections.items()):
        if alias not in settings.DATABASES:
            errors.append(
                Error(
                    f"tenant {tenant!r} maps to database alias {alias!r}{did_you_mean(alias, settings.DATABASES)}, "
                    "which is not in DATABASES",
                    hint=f"Add {alias!r} to DATABASES or fix ECOTONE['TENANCY']['CONNECTIONS'].",
                    id="ecotone.E003",
                )
            )
    default = config.tenancy.default_connection
    if default not in settings.DATABASES:
        errors.append(
            Error(
                f"ECOTONE['TENANCY']['DEFAULT_CONNECTION'] is {default!r}{did_you_mean(default, settings.DATABASES)}, "
                "not in DATABASES",
                id="ecotone.E003",
            )
        )
    routers = [
        r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__qualname__}" for r in settings.DATABASE_ROUTERS
    ]
    if ROUTER not in routers:
        errors.append(
            Error(
                "ECOTONE['TENANCY'] is configured but the tenant router is not installed",
                hint=f"Add {ROUTER!r} to DATABASE_ROUTERS.",
                id="ecotone.E006",
            )
        )
    labels = [app.label for app in apps.get_app_configs()]
    for label in sorted(config.tenancy.tenant_apps - set(labels)):
        errors.append(
            Error(
                f"ECOTONE['TENANCY']['TENANT_APPS'] names {label!r}{did_you_mean(label, labels)}, "
                "which is not the label of an installed app: its models would stay on the default database",
                hint="TENANT_APPS lists app labels (AppConfig.label), e.g. 'orders' for 'shop.orders'.",
                id="ecotone.E011",
            )
        )
    return errors


def _check_request_path(config: EcotoneConfig) -> list[CheckMessage]:
    """TenantMiddleware and the resolver it uses (``ECOTONE["TENANCY"]["REQUEST"]``)."""
    middleware = [m for m in settings.MIDDLEWARE if isinstance(m, str)]
    installed = MIDDLEWARE in middleware
    if config.tenancy is None:
        if not installed:
            return []
        return [Error(f"{MIDDLEWARE} is in MIDDLEWARE but ECOTONE['TENANCY'] is not configured", id="ecotone.E012")]
    request = config.tenancy.request
    where = "ECOTONE['TENANCY']['REQUEST']"
    errors: list[CheckMessage] = []
    try:
        resolver = import_string(request.resolver)
    except ImportError as exc:
        errors.append(
            Error(
                f"{where}['RESOLVER'] {request.resolver!r}{did_you_mean(request.resolver, BUILTIN_RESOLVERS)} "
                f"cannot be imported: {exc}",
                hint="A dotted path to a callable(request) -> tenant or None; built-ins: "
                f"{', '.join(BUILTIN_RESOLVERS)}.",
                id="ecotone.E012",
            )
        )
        resolver = None
    if resolver is not None and not callable(resolver):
        errors.append(Error(f"{where}['RESOLVER'] {request.resolver!r} is not callable", id="ecotone.E012"))
    needs = {HEADER_RESOLVER: ("HEADER", request.header), SUBDOMAIN_RESOLVER: ("DOMAIN", request.domain)}
    if request.resolver in needs and needs[request.resolver][1] is None:
        key = needs[request.resolver][0]
        errors.append(
            Error(
                f"{where}['RESOLVER'] is {request.resolver.rpartition('.')[2]}, but {where}[{key!r}] is not set",
                hint="The header resolver stays off until HEADER names the HTTP header a trusted proxy sets."
                if key == "HEADER"
                else "DOMAIN is the parent domain of the tenants' subdomains, e.g. 'shop.example.com'.",
                id="ecotone.E012",
            )
        )
    if installed and request.resolver == USER_RESOLVER:
        auth = "django.contrib.auth.middleware.AuthenticationMiddleware"
        if auth not in middleware or middleware.index(auth) > middleware.index(MIDDLEWARE):
            errors.append(
                Error(
                    f"{MIDDLEWARE} resolves the tenant from request.user, but {auth} does not come before it",
                    hint=f"Put {MIDDLEWARE!r} after {auth!r} in MIDDLEWARE.",
                    id="ecotone.E012",
                )
            )
    return errors


def _check_channels(config: EcotoneConfig) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in config.channels:
        try:
            channel = channels[name]
            for target in channel.targets():
                if target != name:
                    channels.concrete(target)
        except UnknownChannelError as exc:
            errors.append(Error(f"channel {name!r} routes to an unknown channel: {exc}", id="ecotone.E004"))
            continue
        except ConfigurationError as exc:
            errors.append(Error(f"channel {name!r}: {exc}", id="ecotone.E007"))
            continue
        errors += _check_header_case(name, channel, config)
        errors += _check_celery_app(name, channel)
    if config.default_channel is not None and config.default_channel not in config.channels:
        suggestion = did_you_mean(config.default_channel, config.channels)
        errors.append(
            Error(
                f"ECOTONE['DEFAULT_CHANNEL'] is {config.default_channel!r}{suggestion}, "
                "which ECOTONE['CHANNELS'] does not define",
                hint=f"Defined channels: {', '.join(sorted(config.channels)) or 'none'}.",
                id="ecotone.E004",
            )
        )
    return errors


def _check_celery_app(name: str, channel: Any) -> list[CheckMessage]:
    """A broker channel's Celery app (``CELERY_APP`` or ``OPTIONS["app"]``) imports: else the first send fails."""
    if not isinstance(channel, CeleryChannel):
        return []
    path = channel.options.get("app") or get_config().celery_app
    try:
        channel.app  # noqa: B018 - imports the app
    except ConfigurationError as exc:
        return [Error(f"channel {name!r}: {exc}{_attribute_suggestion(path)}", id="ecotone.E007")]
    except Exception as exc:  # the app's module failed while it was imported
        return [
            Error(
                f"channel {name!r}: importing Celery app {path!r} failed: {type(exc).__name__}: {exc}",
                id="ecotone.E007",
            )
        ]
    return []


def _attribute_suggestion(path: Any) -> str:
    """`` (did you mean 'pkg.mod.app'?)`` when ``path``'s module imports and has a name close to its last part."""
    if not isinstance(path, str) or "." not in path:
        return ""
    module_path, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except Exception:  # reported by the caller; no suggestion
        return ""
    close = did_you_mean(name, [n for n in vars(module) if not n.startswith("_")])
    return close.replace(" (did you mean '", f" (did you mean '{module_path}.")


def _check_header_case(name: str, channel: Any, config: EcotoneConfig) -> list[CheckMessage]:
    """A dynamic channel routing on the tenant header spelt in another case (``Tenant``): headers are
    case-sensitive, so it would never match and every message would silently take the default route."""
    header = getattr(channel, "header", None) if channel.is_dynamic else None
    tenant_header = config.tenancy.header if config.tenancy else None
    if not isinstance(header, str) or tenant_header is None or header == tenant_header:
        return []
    if header.lower() != tenant_header.lower():
        return []  # another header altogether: routing on it is a choice
    return [
        Error(
            f"channel {name!r} routes on the header {header!r}{did_you_mean(header, [tenant_header])}; "
            f"the tenant header is {tenant_header!r} and header names are case-sensitive",
            hint="Use the same spelling as ECOTONE['TENANCY']['HEADER'].",
            id="ecotone.E007",
        )
    ]


def _check_handlers(config: EcotoneConfig) -> list[CheckMessage]:
    try:
        registry = get_registry()
    except (ConfigurationError, ImportError) as exc:  # ImportError: a typo in HANDLER_MODULES
        return [Error(f"cannot load message handlers: {exc}", id="ecotone.E008")]
    errors: list[CheckMessage] = []
    owners: dict[tuple[str, type], list[str]] = defaultdict(list)
    for handler in registry:
        if handler.kind in (Kind.COMMAND, Kind.QUERY) and handler.message_type is not None:
            owners[(handler.kind, handler.message_type)].append(handler.id)
        if handler.channel is not None and handler.channel not in config.channels:
            errors.append(
                Error(
                    f"{handler.id} is @asynchronous({handler.channel!r}), but no such channel is configured"
                    f"{did_you_mean(handler.channel, config.channels)}",
                    hint=f"Defined channels: {', '.join(sorted(config.channels)) or 'none'}.",
                    id="ecotone.E004",
                )
            )
        if handler.delay is not None and handler.channel is None and config.default_channel is None:
            errors.append(
                Error(
                    f"{handler.id} is @delayed but has no channel to wait on",
                    hint="Add @asynchronous('<channel>') to it or its class, or set ECOTONE['DEFAULT_CHANNEL'].",
                    id="ecotone.E005",
                )
            )
        if handler.kind == Kind.QUERY and handler.channel is not None:
            errors.append(
                Error(f"{handler.id} is an asynchronous query handler; queries answer synchronously", id="ecotone.E009")
            )
        if handler.dedup_key is not None and handler.channel is None and handler.delay is None:
            errors.append(
                Error(
                    f"{handler.id} is @deduplicated but synchronous; deduplication applies to asynchronous handlers",
                    hint="Add @asynchronous('<channel>').",
                    id="ecotone.E010",
                )
            )
    for (kind, cls), ids in owners.items():
        if len(ids) > 1:
            errors.append(
                Error(
                    f"{len(ids)} {kind} handlers for {cls.__module__}.{cls.__qualname__}: {', '.join(sorted(ids))}",
                    hint=f"A {kind} has exactly one handler; an event may have many.",
                    id="ecotone.E002",
                )
            )
    return errors
