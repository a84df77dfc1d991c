"""Fixtures and helpers for tests on the real RabbitMQ and Redis brokers.

* ``rabbit_queue`` / ``redis_queue``: the run's test queue of the ``rabbit`` / ``redis`` channel, emptied
  before the test and deleted after it (the queue names carry the pytest run id, so parallel runs never
  share a queue). Both skip unless the suite runs on PostgreSQL (the database engine is irrelevant to
  the broker, and running them once saves CI time) and need the broker (``require``).
* ``rabbit_outage()`` / ``redis_outage()``: context managers that stop the broker and always start it
  again, waiting until it accepts connections.
* ``queue_depth``, ``publish_raw``, ``get_one``: kombu, used directly, to look at or tamper with a queue.
* ``spawn_celery_worker``: a real ``python -m celery … worker`` process.

Import the fixtures in a test module with ``from tests.integration.broker_fixtures import rabbit_queue``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.conf import settings
from kombu import Connection, Queue
from kombu.message import Message

from ecotone_django.channels import channels
from tests.helpers.processes import ManagedProcess, wait_for
from tests.helpers.services import require, service_url

#: How long a broker may take to come back after it was started again.
BROKER_START_TIMEOUT = 60.0


def _only_on_postgres() -> None:
    if settings.ENGINE != "postgres":
        pytest.skip("broker tests run once, in the ECOTONE_TEST_DB=postgres run (the database engine is irrelevant)")


def queue_name(channel: str) -> str:
    return str(channels[channel].queue_name)  # type: ignore[attr-defined]


def rabbit_url() -> str:
    return service_url("rabbitmq")


def redis_url() -> str:
    return service_url("redis")


def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare on RabbitMQ, the list length on Redis)."""
    with Connection(url, connect_timeout=5) as conn:
        if conn.transport.driver_type == "redis":
            client = conn.channel().client
            return int(client.llen(queue))
        _, count, _ = conn.channel().queue_declare(queue=queue, passive=True)
        return int(count)


def purge(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=5) as conn:
        Queue(queue, durable=True)(conn.channel()).declare()
        Queue(queue)(conn.channel()).purge()


def delete(url: str, queue: str) -> None:
    with Connection(url, connect_timeout=5) as conn:
        if conn.transport.driver_type == "redis":
            conn.channel().client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
            return
        with contextlib.suppress(Exception):
            conn.channel().queue_delete(queue)
        with contextlib.suppress(Exception):
            conn.channel().exchange_delete(queue)


def publish_raw(
    url: str,
    queue: str,
    body: bytes | str,
    *,
    headers: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    content_encoding: str = "utf-8",
    **properties: Any,
) -> None:
    """Put ``body`` on ``queue`` exactly as given (no serializer involved)."""
    with Connection(url, connect_timeout=5) as conn:
        conn.Producer().publish(
            body,
            exchange="",
            routing_key=queue,
            headers=dict(headers or {}),
            content_type=content_type,
            content_encoding=content_encoding,
            delivery_mode=2,
            **properties,
        )


@contextlib.contextmanager
def get_one(url: str, queue: str, timeout: float = 10.0) -> Iterator[Message]:
    """Take one message off ``queue`` (waiting up to ``timeout``); it goes back unless the block acks it."""
    with Connection(url, connect_timeout=5) as conn:
        simple = conn.SimpleQueue(Queue(queue, durable=True), no_ack=False)
        message = simple.get(block=True, timeout=timeout)
        try:
            yield message
        finally:
            if not message.acknowledged:
                message.requeue()
            simple.close()


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
def rabbit_queue() -> Iterator[str]:
    """The ``rabbit`` channel's queue, empty; deleted afterwards."""
    _only_on_postgres()
    require("rabbitmq")
    name = queue_name("rabbit")
    purge(rabbit_url(), name)
    yield name
    channels.reset()  # drop this process's kept publishing connections
    delete(rabbit_url(), name)


@pytest.fixture
def redis_queue() -> Iterator[str]:
    """The ``redis`` channel's queue, empty; deleted afterwards."""
    _only_on_postgres()
    require("redis")
    name = queue_name("redis")
    delete(redis_url(), name)
    yield name
    channels.reset()
    delete(redis_url(), name)


# -- outages ----------------------------------------------------------------------------------------------


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")


def _accepts(url: str) -> bool:
    """A TCP connect plus a full protocol handshake (AMQP open / Redis PING) succeed."""
    try:
        with Connection(url, connect_timeout=1) as conn:
            conn.ensure_connection(max_retries=0)
            channel = conn.channel()
            if conn.transport.driver_type == "redis":
                channel.client.ping()
            return True
    except Exception:
        return False


@contextlib.contextmanager
def rabbit_outage() -> Iterator[None]:
    """RabbitMQ stopped (``rabbitmqctl stop_app``) for the block; started again whatever happens."""
    _run("rabbitmqctl", "stop_app")
    try:
        wait_for(lambda: not _accepts(rabbit_url()), timeout=30, message="RabbitMQ to refuse connections")
        yield
    finally:
        _run("rabbitmqctl", "start_app")
        wait_for(lambda: _accepts(rabbit_url()), timeout=BROKER_START_TIMEOUT, message="RabbitMQ to accept AMQP")


@contextlib.contextmanager
def redis_outage() -> Iterator[None]:
    """Redis shut down (without saving) for the block; started again whatever happens.

    This Redis keeps nothing on disk: whatever its lists held is gone afterwards, so a test stops it only
    while its messages still wait in the outbox.
    """
    _run("redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave")
    try:
        wait_for(lambda: not _accepts(redis_url()), timeout=30, message="Redis to refuse connections")
        yield
    finally:
        if not _accepts(redis_url()):
            _run(
                "redis-server",
                "--daemonize", "yes",
                "--bind", "127.0.0.1",
                "--port", "6379",
                "--save", "",
                "--appendonly", "no",
            )  # fmt: skip
        wait_for(lambda: _accepts(redis_url()), timeout=BROKER_START_TIMEOUT, message="Redis to accept connections")


# -- celery worker processes --------------------------------------------------------------------------------


class CeleryWorkerProcess(ManagedProcess):
    """``python -m celery ARGS...`` from the repository root (the rest behaves like ManagedProcess)."""

    def __init__(self, *args: str, env: Mapping[str, str | None]) -> None:
        super().__init__(env=env, argv=[sys.executable, "-m", "celery", *args], log_prefix="ecotone-celery-")


def spawn_celery_worker(app: str, queue: str, env: Mapping[str, str | None]) -> CeleryWorkerProcess:
    """A Celery worker consuming ``queue`` one message at a time (solo pool, prefetch 1)."""
    return CeleryWorkerProcess(
        "-A", app, "worker",
        "-Q", queue,
        "--pool", "solo",
        "--prefetch-multiplier", "1",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "INFO",
        env=env,
    )  # fmt: skip
