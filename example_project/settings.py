"""Settings of the example shop, read from the environment with django-environ.

With nothing set it runs embedded: three SQLite files under ``var/example/``
(``ECOTONE_DEMO_VAR_DIR`` moves them) and database channels only, no servers.
The same project goes to production by setting URLs, never by editing code::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_shared          # free tier, shared
    BIG_CORP_DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop_big_corp
    ENTERPRISE_X_DATABASE_URL=mysql://root@127.0.0.1:3306/shop_enterprise_x
    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672//                # orders_premium goes to RabbitMQ (or redis://)

``CELERY_BROKER_URL`` may also name SQS (``sqs://KEY:SECRET@`` for AWS, ``sqs://x:x@127.0.0.1:9324``
for ElasticMQ or moto) or Kafka (``confluentkafka://127.0.0.1:9092``); ``CELERY_BROKER_TRANSPORT_OPTIONS``
(JSON) carries kombu's transport options, e.g. ``{"region": "us-east-1", "is_secure": false}`` for a
local SQS server or ``{"num_partitions": 4}`` for Kafka.

``ECOTONE_DEMO_TIME_SCALE`` multiplies the saga's timeouts (``manage.py demo`` sets it so
that a 30-minute payment timeout takes seconds).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Local use only: an anonymous request may name its tenant in an X-Tenant header (curl, docker compose).
# Anyone could then act for any tenant, so it needs DEBUG on as well; the tenant is otherwise the signed-in
# user's (accounts.TenantMembership).
SHOP_ALLOW_TENANT_HEADER = env.bool("SHOP_ALLOW_TENANT_HEADER", default=False)
if SHOP_ALLOW_TENANT_HEADER and not DEBUG:
    raise ImproperlyConfigured("SHOP_ALLOW_TENANT_HEADER is for local use only: it needs DEBUG=1 as well")
SECRET_KEY = env.str("SECRET_KEY", default="ecotone-example-insecure-development-key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ecotone_django",
    "example_project.accounts",
    "example_project.orders",
    "example_project.payments",
    "example_project.fulfillment",
    "example_project.notifications",
]
if env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default=""):  # traces to Jaeger & co. (example_project/observability.py)
    INSTALLED_APPS.append("example_project.observability.Observability")
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# ---------------------------------------------------------------------------
# Databases: the shared one for the free tier, one dedicated database per premium tenant
# ---------------------------------------------------------------------------

VAR_DIR = Path(env.str("ECOTONE_DEMO_VAR_DIR", default=str(BASE_DIR / "var" / "example")))


def _database(url_variable: str, sqlite_name: str) -> dict[str, Any]:
    """The database ``url_variable`` names, else an embedded SQLite file ``VAR_DIR/sqlite_name``."""
    if env.str(url_variable, default=""):
        config: dict[str, Any] = env.db_url(url_variable)
        if config["ENGINE"] == "django.db.backends.mysql":
            # READ COMMITTED: the database channel's SKIP LOCKED claims do not block on gap locks.
            config.setdefault("OPTIONS", {}).update({"charset": "utf8mb4", "isolation_level": "read committed"})
        return config
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(VAR_DIR / sqlite_name),
        "OPTIONS": {
            # Writers take the lock at BEGIN, so two workers never deadlock upgrading a read lock.
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
        },
    }


DATABASES = {
    "default": _database("DATABASE_URL", "shared.sqlite3"),
    "big_corp": _database("BIG_CORP_DATABASE_URL", "big_corp.sqlite3"),
    "enterprise_x": _database("ENTERPRISE_X_DATABASE_URL", "enterprise_x.sqlite3"),
}
DATABASE_ROUTERS = ["ecotone_django.routers.TenantRouter"]

# ---------------------------------------------------------------------------
# Messaging: which database and which channel a tenant uses is configuration, not code
# ---------------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = env.json("CELERY_BROKER_TRANSPORT_OPTIONS", default={})
# SQS and Kafka have no broadcast for Celery's remote control: off there.
CELERY_WORKER_ENABLE_REMOTE_CONTROL = not str(CELERY_BROKER_URL or "").startswith(("sqs://", "confluentkafka://"))

# Premium tenants get a queue nobody else can clog: on the broker when there is one, else its own
# database channel (the worker processes of each channel are scaled separately either way).
PREMIUM_QUEUE = env.str("ORDERS_PREMIUM_QUEUE", default="orders_premium")
ORDERS_PREMIUM: dict[str, Any] = (
    {"BACKEND": "ecotone_django.channels.CeleryChannel", "OPTIONS": {"queue": PREMIUM_QUEUE}}
    if CELERY_BROKER_URL
    else {"BACKEND": "ecotone_django.channels.DatabaseChannel"}
)

ECOTONE = {
    "TENANCY": {
        "HEADER": "tenant",
        "CONNECTIONS": {"big_corp": "big_corp", "enterprise_x": "enterprise_x"},
        "DEFAULT_CONNECTION": "default",
        "TENANT_APPS": ["orders", "payments", "fulfillment", "notifications"],
    },
    "CHANNELS": {
        "orders_shared": {"BACKEND": "ecotone_django.channels.DatabaseChannel"},
        "orders_premium": ORDERS_PREMIUM,
        "orders": {
            "BACKEND": "ecotone_django.channels.DynamicChannel",
            "OPTIONS": {
                "header": "tenant",
                "mapping": {"big_corp": "orders_premium", "enterprise_x": "orders_premium"},
                "default": "orders_shared",
            },
        },
    },
    "DEFAULT_CHANNEL": "orders",
    "CELERY_APP": "example_project.celery.app",
    "RETRY": {"MAX_ATTEMPTS": 5, "BACKOFF_SECONDS": 1, "MULTIPLIER": 2, "MAX_BACKOFF_SECONDS": 300},
    "WORKER": {
        "POLL_INTERVAL": env.float("ECOTONE_POLL_INTERVAL", default=0.1),
        "RELAY_INTERVAL": env.float("ECOTONE_RELAY_INTERVAL", default=0.5),
        # How long a stopped worker may hold the rows it claimed (seconds of idle transaction).
        "CLAIM_LEASE": env.float("ECOTONE_CLAIM_LEASE", default=60),
    },
}

# ---------------------------------------------------------------------------
# The shop's business knobs (the fakes decide deterministically from a hash of the order id)
# ---------------------------------------------------------------------------

TIME_SCALE = float(env.str("ECOTONE_DEMO_TIME_SCALE", default="1"))  # float(): environ mangles "1e-05"
if TIME_SCALE <= 0:
    raise ImproperlyConfigured(f"ECOTONE_DEMO_TIME_SCALE must be positive, got {TIME_SCALE}")
SHOP_PAYMENT_TIMEOUT = timedelta(minutes=30) * TIME_SCALE
# Share of orders whose payment the fake gateway never confirms (cancelled by the saga's timeout).
SHOP_UNPAID_RATE = env.float("SHOP_UNPAID_RATE", default=0.1)
# Share of orders whose payment the gateway confirms only after the timeout (the saga refunds them).
SHOP_LATE_PAYMENT_RATE = env.float("SHOP_LATE_PAYMENT_RATE", default=0.03)
# Share of paid orders the fake carrier fails to ship (refunded by the saga's compensation).
SHOP_SHIPMENT_FAILURE_RATE = env.float("SHOP_SHIPMENT_FAILURE_RATE", default=0.1)
for _name in ("SHOP_UNPAID_RATE", "SHOP_LATE_PAYMENT_RATE", "SHOP_SHIPMENT_FAILURE_RATE"):
    if not 0.0 <= globals()[_name] <= 1.0:
        raise ImproperlyConfigured(f"{_name} must be between 0 and 1, got {globals()[_name]}")
if SHOP_UNPAID_RATE + SHOP_LATE_PAYMENT_RATE > 1.0:
    raise ImproperlyConfigured("SHOP_UNPAID_RATE + SHOP_LATE_PAYMENT_RATE must not exceed 1")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "ecotone_django": {"handlers": ["console"], "level": env.str("ECOTONE_LOG_LEVEL", default="WARNING")},
        "example_project": {"handlers": ["console"], "level": env.str("SHOP_LOG_LEVEL", default="WARNING")},
    },
}
