"""Django settings of one tool of the peer comparison (``ECOTONE_BENCH_PEER=<tool>``).

Every process of a tool (its producer, its worker) loads these: the tool's own database, the shop app
(``Order``, ``Shipment``) and whatever the tool itself needs installed. Each tool is configured at its
best documented settings for this load; ``bench/peers/tools.py`` describes them for the report.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import postgres_params
from .config import POLL_INTERVAL, RABBITMQ_URL, current, pika_url

TOOL = current()

SECRET_KEY = "ecotone-bench-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "bench.peers.shop.apps.ShopConfig"]

_params = postgres_params(TOOL.database)
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params["dbname"],
        "USER": _params["user"],
        "PASSWORD": _params["password"],
        "HOST": _params["host"],
        "PORT": _params["port"],
        "CONN_MAX_AGE": 600,
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

if TOOL.ours:
    INSTALLED_APPS.append("ecotone_django")
    ECOTONE: dict[str, Any] = {
        "CHANNELS": {
            "peer_db": {"BACKEND": "ecotone_django.channels.DatabaseChannel"},
            # The bench's Celery app only names the broker; the queue is this tool's own.
            "peer_rabbit": {"BACKEND": "ecotone_django.channels.CeleryChannel", "OPTIONS": {"queue": TOOL.queue}},
        },
        "CELERY_APP": "bench.celery_app.app",
        "HANDLER_MODULES": ["bench.peers.ours"],
        "WORKER": {"POLL_INTERVAL": POLL_INTERVAL},
    }
elif TOOL.name == "procrastinate":
    INSTALLED_APPS.append("procrastinate.contrib.django")
    PROCRASTINATE_IMPORT_PATHS = ["bench.peers.procrastinate_tasks"]
    PROCRASTINATE_WORKER_DEFAULTS = {
        "concurrency": int(os.environ.get("ECOTONE_BENCH_PROCRASTINATE_CONCURRENCY", "1")),
        "listen_notify": True,  # woken by NOTIFY at once; polling is the fallback
        "fetch_job_polling_interval": POLL_INTERVAL,
        "update_heartbeat_interval": 1.0,  # for the stalled-job recovery (procrastinate_tasks.py)
        "stalled_worker_timeout": 5.0,
    }
elif TOOL.name == "django_tasks_db":
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif TOOL.name == "dramatiq":
    INSTALLED_APPS.insert(0, "django_dramatiq")
    DRAMATIQ_AUTODISCOVER_MODULES = ["dramatiq_actors"]
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        "OPTIONS": {"url": pika_url(RABBITMQ_URL)},
        # The defaults minus what this load does not use: no Prometheus exporter, no admin rows per task
        # (AdminMiddleware writes a database row per message); DbConnectionsMiddleware is required.
        "MIDDLEWARE": [
            "dramatiq.middleware.AgeLimit",
            "dramatiq.middleware.TimeLimit",
            "dramatiq.middleware.Callbacks",
            "dramatiq.middleware.Retries",
            "django_dramatiq.middleware.DbConnectionsMiddleware",
        ],
    }
