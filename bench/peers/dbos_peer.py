"""DBOS queues: a workflow of one step (the Django ORM write), enqueued in the request's transaction.

DBOS keeps its system tables (schema ``dbos``) in the tool's own database, next to the shop tables, so
``DBOSClient.enqueue_in_transaction`` can write the workflow row on the request's connection: a
SQLAlchemy connection over Django's own psycopg connection (DBOS neither commits nor rolls it back).
The request side is a client (DBOS's documented "queue worker" layout: web servers enqueue with
``DBOSClient``, worker processes launch DBOS and dequeue); ``python -m bench.peers.dbos_peer`` is the
worker: one process, ``worker_concurrency=1``, polling every POLL_INTERVAL.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import django
import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSConfig
from django.db import connection

from ..config import postgres_params
from .config import POLL_INTERVAL, current

APP_NAME = "ecotone_bench_peers"
WORKFLOW = "bench_peers_ship"
QUEUE = current().queue
WORKER_CONCURRENCY = int(os.environ.get("ECOTONE_BENCH_DBOS_CONCURRENCY", "32"))


def system_database_url() -> str:
    p = postgres_params(current().database)
    auth = f"{p['user']}:{p['password']}" if p["password"] else f"{p['user']}"
    return f"postgresql://{auth}@{p['host']}:{p['port']}/{p['dbname']}"


def config() -> DBOSConfig:
    return {"name": APP_NAME, "system_database_url": system_database_url(), "log_level": "WARNING"}


@DBOS.step()
def ship_step(order_id: int) -> None:
    from .work import ship

    ship(order_id)


@DBOS.workflow(name=WORKFLOW)
def ship_workflow(order_id: int) -> None:
    ship_step(order_id)


class Enqueuer:
    """The request side: ``enqueue_in_transaction`` on Django's connection, inside the request's atomic()."""

    def __init__(self) -> None:
        self.client = DBOSClient(system_database_url=system_database_url(), lazy=True, application_name=APP_NAME)
        connection.ensure_connection()
        # One SQLAlchemy connection over Django's psycopg connection, kept for the life of the process:
        # closing it would roll the DBAPI connection back.
        engine = sa.create_engine(
            "postgresql+psycopg://",
            creator=lambda: connection.connection,
            poolclass=sa.pool.StaticPool,
            pool_reset_on_return=None,
        )
        self.conn = engine.connect()
        self.options: Any = {"queue_name": QUEUE, "workflow_name": WORKFLOW, "application_name": APP_NAME}

    def __call__(self, order_id: int) -> None:
        self.client.enqueue_in_transaction(self.conn, self.options, order_id)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")
    django.setup()
    DBOS(config=config())
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=WORKER_CONCURRENCY, polling_interval_sec=POLL_INTERVAL)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("dbos worker ready", flush=True)
    stop.wait()
    DBOS.destroy(workflow_completion_timeout_sec=5)


if __name__ == "__main__":
    main()
