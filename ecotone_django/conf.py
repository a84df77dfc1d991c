"""The ``ECOTONE`` setting: read lazily, validated once, unknown keys rejected by name.

Nothing here touches ``django.conf.settings`` at import time. :func:`get_config`
builds an immutable :class:`EcotoneConfig` on first use and caches it until a
``setting_changed`` signal for ``ECOTONE`` (tests use ``override_settings``).
Modules that keep state built from the setting (the channels, the handler
registry) reset it with a ``setting_changed`` receiver of their own.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import ConfigurationError, did_you_mean

TOP_LEVEL_KEYS = frozenset(
    {
        "TENANCY",
        "CHANNELS",
        "DEFAULT_CHANNEL",
        "CELERY_APP",
        "RETRY",
        "HANDLER_MODULES",
        "INBOX_RETENTION",
        "MAX_MESSAGE_BYTES",
        "SAGA_NOT_FOUND",
        "WORKER",
        "TRANSACTION_INTERNALS",
        "SIGNING",
        "ADMIN_DATABASES",
    }
)
TENANCY_KEYS = frozenset({"HEADER", "CONNECTIONS", "DEFAULT_CONNECTION", "TENANT_APPS", "REQUEST"})
REQUEST_KEYS = frozenset({"RESOLVER", "USER_ATTRIBUTE", "HEADER", "DOMAIN", "ATOMIC"})
#: The request tenant resolvers ecotone_django ships (ecotone_django.middleware); the first is the default.
USER_RESOLVER = "ecotone_django.middleware.tenant_from_user"
SUBDOMAIN_RESOLVER = "ecotone_django.middleware.tenant_from_subdomain"
HEADER_RESOLVER = "ecotone_django.middleware.tenant_from_header"
BUILTIN_RESOLVERS = (USER_RESOLVER, SUBDOMAIN_RESOLVER, HEADER_RESOLVER)
CHANNEL_KEYS = frozenset({"BACKEND", "OPTIONS"})
RETRY_KEYS = frozenset({"MAX_ATTEMPTS", "BACKOFF_SECONDS", "MULTIPLIER", "MAX_BACKOFF_SECONDS", "JITTER"})
WORKER_KEYS = frozenset(
    {"POLL_INTERVAL", "BATCH_SIZE", "CLAIM_SIZE", "SLOW_AFTER_FAILURES", "RELAY_INTERVAL", "CLAIM_LEASE"}
)
SAGA_NOT_FOUND_CHOICES = ("drop", "raise")
#: Whether to read Django's private transaction state (see ecotone_django.transactions): "auto" where it
#: has the shape this code expects, "use" always (an unexpected shape is an error), "avoid" never.
TRANSACTION_INTERNALS_CHOICES = ("auto", "use", "avoid")


@dataclass(frozen=True)
class RequestConfig:
    """How ``ecotone_django.middleware.TenantMiddleware`` finds a request's tenant (``TENANCY["REQUEST"]``)."""

    resolver: str = USER_RESOLVER  # dotted path to a callable(request) -> tenant name or None
    user_attribute: str = "tenant"  # tenant_from_user: a dotted attribute path on request.user
    header: str | None = None  # tenant_from_header: the HTTP header; None keeps that resolver off
    domain: str | None = None  # tenant_from_subdomain: the parent domain, e.g. "shop.example.com"
    atomic: bool = False  # wrap each request in a transaction on the tenant's database


@dataclass(frozen=True)
class TenancyConfig:
    header: str = "tenant"
    connections: Mapping[str, str] = field(default_factory=dict)
    default_connection: str = "default"
    tenant_apps: frozenset[str] = frozenset()
    request: RequestConfig = field(default_factory=RequestConfig)

    def alias_for(self, tenant: str | None) -> str:
        """The DATABASES alias of ``tenant``; every unmapped tenant gets the default connection."""
        if tenant is None:
            return self.default_connection
        return self.connections.get(tenant, self.default_connection)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every database that holds tenant data, the default connection first."""
        seen = dict.fromkeys([self.default_connection, *self.connections.values()])
        return tuple(seen)


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    backend: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    multiplier: float = 2.0
    max_backoff_seconds: float = 300.0
    jitter: float = 0.5  # up to this fraction of a delay is taken off at random

    def backoff(self, attempt: int) -> timedelta:
        """The longest delay before attempt ``attempt + 1`` after ``attempt`` failed attempts (1-based)."""
        seconds = self.backoff_seconds * self.multiplier ** max(attempt - 1, 0)
        return timedelta(seconds=min(seconds, self.max_backoff_seconds))

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        """:meth:`backoff` less a random part of up to ``jitter`` of it: the messages that failed together in
        one outage come back spread over that span instead of all at the same instant."""
        return self.backoff(attempt) * (1 - self.jitter * rand())


@dataclass(frozen=True)
class WorkerConfig:
    poll_interval: float = 0.5
    batch_size: int = 100  # rows the relay publishes per transaction
    slow_after_failures: int = 10
    relay_interval: float = 1.0
    claim_size: int = 50  # database-channel messages per transaction: under the 64 subtransactions PostgreSQL caches
    claim_lease: float = 60.0  # seconds a claiming transaction may idle before the database ends it (0: never)


@dataclass(frozen=True)
class EcotoneConfig:
    tenancy: TenancyConfig | None
    channels: Mapping[str, ChannelConfig]
    default_channel: str | None
    celery_app: str | None
    retry: RetryConfig
    handler_modules: tuple[str, ...]
    inbox_retention: timedelta
    max_message_bytes: int
    saga_not_found: str
    worker: WorkerConfig
    transaction_internals: str = "auto"
    #: ``ECOTONE["SIGNING"]`` as given; ecotone_django.signing validates it (system check ecotone.E020).
    signing: Any = None
    #: Dotted path to ``callable(request) -> aliases`` a non-superuser may browse in the admin.
    admin_databases: str | None = None

    @property
    def database_aliases(self) -> tuple[str, ...]:
        """Every database alias that holds ecotone_django tables (outbox, inbox, sagas, dead letters)."""
        return self.tenancy.aliases if self.tenancy else ("default",)

    def alias_for(self, tenant: str | None) -> str:
        return self.tenancy.alias_for(tenant) if self.tenancy else "default"


def _reject_unknown(given: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(given) - allowed, key=str)
    if unknown:
        named = ", ".join(f"{key!r}{did_you_mean(key, allowed)}" for key in unknown)
        raise ConfigurationError(f"{where} has unknown key(s) {named}; valid keys are {', '.join(sorted(allowed))}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} must be a dict, got {type(value).__name__}")
    return value


def _number(value: Any, where: str, *, minimum: float = 0, integer: bool = False) -> Any:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:  # type: ignore[operator]
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{where} must be {kind} >= {minimum}, got {value!r}")
    return value


def _parse_tenancy(raw: Any) -> TenancyConfig | None:
    if raw is None:
        return None
    raw = _mapping(raw, 'ECOTONE["TENANCY"]')
    _reject_unknown(raw, TENANCY_KEYS, 'ECOTONE["TENANCY"]')
    header = raw.get("HEADER", "tenant")
    if not isinstance(header, str) or not header:
        raise ConfigurationError('ECOTONE["TENANCY"]["HEADER"] must be a non-empty string')
    connections = dict(_mapping(raw.get("CONNECTIONS", {}), 'ECOTONE["TENANCY"]["CONNECTIONS"]'))
    for tenant, alias in connections.items():
        if not isinstance(tenant, str) or not isinstance(alias, str):
            raise ConfigurationError(
                'ECOTONE["TENANCY"]["CONNECTIONS"] maps tenant names (str) to DATABASES aliases (str)'
            )
    default = raw.get("DEFAULT_CONNECTION", "default")
    if not isinstance(default, str):
        raise ConfigurationError('ECOTONE["TENANCY"]["DEFAULT_CONNECTION"] must be a DATABASES alias')
    apps = raw.get("TENANT_APPS", [])
    if isinstance(apps, str) or not all(isinstance(a, str) for a in apps):
        raise ConfigurationError('ECOTONE["TENANCY"]["TENANT_APPS"] must be a list of app labels')
    return TenancyConfig(header, connections, default, frozenset(apps), _parse_request(raw.get("REQUEST", {})))


def _parse_request(raw: Any) -> RequestConfig:
    where = 'ECOTONE["TENANCY"]["REQUEST"]'
    raw = _mapping(raw, where)
    _reject_unknown(raw, REQUEST_KEYS, where)
    values: dict[str, Any] = {}
    for key, name, optional in (
        ("RESOLVER", "resolver", False),
        ("USER_ATTRIBUTE", "user_attribute", False),
        ("HEADER", "header", True),
        ("DOMAIN", "domain", True),
    ):
        if key in raw:
            value = raw[key]
            if not (isinstance(value, str) and value) and not (optional and value is None):
                raise ConfigurationError(f"{where}[{key!r}] must be a non-empty string, got {value!r}")
            values[name] = value
    if "ATOMIC" in raw:
        if not isinstance(raw["ATOMIC"], bool):
            raise ConfigurationError(f"{where}['ATOMIC'] must be True or False, got {raw['ATOMIC']!r}")
        values["atomic"] = raw["ATOMIC"]
    return RequestConfig(**values)


def _parse_channels(raw: Any) -> dict[str, ChannelConfig]:
    channels: dict[str, ChannelConfig] = {}
    for name, spec in _mapping(raw, 'ECOTONE["CHANNELS"]').items():
        where = f'ECOTONE["CHANNELS"][{name!r}]'
        spec = _mapping(spec, where)
        _reject_unknown(spec, CHANNEL_KEYS, where)
        backend = spec.get("BACKEND")
        if not isinstance(backend, str):
            raise ConfigurationError(f"{where} needs a BACKEND (a dotted path to a channel class)")
        options = dict(_mapping(spec.get("OPTIONS", {}), f"{where}['OPTIONS']"))
        channels[name] = ChannelConfig(name, backend, options)
    return channels


def _parse_retry(raw: Any) -> RetryConfig:
    raw = _mapping(raw, 'ECOTONE["RETRY"]')
    _reject_unknown(raw, RETRY_KEYS, 'ECOTONE["RETRY"]')
    d = RetryConfig()
    return RetryConfig(
        max_attempts=_number(raw.get("MAX_ATTEMPTS", d.max_attempts), "RETRY.MAX_ATTEMPTS", minimum=1, integer=True),
        backoff_seconds=_number(raw.get("BACKOFF_SECONDS", d.backoff_seconds), "RETRY.BACKOFF_SECONDS"),
        multiplier=_number(raw.get("MULTIPLIER", d.multiplier), "RETRY.MULTIPLIER", minimum=1),
        max_backoff_seconds=_number(raw.get("MAX_BACKOFF_SECONDS", d.max_backoff_seconds), "RETRY.MAX_BACKOFF_SECONDS"),
        jitter=_fraction(raw.get("JITTER", d.jitter), "RETRY.JITTER"),
    )


def _fraction(value: Any, where: str) -> float:
    number = _number(value, where)
    if number > 1:
        raise ConfigurationError(f"{where} must be a fraction from 0 to 1, got {value!r}")
    return float(number)


def _parse_worker(raw: Any) -> WorkerConfig:
    raw = _mapping(raw, 'ECOTONE["WORKER"]')
    _reject_unknown(raw, WORKER_KEYS, 'ECOTONE["WORKER"]')
    d = WorkerConfig()
    return WorkerConfig(
        poll_interval=_number(raw.get("POLL_INTERVAL", d.poll_interval), "WORKER.POLL_INTERVAL"),
        batch_size=_number(raw.get("BATCH_SIZE", d.batch_size), "WORKER.BATCH_SIZE", minimum=1, integer=True),
        claim_size=_number(raw.get("CLAIM_SIZE", d.claim_size), "WORKER.CLAIM_SIZE", minimum=1, integer=True),
        slow_after_failures=_number(
            raw.get("SLOW_AFTER_FAILURES", d.slow_after_failures), "WORKER.SLOW_AFTER_FAILURES", integer=True
        ),
        relay_interval=_number(raw.get("RELAY_INTERVAL", d.relay_interval), "WORKER.RELAY_INTERVAL"),
        claim_lease=_number(raw.get("CLAIM_LEASE", d.claim_lease), "WORKER.CLAIM_LEASE"),
    )


def parse_config(raw: Any) -> EcotoneConfig:
    """Validate a raw ``ECOTONE`` dict; raise :class:`ConfigurationError` naming the bad key."""
    raw = _mapping(raw if raw is not None else {}, "ECOTONE")
    _reject_unknown(raw, TOP_LEVEL_KEYS, "ECOTONE")
    retention = raw.get("INBOX_RETENTION", timedelta(days=7))
    if not isinstance(retention, timedelta):
        retention = timedelta(seconds=_number(retention, "ECOTONE['INBOX_RETENTION']"))
    modules = raw.get("HANDLER_MODULES", [])
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        raise ConfigurationError('ECOTONE["HANDLER_MODULES"] must be a list of dotted module paths')
    saga_not_found = raw.get("SAGA_NOT_FOUND", "drop")
    if saga_not_found not in SAGA_NOT_FOUND_CHOICES:
        raise ConfigurationError(
            f'ECOTONE["SAGA_NOT_FOUND"] is {saga_not_found!r}; choose one of {", ".join(SAGA_NOT_FOUND_CHOICES)}'
        )
    internals = raw.get("TRANSACTION_INTERNALS", "auto")
    if internals not in TRANSACTION_INTERNALS_CHOICES:
        raise ConfigurationError(
            f'ECOTONE["TRANSACTION_INTERNALS"] is {internals!r}; '
            f"choose one of {', '.join(TRANSACTION_INTERNALS_CHOICES)}"
        )
    default_channel = raw.get("DEFAULT_CHANNEL")
    if default_channel is not None and not isinstance(default_channel, str):
        raise ConfigurationError('ECOTONE["DEFAULT_CHANNEL"] must be a channel name')
    celery_app = raw.get("CELERY_APP")
    if celery_app is not None and not isinstance(celery_app, str):
        raise ConfigurationError('ECOTONE["CELERY_APP"] must be a dotted path to a Celery app')
    admin_databases = raw.get("ADMIN_DATABASES")
    if admin_databases is not None and not isinstance(admin_databases, str):
        raise ConfigurationError(
            'ECOTONE["ADMIN_DATABASES"] must be a dotted path to a callable(request) returning database aliases'
        )
    return EcotoneConfig(
        tenancy=_parse_tenancy(raw.get("TENANCY")),
        channels=_parse_channels(raw.get("CHANNELS", {})),
        default_channel=default_channel,
        celery_app=celery_app,
        retry=_parse_retry(raw.get("RETRY", {})),
        handler_modules=tuple(modules),
        inbox_retention=retention,
        max_message_bytes=_number(
            raw.get("MAX_MESSAGE_BYTES", 1024 * 1024), "ECOTONE['MAX_MESSAGE_BYTES']", minimum=1, integer=True
        ),
        saga_not_found=saga_not_found,
        worker=_parse_worker(raw.get("WORKER", {})),
        transaction_internals=internals,
        signing=raw.get("SIGNING"),
        admin_databases=admin_databases,
    )


#: Settings whose change invalidates what ecotone_django built from its configuration.
RELOAD_ON = frozenset({"ECOTONE", "DATABASES", "INSTALLED_APPS"})


@functools.cache
def get_config() -> EcotoneConfig:
    """The validated ``ECOTONE`` setting (cached; reset when the setting changes)."""
    return parse_config(getattr(settings, "ECOTONE", {}))


@receiver(setting_changed)
def _reset_config(*, setting: str, **kwargs: Any) -> None:
    if setting in RELOAD_ON:
        get_config.cache_clear()
