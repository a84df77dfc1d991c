"""Availability of the external services the tests use (PostgreSQL, MariaDB, RabbitMQ, Redis, SQS, Kafka).

Locally a test whose service is unreachable is *skipped*; with ``CI`` set (``1``, ``true``, ``yes`` …) it *fails*,
so a CI run can never go green by silently skipping the integration tests::

    from tests.helpers.services import require, service_url

    def test_publish_to_rabbitmq():
        require("rabbitmq")
        broker_url = service_url("rabbitmq")
        ...

URLs come from the environment (``POSTGRES_URL``, ``MARIADB_URL``, ``RABBITMQ_URL``, ``REDIS_URL``,
``SQS_URL``, ``KAFKA_URL``) with defaults matching ``.ci/services.sh`` and ``docker-compose.yml``.
SQS and Kafka need no server of their own: unless ``SQS_URL`` / ``KAFKA_URL`` is set, the fixtures of
``tests.helpers.local_servers`` start moto's server and Tansu on a free loopback port and set the
variable. Standard library + pytest only.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = ["SERVICES", "in_ci", "is_reachable", "require", "service_address", "service_url", "unavailable"]

# service name -> (environment variable, default URL)
SERVICES: dict[str, tuple[str, str]] = {
    "postgres": ("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
    "mariadb": ("MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
    "rabbitmq": ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "redis": ("REDIS_URL", "redis://127.0.0.1:6379/0"),
    "sqs": ("SQS_URL", "sqs://testing:testing@127.0.0.1:9324"),
    "kafka": ("KAFKA_URL", "confluentkafka://127.0.0.1:9092"),
}

# Other spellings people reach for.
_ALIASES = {
    "postgresql": "postgres",
    "pg": "postgres",
    "mysql": "mariadb",
    "amqp": "rabbitmq",
    "elasticmq": "sqs",
    "confluentkafka": "kafka",
}

_DEFAULT_PORTS = {
    "postgres": 5432,
    "postgresql": 5432,
    "mysql": 3306,
    "mariadb": 3306,
    "amqp": 5672,
    "amqps": 5671,
    "pyamqp": 5672,
    "redis": 6379,
    "rediss": 6379,
    "sqs": 9324,
    "confluentkafka": 9092,
}

CONNECT_TIMEOUT = 1.0


def _canonical(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(SERVICES)}")
    return key


# CI=... values that mean "not in CI"; any other non-empty value (1, true, True, yes, a CI system's name) means CI.
_NOT_CI = frozenset({"", "0", "false", "no", "off", "n", "f"})


def in_ci() -> bool:
    """True when running in CI (``CI`` set to ``1``, ``true``, ``yes`` …): missing services are failures, not skips."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def service_url(name: str) -> str:
    """The URL of a service: its environment variable if set (and non-empty), else the default."""
    env_var, default = SERVICES[_canonical(name)]
    return os.environ.get(env_var) or default


def service_address(name: str) -> tuple[str, int]:
    """(host, port) to connect to for a service, from its URL."""
    parts = urlsplit(service_url(name))
    host = parts.hostname or "127.0.0.1"
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    if not port:
        raise ValueError(f"cannot tell the port of {name} from {_redact(service_url(name))!r}")
    return host, port


@functools.cache
def _tcp_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def is_reachable(name: str) -> bool:
    """True when the service accepts a TCP connection (1 s timeout). Cached per host and port."""
    return _tcp_reachable(*service_address(name))


def require(name: str) -> None:
    """Skip the calling test (or module) if the service is unreachable — or fail it when ``CI=true``."""
    if is_reachable(name):
        return
    _missing(name)


def unavailable(name: str, why: str) -> NoReturn:
    """Skip (locally) or fail (``CI=true``) because ``name`` cannot be had, for the reason ``why``."""
    _missing(name, why)


def _missing(name: str, why: str | None = None) -> NoReturn:
    key = _canonical(name)
    env_var, _ = SERVICES[key]
    host, port = service_address(key)
    where = why or f"{key} is not reachable at {host}:{port} ({env_var}={_redact(service_url(key))})"
    if in_ci():
        pytest.fail(f"{where}; CI requires it (start it with `make services`)", pytrace=False)
    # allow_module_level: also usable at the top of a test module to skip the whole module.
    pytest.skip(f"{where}; start it with `make services` or `docker compose up -d`", allow_module_level=True)


def _redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    userinfo = f"{parts.username or ''}:***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc}"))
