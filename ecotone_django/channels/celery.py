"""``CeleryChannel``: messages travel as JSON Celery tasks on a broker queue.

The outbox row is published after commit (or by the relay) as a protocol-2
Celery task named ``ecotone_django.handle`` with JSON arguments
``[envelope, handler_id, channel, attempts]``, routed to the channel's queue.
So ``celery -A proj worker -Q <queue>`` can run it (see ``ecotone_django.tasks``)
as well as ``manage.py consume_channel``, whose consumer is built on kombu
directly: prefetch 1, ack only after the handler's transaction committed,
requeue when the database is unreachable. On RabbitMQ every publish waits for
the broker's confirm. Delays never use broker ETAs: they wait in the database.

OPTIONS: ``queue`` (default: the channel name), ``app`` (dotted path of the
Celery app; default ``ECOTONE["CELERY_APP"]``), ``prefetch_count`` (default 1).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, close_old_connections
from django.utils.module_loading import import_string
from kombu import Connection, Exchange, Producer, Queue
from kombu.message import Message

from ..conf import get_config
from ..exceptions import ConfigurationError, DecodeError
from .base import BrokerChannel

if TYPE_CHECKING:
    from ..models import OutboxMessage
    from ..worker import Worker

logger = logging.getLogger("ecotone_django.channels.celery")

TASK_NAME = "ecotone_django.handle"
JSON = "application/json"


def task_message(row: OutboxMessage) -> tuple[dict[str, Any], str]:
    """Celery protocol-2 headers and JSON body for an outbox row."""
    task_id = f"{row.message_id}:{row.handler}"[:255]
    headers = {
        "lang": "py",
        "task": TASK_NAME,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": f"({row.message_type!r}, {row.handler!r})",
        "kwargsrepr": "{}",
        "origin": "ecotone_django",
        "ignore_result": True,
    }
    args = [row.body, row.handler, row.channel, row.attempts]
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    return headers, body


def parse_task(headers: Mapping[str, Any], content_type: str | None, body: bytes | str) -> tuple[str, str, str, int]:
    """``(envelope, handler_id, channel, attempts)`` from a Celery task message, or DecodeError."""
    if content_type != JSON:
        raise DecodeError(f"content type {content_type!r} refused: only {JSON} is accepted (never pickle)")
    if headers.get("task") != TASK_NAME:
        raise DecodeError(f"task {headers.get('task')!r} is not an ecotone_django message")
    try:
        decoded = json.loads(body)
        args = decoded[0]
        envelope, handler_id, channel, attempts = args
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise DecodeError(f"malformed task body: {exc}") from None
    if not (
        isinstance(envelope, str)
        and isinstance(handler_id, str)
        and isinstance(channel, str)
        and isinstance(attempts, int)
    ):
        raise DecodeError("task arguments must be [envelope: str, handler: str, channel: str, attempts: int]")
    return envelope, handler_id, channel, attempts


class CeleryChannel(BrokerChannel):
    options_allowed = frozenset({"queue", "app", "prefetch_count"})

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.queue_name = str(options.get("queue", name))
        self.prefetch_count = int(options.get("prefetch_count", 1))
        self.exchange = Exchange(self.queue_name, type="direct", durable=True)
        self.queue = Queue(self.queue_name, self.exchange, routing_key=self.queue_name, durable=True)
        self._app: Any = None
        self._local = threading.local()

    # -- configuration ---------------------------------------------------------

    @property
    def app(self) -> Any:
        if self._app is None:
            path = self.options.get("app") or get_config().celery_app
            if not path:
                raise ConfigurationError(
                    f"CeleryChannel {self.name!r} needs a Celery app: set ECOTONE['CELERY_APP'] or OPTIONS['app']"
                )
            try:
                self._app = import_string(path)
            except ImportError as exc:
                raise ConfigurationError(
                    f"CeleryChannel {self.name!r}: cannot import Celery app {path!r}: {exc}"
                ) from exc
        return self._app

    def connection(self) -> Connection:
        """A new kombu connection to the app's broker (publisher confirms on for AMQP)."""
        conf = self.app.conf
        options = dict(conf.broker_transport_options or {})
        options.setdefault("confirm_publish", True)
        return Connection(conf.broker_url, transport_options=options, connect_timeout=5)

    # -- publishing ------------------------------------------------------------

    def _producer(self) -> Producer:
        producer: Producer | None = getattr(self._local, "producer", None)
        if producer is None:
            conn = self.connection()
            conn.ensure_connection(max_retries=1)
            producer = Producer(conn.channel())
            self.queue(producer.channel).declare()
            self._local.producer = producer
            self._local.conn = conn
        return producer

    def _drop_producer(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.producer = self._local.conn = None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # already broken; nothing to release
                logger.debug("closing a broken broker connection failed", exc_info=True)

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        try:
            producer = self._producer()
            for row in rows:
                headers, body = task_message(row)
                producer.publish(
                    body,
                    exchange=self.exchange,
                    routing_key=self.queue_name,
                    headers=headers,
                    content_type=JSON,
                    content_encoding="utf-8",
                    delivery_mode=2,
                    correlation_id=headers["id"],
                    retry=False,
                )
        except Exception:
            self._drop_producer()
            raise

    def close(self) -> None:
        self._drop_producer()

    # -- consuming -------------------------------------------------------------

    def on_message(self, worker: Worker, message: Message) -> None:
        from ..tenancy import alias_for

        fallback = alias_for(None)
        try:
            envelope, handler_id, channel, attempts = parse_task(message.headers, message.content_type, message.body)
        except DecodeError as exc:
            from ..retry import dead_letter, safe_text

            dead_letter(
                fallback,
                reason=str(exc)[:255],
                body=safe_text(message.body),
                exc=exc,
                channel=self.name,
                handler_id=str(message.headers.get("task", ""))[:255],
            )
            worker.stats.dead += 1
            message.ack()
            return
        try:
            worker.handle_delivery(envelope, handler_id, channel, attempts, fallback_alias=fallback)
        except DatabaseError as exc:
            logger.warning("database unavailable (%s); message requeued", exc)
            close_old_connections()
            message.requeue()
            worker._stop.wait(worker.poll_interval)
            return
        message.ack()

    def consume(self, worker: Worker) -> None:
        """Consume the queue until the worker stops, reconnecting after broker outages."""
        backoff = 0.5
        while not worker.should_stop():
            conn = self.connection()
            try:
                conn.ensure_connection(max_retries=1)
                with conn.Consumer(
                    [self.queue],
                    on_message=lambda m: self.on_message(worker, m),
                    prefetch_count=self.prefetch_count,
                    accept=[JSON],
                ):
                    backoff = 0.5
                    while not worker.should_stop():
                        try:
                            conn.drain_events(timeout=worker.poll_interval)
                        except TimeoutError:
                            if worker.stop_when_empty and not self._relay_pending(worker):
                                worker.stop()
            except TimeoutError:
                continue
            except conn.recoverable_connection_errors + conn.connection_errors as exc:
                logger.warning("broker connection for %r lost (%s); reconnecting in %.1f s", self.name, exc, backoff)
                worker._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                try:
                    conn.release()
                except Exception:
                    logger.debug("releasing the consumer connection failed", exc_info=True)
                close_old_connections()

    def _relay_pending(self, worker: Worker) -> bool:
        from ..clock import now
        from ..models import OutboxMessage

        return any(
            OutboxMessage.objects.using(alias).filter(channel=self.name, available_at__lte=now()).exists()
            for alias in worker.aliases
        )
