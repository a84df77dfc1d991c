"""The tools of the peer comparison and the names they use (no Django, no tool imports).

Every tool gets a database of its own (``<prefix>peer_<tool>``) and, on RabbitMQ, a queue of its own,
both under the bench's namespace (``ECOTONE_BENCH_ID``): created and dropped by the bench.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, urlparse

from ..config import PREFIX, RABBITMQ_URL

#: The tool a process of the comparison runs as (the producer's and the worker's settings read it).
TOOL_ENV = "ECOTONE_BENCH_PEER"

#: Seconds between two polls of every polling worker in the comparison (ours and the peers' alike).
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Tool:
    name: str
    family: str  # "database" or "broker"
    ours: bool
    label: str
    packages: tuple[str, ...]  # importable modules the tool needs (the bench extra installs them)
    #: Not a peer: the least its family's promise costs, in bare code (no crash phase, never "the best peer").
    yardstick: bool = False

    @property
    def database(self) -> str:
        return f"{PREFIX}peer_{self.name}"

    @property
    def queue(self) -> str:
        return f"{PREFIX}peer_{self.name}"


TOOLS = {
    t.name: t
    for t in (
        Tool("ecotone_db", "database", True, "ecotone DatabaseChannel", ("ecotone_django",)),
        Tool("procrastinate", "database", False, "procrastinate (Django)", ("procrastinate",)),
        Tool("django_tasks_db", "database", False, "django-tasks-db db_worker", ("django_tasks", "django_tasks_db")),
        Tool("dbos", "database", False, "DBOS queue", ("dbos",)),
        Tool("ecotone_rabbit", "broker", True, "ecotone CeleryChannel", ("ecotone_django",)),
        Tool("celery", "broker", False, "Celery (on_commit, acks_late)", ("celery",)),
        Tool("dramatiq", "broker", False, "dramatiq (django_dramatiq)", ("dramatiq", "django_dramatiq", "pika")),
        Tool(
            "minimal_broker",
            "broker",
            False,
            "minimal deduplicating path (bare psycopg + kombu; yardstick)",
            ("psycopg",),  # and kombu, a dependency of the package (its module has no __spec__ to look up)
            yardstick=True,
        ),
    )
}


def pika_url(url: str) -> str:
    """kombu's ``amqp://…//`` (vhost ``/``) spelled for pika, which wants the vhost URL-quoted."""
    parsed = urlparse(url)
    vhost = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
    return parsed._replace(path="/" + quote(vhost or "/", safe="")).geturl()


def current() -> Tool:
    """The tool of this process (``ECOTONE_BENCH_PEER``)."""
    name = os.environ.get(TOOL_ENV, "")
    if name not in TOOLS:
        raise RuntimeError(f"{TOOL_ENV} must name one of {', '.join(TOOLS)}, not {name!r}")
    return TOOLS[name]


__all__ = ["POLL_INTERVAL", "RABBITMQ_URL", "TOOLS", "TOOL_ENV", "Tool", "current", "pika_url"]
