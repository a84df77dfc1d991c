"""Fixtures for the SQS and Kafka channels (``sqs``, ``kafka`` in the test settings).

* ``sqs_server`` / ``kafka_server`` (session): the URL of a server for the run. ``SQS_URL`` / ``KAFKA_URL``
  name one if set (ElasticMQ, LocalStack, a Kafka of your own; ``require`` checks it answers); otherwise
  moto's server / Tansu is started on a free loopback port for the session (``tests.helpers.local_servers``)
  and the variable is set, so worker processes spawned afterwards find it. Missing packages skip
  locally and fail under ``CI=true``.
* ``sqs_queue`` / ``kafka_queue``: a queue (topic) of its own for each test, so that nothing a test leaves
  behind — a message a killed worker held, a consumer group member not yet expired — reaches the next.
  The name goes to this process through ``override_settings`` and to worker processes through
  ``ECOTONE_TEST_SQS_QUEUE`` / ``ECOTONE_TEST_KAFKA_QUEUE`` (read by ``tests/settings.py``).

Like the RabbitMQ and Redis fixtures, they run only in the ``ECOTONE_TEST_DB=postgres`` run.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings
from kombu import Connection

from ecotone_django.channels import channels
from tests.helpers.local_servers import LocalServer, start_kafka, start_sqs
from tests.helpers.services import require, unavailable

_counter = itertools.count(1)


def only_on_postgres() -> None:
    if settings.ENGINE != "postgres":
        pytest.skip("broker tests run once, in the ECOTONE_TEST_DB=postgres run (the database engine is irrelevant)")


def _app(name: str) -> object:
    from tests import celery_apps

    return getattr(celery_apps, name)


@contextlib.contextmanager
def _server(service: str, env_var: str, app: str, start: object) -> Iterator[str]:
    given = os.environ.get(env_var)
    if given:
        require(service)
        yield given
        return
    try:
        server: LocalServer = start()  # type: ignore[operator]
    except (FileNotFoundError, ImportError) as exc:
        unavailable(service, f"no local {service} server: {exc}")
    celery_app = _app(app)
    previous = celery_app.conf.broker_url  # type: ignore[attr-defined]
    os.environ[env_var] = server.url
    celery_app.conf.broker_url = server.url  # type: ignore[attr-defined]
    channels.reset()
    try:
        yield server.url
    finally:
        os.environ.pop(env_var, None)
        celery_app.conf.broker_url = previous  # type: ignore[attr-defined]
        channels.reset()
        server.stop()


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[str]:
    only_on_postgres()
    with _server("sqs", "SQS_URL", "sqs_app", start_sqs) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[str]:
    only_on_postgres()
    with _server("kafka", "KAFKA_URL", "kafka_app", start_kafka) as url:
        yield url


@contextlib.contextmanager
def own_queue(channel: str, env_var: str) -> Iterator[str]:
    """The channel publishes to and consumes from a new queue for the block (here and in worker processes)."""
    name = f"{settings.QUEUE_PREFIX}{channel}_{next(_counter)}"
    ecotone = copy.deepcopy(settings.ECOTONE)
    ecotone["CHANNELS"][channel]["OPTIONS"]["queue"] = name
    os.environ[env_var] = name
    try:
        with override_settings(ECOTONE=ecotone):
            yield name
            channels.reset()
    finally:
        os.environ.pop(env_var, None)
        channels.reset()


@pytest.fixture
def sqs_queue(sqs_server: str) -> Iterator[str]:
    with own_queue("sqs", "ECOTONE_TEST_SQS_QUEUE") as name:
        yield name
        with contextlib.suppress(Exception), Connection(sqs_server, transport_options=_sqs_options()) as conn:
            conn.default_channel._delete(name)


@pytest.fixture
def kafka_queue(kafka_server: str) -> Iterator[str]:
    with own_queue("kafka", "ECOTONE_TEST_KAFKA_QUEUE") as name:
        yield name


def _sqs_options() -> dict[str, object]:
    return dict(_app("sqs_app").conf.broker_transport_options)  # type: ignore[attr-defined]
