"""Names and service URLs the benchmark shares between its processes (no Django, no Celery imports).

``ECOTONE_BENCH_ID`` namespaces the databases and queues, so that two runs (a developer's ``make bench``
and the test suite's quick run) never meet: ``ecotone_bench_default`` or ``ecotone_bench_<id>_default``.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

BENCH_ID = os.environ.get("ECOTONE_BENCH_ID", "")
PREFIX = f"ecotone_bench_{BENCH_ID}_" if BENCH_ID else "ecotone_bench_"

POSTGRES_URL = os.environ.get("POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
RABBITMQ_URL = os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672//"

#: DATABASES alias → PostgreSQL database name.
DATABASE_NAMES = {"default": f"{PREFIX}default", "big_corp": f"{PREFIX}big_corp"}

#: Queues on RabbitMQ: the Celery channels', the bare Celery task's, the raw kombu baseline's and the
#: minimal transactional path's (bench.figures.latency).
QUEUE_RABBIT = f"{PREFIX}rabbit"
QUEUE_PREMIUM = f"{PREFIX}premium"
QUEUE_BARE = f"{PREFIX}bare"
QUEUE_RAW = f"{PREFIX}raw"
QUEUE_RAW_TX = f"{PREFIX}raw_tx"
QUEUES = (QUEUE_RABBIT, QUEUE_PREMIUM, QUEUE_BARE, QUEUE_RAW, QUEUE_RAW_TX)

#: ``dynamic``: premium tenant on its own database and RabbitMQ queue, free tier on a shared database
#: channel. ``single``: every tenant on one database channel in one database (the comparison).
LAYOUT = os.environ.get("ECOTONE_BENCH_LAYOUT", "dynamic")
PREMIUM_TENANT = "big_corp"


def postgres_params(dbname: str | None = None) -> dict[str, object]:
    """psycopg / Django connection parameters for ``dbname`` on the bench PostgreSQL server."""
    url = urlparse(POSTGRES_URL)
    return {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password or "",
        "dbname": dbname or (url.path.lstrip("/") or "postgres"),
    }
