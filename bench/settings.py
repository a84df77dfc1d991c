"""Django settings of the benchmark (``DJANGO_SETTINGS_MODULE=bench.settings``).

Two PostgreSQL databases of its own (``ecotone_bench_default`` for the free tier,
``ecotone_bench_big_corp`` for the premium tenant), RabbitMQ queues of its own, and the channel kinds
the product has: a DatabaseChannel, CeleryChannels and a DynamicChannel. ``ECOTONE_BENCH_LAYOUT=single``
swaps the routing for the noisy-neighbour comparison — one database channel in one database for every
tenant — without touching a handler: routing is configuration.
"""

from __future__ import annotations

import os
from typing import Any

from .config import DATABASE_NAMES, LAYOUT, PREMIUM_TENANT, QUEUE_PREMIUM, QUEUE_RABBIT, postgres_params

SECRET_KEY = "ecotone-bench-not-secret"
DEBUG = False  # DEBUG=True keeps every query in memory: never in a worker, never in a benchmark
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# bench.peers.shop: the business row (Order) a transactional send writes beside its message.
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "ecotone_django",
    "bench.peers.shop.apps.ShopConfig",
]
if os.environ.get("ECOTONE_BENCH_OTEL_SPANS"):  # the cost of tracing (bench/otel.py)
    INSTALLED_APPS.append("bench.otel.TracedWorker")


def _database(name: str) -> dict[str, Any]:
    params = postgres_params(name)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params["dbname"],
        "USER": params["user"],
        "PASSWORD": params["password"],
        "HOST": params["host"],
        "PORT": params["port"],
        "CONN_MAX_AGE": 600,  # a worker keeps its connection, as a production deployment would
    }


DATABASES = {alias: _database(name) for alias, name in DATABASE_NAMES.items()}
DATABASE_ROUTERS = ["ecotone_django.routers.TenantRouter"]

_DB = "ecotone_django.channels.DatabaseChannel"
_CELERY = "ecotone_django.channels.CeleryChannel"

if LAYOUT == "single":
    _connections: dict[str, str] = {}  # the premium tenant shares the free tier's database ...
    _orders: dict[str, Any] = {"BACKEND": _DB}  # ... and its one queue
elif LAYOUT == "dynamic":
    _connections = {PREMIUM_TENANT: "big_corp"}
    _orders = {
        "BACKEND": "ecotone_django.channels.DynamicChannel",
        "OPTIONS": {"header": "tenant", "mapping": {PREMIUM_TENANT: "bench_premium"}, "default": "bench_shared"},
    }
else:
    raise RuntimeError(f"ECOTONE_BENCH_LAYOUT must be 'dynamic' or 'single', not {LAYOUT!r}")

ECOTONE = {
    # bench_shop (the business row of transactional sends) lives in each tenant's database.
    "TENANCY": {
        "HEADER": "tenant",
        "CONNECTIONS": _connections,
        "DEFAULT_CONNECTION": "default",
        "TENANT_APPS": ["bench_shop"],
    },
    "CHANNELS": {
        "bench_db": {"BACKEND": _DB},
        "bench_shared": {"BACKEND": _DB},
        "bench_rabbit": {"BACKEND": _CELERY, "OPTIONS": {"queue": QUEUE_RABBIT}},
        "bench_premium": {"BACKEND": _CELERY, "OPTIONS": {"queue": QUEUE_PREMIUM}},
        "bench_orders": _orders,
    },
    "CELERY_APP": "bench.celery_app.app",
    "HANDLER_MODULES": ["bench.handlers"],
    "RETRY": {"MAX_ATTEMPTS": 5, "BACKOFF_SECONDS": 1, "MULTIPLIER": 2, "MAX_BACKOFF_SECONDS": 300},
    # "avoid" measures the public-API fallback of ecotone_django.transactions against the default ("auto").
    "TRANSACTION_INTERNALS": os.environ.get("ECOTONE_BENCH_TRANSACTION_INTERNALS", "auto"),
    "WORKER": {
        "POLL_INTERVAL": 0.1,
        "RELAY_INTERVAL": 0.5,
        # The product's default (50), written out so that the minimal loop claims as many rows per transaction.
        "CLAIM_SIZE": int(os.environ.get("ECOTONE_BENCH_CLAIM_SIZE") or 50),
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ecotone_django": {"handlers": ["console"], "level": "WARNING"}},
}
