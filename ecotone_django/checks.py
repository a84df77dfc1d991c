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
- E020  ECOTONE["SIGNING"] is invalid (wrong shape, an empty secret, CURRENT not in KEYS)
- E021  ECOTONE["ADMIN_DATABASES"] does not name a callable

They are static (they read settings and handler declarations, never a database), so they carry their own tag,
``ecotone``, and not ``database``: Django 6.1 runs database-tagged checks only when ``check --database`` names an
alias, and these must run under plain ``manage.py check``, ``runserver`` and every command that checks first.
Names that resemble a valid one get a "did you mean" (difflib).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.utils.module_loading import import_string

from .channels import channels
from .conf import EcotoneConfig, get_config
from .declarations import Kind
from .discovery import get_registry
from .exceptions import ConfigurationError, UnknownChannelError, did_you_mean
from .signing import parse_signing

ROUTER = "ecotone_django.routers.TenantRouter"
TAG = "ecotone"


@register(TAG)
def check_ecotone(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        config = get_config()
    except ConfigurationError as exc:
        return [Error(str(exc), id="ecotone.E001", hint="See the Settings section of the ecotone_django README.")]
    errors: list[CheckMessage] = []
    errors += _check_tenancy(config)
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
                    f"tenant {tenant!r} maps to database alias {alias!r}, which is not in DATABASES",
                    hint=f"Add {alias!r} to DATABASES or fix ECOTONE['TENANCY']['CONNECTIONS'].",
                    id="ecotone.E003",
                )
            )
    if config.tenancy.default_connection not in settings.DATABASES:
        errors.append(
            Error(
                f"ECOTONE['TENANCY']['DEFAULT_CONNECTION'] is {config.tenancy.default_connection!r}, not in DATABASES",
                id="ecotone.E003",
            )
        )
    if ROUTER not in [
        r if isinstance(r, str) else f"{type(r).__module__}.{type(r).__qualname__}" for r in settings.DATABASE_ROUTERS
    ]:
        errors.append(
            Error(
                "ECOTONE['TENANCY'] is configured but the tenant router is not installed",
                hint=f"Add {ROUTER!r} to DATABASE_ROUTERS.",
                id="ecotone.E006",
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
