"""Settings for the test suite.

``ECOTONE_TEST_DB`` picks the database engine for every alias: ``sqlite``
(default), ``postgres`` or ``mariadb``. Three aliases model the product: the
shared ``default`` database and two dedicated tenant databases. Worker
processes started by tests set ``ECOTONE_TEST_SUBPROCESS=1`` so that they
connect to the test databases pytest-django created.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR = BASE_DIR / "var"
VAR.mkdir(exist_ok=True)

ENGINE = os.environ.get("ECOTONE_TEST_DB", "sqlite")
SUBPROCESS = os.environ.get("ECOTONE_TEST_SUBPROCESS") == "1"
# pytest-django imports these settings before tests/conftest.py runs, so the run id is fixed here: the
# pytest process picks p<pid> and exports it; worker processes it spawns inherit it and find its databases.
RUN_ID = os.environ.setdefault("ECOTONE_TEST_RUN_ID", f"p{os.getpid()}")
ALIASES = ("default", "big_corp", "enterprise_x")


def _database(alias: str) -> dict[str, object]:
    name = f"ecotone_{alias}"
    test_name = f"test_{name}_{RUN_ID}"
    if ENGINE == "sqlite":
        path = str(VAR / f"{test_name}.sqlite3")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path if SUBPROCESS else str(VAR / f"{name}.sqlite3"),
            "TEST": {"NAME": path},
            "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 30},
        }
    if ENGINE == "postgres":
        url = urlparse(os.environ.get("POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": test_name if SUBPROCESS else name,
            "USER": url.username or "postgres",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "127.0.0.1",
            "PORT": url.port or 5432,
            "TEST": {"NAME": test_name},
        }
    if ENGINE == "mariadb":
        url = urlparse(os.environ.get("MARIADB_URL") or "mysql://root@127.0.0.1:3306/test")
        return {
            "ENGINE": "django.db.backends.mysql",
            "NAME": test_name if SUBPROCESS else name,
            "USER": url.username or "root",
            "PASSWORD": url.password or "",
            "HOST": url.hostname or "127.0.0.1",
            "PORT": url.port or 3306,
            "OPTIONS": {"charset": "utf8mb4", "isolation_level": "read committed"},
            "TEST": {"NAME": test_name, "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    raise RuntimeError(f"ECOTONE_TEST_DB must be sqlite, postgres or mariadb, not {ENGINE!r}")


SECRET_KEY = "ecotone-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "ecotone_django",
    "tests.testapp",
    "tests.sagaapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
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
DATABASES = {alias: _database(alias) for alias in ALIASES}
DATABASE_ROUTERS = ["ecotone_django.routers.TenantRouter"]

QUEUE_PREFIX = f"ecotone_test_{RUN_ID}_"
CELERY_BROKER_URL = os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672//"
REDIS_BROKER_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
# SQS and Kafka: tests.helpers.local_servers starts moto's server and Tansu on a free port and exports the URL
# (and a queue name per test, ``ECOTONE_TEST_SQS_QUEUE`` / ``ECOTONE_TEST_KAFKA_QUEUE``) to the workers it spawns.
SQS_BROKER_URL = os.environ.get("SQS_URL") or "sqs://testing:testing@127.0.0.1:9324"
KAFKA_BROKER_URL = os.environ.get("KAFKA_URL") or "confluentkafka://127.0.0.1:9092"
SQS_QUEUE = os.environ.get("ECOTONE_TEST_SQS_QUEUE") or f"{QUEUE_PREFIX}sqs"
KAFKA_QUEUE = os.environ.get("ECOTONE_TEST_KAFKA_QUEUE") or f"{QUEUE_PREFIX}kafka"
#: The channel of the premium tenant big_corp behind ``orders`` (the saga tests switch it to sqs or kafka).
ORDERS_PREMIUM = os.environ.get("ECOTONE_TEST_ORDERS_PREMIUM") or "rabbit"
#: Channels the transport contract (tests/contract) runs one handler on, picked by this header.
CONTRACT_CHANNELS = ("db", "rabbit", "redis", "sqs", "kafka")

# The poll interval of worker processes (seconds): short, unless a test needs the default's behaviour.
POLL_INTERVAL = float(os.environ.get("ECOTONE_TEST_POLL_INTERVAL", "0.05"))
# The claim lease of the worker processes of the lease tests (seconds).
CLAIM_LEASE = (
    {"CLAIM_LEASE": float(os.environ["ECOTONE_TEST_CLAIM_LEASE"])} if "ECOTONE_TEST_CLAIM_LEASE" in os.environ else {}
)

ECOTONE = {
    "TENANCY": {
        "HEADER": "tenant",
        "CONNECTIONS": {"big_corp": "big_corp", "enterprise_x": "enterprise_x"},
        "DEFAULT_CONNECTION": "default",
        "TENANT_APPS": ["testapp", "sagaapp"],
    },
    "CHANNELS": {
        "db": {"BACKEND": "ecotone_django.channels.DatabaseChannel"},
        "db_other": {"BACKEND": "ecotone_django.channels.DatabaseChannel"},
        "rabbit": {
            "BACKEND": "ecotone_django.channels.CeleryChannel",
            # Worker processes of the broker-fault tests add deadlines (heartbeat, timeouts) as JSON.
            "OPTIONS": {
                "queue": f"{QUEUE_PREFIX}rabbit",
                **json.loads(os.environ.get("ECOTONE_TEST_RABBIT_OPTIONS", "{}")),
            },
        },
        "redis": {
            "BACKEND": "ecotone_django.channels.CeleryChannel",
            "OPTIONS": {"queue": f"{QUEUE_PREFIX}redis", "app": "tests.celery_apps.redis_app"},
        },
        "orders": {
            "BACKEND": "ecotone_django.channels.DynamicChannel",
            "OPTIONS": {"header": "tenant", "mapping": {"big_corp": ORDERS_PREMIUM}, "default": "db"},
        },
        "sqs": {
            "BACKEND": "ecotone_django.channels.CeleryChannel",
            "OPTIONS": {"queue": SQS_QUEUE, "app": "tests.celery_apps.sqs_app"},
        },
        "kafka": {
            "BACKEND": "ecotone_django.channels.CeleryChannel",
            "OPTIONS": {"queue": KAFKA_QUEUE, "app": "tests.celery_apps.kafka_app"},
        },
        "contract": {
            "BACKEND": "ecotone_django.channels.DynamicChannel",
            "OPTIONS": {"header": "channel_under_test", "mapping": {c: c for c in CONTRACT_CHANNELS}, "default": "db"},
        },
    },
    "DEFAULT_CHANNEL": "db",
    "CELERY_APP": "tests.celery_apps.rabbit_app",
    # Handlers that misbehave on purpose (SystemExit, a handler that never returns): tests/badinput/.
    # The transport contract's handlers, on every channel: tests/contract/.
    "HANDLER_MODULES": ["tests.badinput.handlers", "tests.contract.handlers"],
    "RETRY": {"MAX_ATTEMPTS": 3, "BACKOFF_SECONDS": 0, "MULTIPLIER": 1, "MAX_BACKOFF_SECONDS": 0},
    "WORKER": {"POLL_INTERVAL": POLL_INTERVAL, "RELAY_INTERVAL": 0.2, **CLAIM_LEASE},
}

# Worker processes of the signing tests get their keys from the environment (JSON of ECOTONE["SIGNING"]).
if os.environ.get("ECOTONE_TEST_SIGNING"):
    ECOTONE["SIGNING"] = json.loads(os.environ["ECOTONE_TEST_SIGNING"])
# django.tasks (the backport on Django 5.2): tests/testapp/jobs.py and tests/*/test_task_backend*.py.
TASKS = {
    "default": {
        "BACKEND": "ecotone_django.task_backends.OutboxBackend",
        "QUEUES": ["default", "db", "rabbit", "orders"],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ecotone_django": {"handlers": ["console"], "level": os.environ.get("ECOTONE_LOG_LEVEL", "WARNING")}},
}
