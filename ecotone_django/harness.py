"""The in-process messaging harness behind :mod:`ecotone_django.testing` (see there for how to use it).

While it is active (``with MessagingHarness() as h:`` or the ``ecotone`` fixture):

- **Broker channels become database channels of the same name.** Their
  messages stay as rows in the tenant's outbox table and :meth:`MessagingHarness.run`
  handles them in-process like those of any database channel. The harness tests
  handler logic — routing, tenancy, sagas, delays, retries, dead letters — not
  the broker; test the broker with real ``consume_channel`` workers.
- **Every message sent through the buses is recorded** in order, with its
  headers, at send time (also when the sender's transaction later rolls back),
  from the :data:`~ecotone_django.signals.message_sent` signal.
- **Time is the test clock** (:data:`ecotone_django.clock.clock`): delayed
  messages, saga timeouts and retry backoff wait until :meth:`MessagingHarness.advance`
  moves it past them. Leaving the harness resets the clock.

:meth:`MessagingHarness.run` handles messages the way a worker does — one transaction each
with the inbox row, the handler, its saga state and what it sends; retries
and dead letters — in this thread, so it works in plain ``django_db`` tests
(inside the test transaction) as well as in ``transaction=True`` ones. The
test needs access to the databases the flow touches; databases it may not use
cannot hold its messages and are skipped.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

from django.conf import settings
from django.test.testcases import DatabaseOperationForbidden  # type: ignore[attr-defined]
from django.test.utils import override_settings

from .bus import command_bus, event_bus, query_bus
from .channels import channels
from .clock import clock
from .conf import get_config
from .declarations import Kind
from .discovery import registry_override
from .handlers import build_handler, handlers_of_class
from .messages import Envelope
from .models import DeadLetter, OutboxMessage
from .registry import Registry
from .sagas import load_saga
from .signals import message_sent
from .tenancy import alias_for
from .worker import Worker

__all__ = ["HarnessError", "MessagingHarness", "RecordedMessage", "registry_of", "use_registry"]

DATABASE_CHANNEL = "ecotone_django.channels.DatabaseChannel"


class HarnessError(AssertionError):
    """The harness was misused, or a flow did not become quiet."""


@dataclass(frozen=True)
class RecordedMessage:
    """A message sent through a bus while the harness was active."""

    kind: Kind  # "command" | "event" | "query" | "internal"
    message: Any
    headers: Mapping[str, Any]
    message_id: str

    @property
    def type(self) -> type:
        return type(self.message)


class MessagingHarness:
    """Send, publish, run channels until quiet and move time forward, all in the test process."""

    def __init__(self) -> None:
        self.recorded: list[RecordedMessage] = []
        self._lock = threading.Lock()
        self._settings: override_settings | None = None
        self._forbidden: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> MessagingHarness:
        if self._settings is not None:
            raise HarnessError("the harness is already active")
        self._settings = override_settings(ECOTONE=_without_brokers(getattr(settings, "ECOTONE", {})))
        self._settings.enable()
        message_sent.connect(self._observe, weak=False)
        return self

    def stop(self) -> None:
        message_sent.disconnect(self._observe)
        if self._settings is not None:
            self._settings.disable()
            self._settings = None
        clock.reset()

    def __enter__(self) -> MessagingHarness:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- sending -----------------------------------------------------------------

    def send(self, command: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        """``command_bus.send``: the result of a synchronous handler, ``None`` for an asynchronous one."""
        return command_bus.send(command, metadata=metadata)

    def publish(self, event: Any, metadata: Mapping[str, Any] | None = None) -> None:
        """``event_bus.publish``: synchronous subscribers run now, asynchronous ones on :meth:`run`."""
        event_bus.publish(event, metadata=metadata)

    def query(self, query: Any, metadata: Mapping[str, Any] | None = None) -> Any:
        """``query_bus.send``: the answer."""
        return query_bus.send(query, metadata=metadata)

    # -- running -----------------------------------------------------------------

    def run(self, channels: Iterable[str] | None = None, max_messages: int = 10_000) -> int:
        """Handle due messages of ``channels`` (default: all) in every tenant database until none is due.

        Returns how many deliveries were handled (retries and duplicates count). Raises
        :class:`HarnessError` if the flow is still busy after ``max_messages`` (a message loop).
        """
        self._require_active()
        worker = Worker(list(channels) if channels is not None else _channel_names(), relay=False)
        aliases = [alias for alias in worker.aliases if alias in self._aliases()]
        handled = 0
        while True:
            progressed = False
            for alias in aliases:
                while batch := worker.consume_database_batch(alias):
                    handled += batch
                    progressed = True
                    if handled >= max_messages:
                        raise HarnessError(f"still not quiet after {handled} messages (a message loop?)")
            if not progressed:
                return handled

    def advance(self, delta: timedelta, *, channels: Iterable[str] | None = None) -> int:
        """Move the test clock forward by ``delta``, then :meth:`run` what became due."""
        if delta < timedelta(0):
            raise HarnessError(f"time only moves forward; got {delta}")
        self._require_active()
        clock.advance(delta)
        return self.run(channels)

    # -- what happened -----------------------------------------------------------

    @property
    def recorded_commands(self) -> list[RecordedMessage]:
        """Commands sent through the command bus, in order."""
        return self._recorded("command")

    @property
    def recorded_events(self) -> list[RecordedMessage]:
        """Events published through the event bus, in order."""
        return self._recorded("event")

    def recorded_messages(self, kind: str | None = None, of: type | None = None) -> list[RecordedMessage]:
        """Recorded messages, optionally of one ``kind`` and/or instances of ``of``."""
        with self._lock:
            return [
                r
                for r in self.recorded
                if (kind is None or r.kind == kind) and (of is None or isinstance(r.message, of))
            ]

    def load_saga(self, cls: type, saga_id: str, tenant: str | None = None) -> Any | None:
        """The saga instance ``saga_id`` from ``tenant``'s database, or ``None``."""
        return load_saga(cls, saga_id, using=alias_for(tenant))

    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters of every tenant database the test may use, oldest first."""
        letters = [d for alias in self._aliases() for d in DeadLetter.objects.using(alias).all()]
        return sorted(letters, key=lambda d: (d.failed_at, d.pk))

    def pending(self, channel: str | None = None) -> list[OutboxMessage]:
        """Messages waiting (due or not) in every tenant database the test may use, soonest first."""
        rows = [
            row
            for alias in self._aliases()
            for row in OutboxMessage.objects.using(alias).all()
            if channel is None or row.channel == channel
        ]
        return sorted(rows, key=lambda r: (r.available_at, r.pk))

    # -- internals ---------------------------------------------------------------

    def _observe(self, sender: Kind, message: Any, envelope: Envelope, **kwargs: Any) -> None:
        with self._lock:
            self.recorded.append(RecordedMessage(sender, message, dict(envelope.headers), envelope.id))

    def _recorded(self, kind: str) -> list[RecordedMessage]:
        return self.recorded_messages(kind)

    def _require_active(self) -> None:
        if self._settings is None:
            raise HarnessError("the harness is not active: use `with MessagingHarness() as h:` or the ecotone fixture")

    def _aliases(self) -> list[str]:
        """Tenant databases the test may use; the others cannot hold its messages."""
        allowed = []
        for alias in get_config().database_aliases:
            if alias in self._forbidden:
                continue
            try:
                OutboxMessage.objects.using(alias).exists()
            except DatabaseOperationForbidden:
                self._forbidden.add(alias)
                continue
            allowed.append(alias)
        return allowed


def _without_brokers(raw: Any) -> dict[str, Any]:
    """The ECOTONE setting with every broker channel replaced by a database channel of the same name."""
    raw = dict(raw or {})
    raw["CHANNELS"] = {
        name: {"BACKEND": DATABASE_CHANNEL} if channels[name].is_broker else spec
        for name, spec in dict(raw.get("CHANNELS", {})).items()
    }
    return raw


def _channel_names() -> list[str]:
    return [channel.name for channel in channels.all() if not channel.is_dynamic]


def registry_of(*objects: Any) -> Registry:
    """A registry of the given handler functions and of the handlers of the given classes."""
    registry = Registry()
    for obj in objects:
        if inspect.isclass(obj):
            for handler in handlers_of_class(obj):
                registry.add(handler)
        else:
            registry.add(build_handler(obj, module=obj.__module__, qualname=obj.__qualname__, owner=None))
    return registry


@contextmanager
def use_registry(registry: Registry) -> Iterator[Registry]:
    """Make ``registry`` the one in force for the block, instead of the project's."""
    token = registry_override.set(registry)
    try:
        yield registry
    finally:
        registry_override.reset(token)
