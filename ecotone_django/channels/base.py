"""The channel contract every backend implements, and the delivery a channel hands to a worker.

A channel is a transport. It stores or publishes messages (broker channels publish outbox rows) and
hands deliveries to whoever consumes it; it never handles a message itself. The worker
(:mod:`ecotone_django.worker`) pulls deliveries from a channel's consumer, decides when to stop,
counts, and settles each delivery through the consumer: ``ack`` once its outcome is committed,
``requeue`` to have it delivered again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..exceptions import ConfigurationError, DecodeError, did_you_mean
from ..messages import Envelope

if TYPE_CHECKING:
    from ..models import OutboxMessage

__all__ = ["BrokerChannel", "BrokerConsumer", "Channel", "Delivery"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a channel hands it over.

    ``body`` is the envelope as sent, for ``handler_id`` on ``channel``, after ``attempts`` failed
    attempts; ``envelope`` is that body decoded, when the transport decoded it. ``error`` says why the
    transport could not read a message at all (not JSON, not our task): the worker dead-letters it.
    ``tag`` is the transport's own handle that settling the delivery needs (a row id, a broker message).
    """

    body: str | bytes
    handler_id: str
    channel: str
    attempts: int = 0
    envelope: Envelope | None = None
    error: DecodeError | None = None
    tag: Any = field(default=None, compare=False, repr=False)


class Channel:
    """A named place where asynchronous messages wait for a worker.

    ``is_*`` flags tell the outbox, the worker and the checks what a backend is. Every channel keeps
    its delayed and retried messages in the tenant database (``OutboxMessage.available_at``); no
    backend relies on broker ETAs.
    """

    #: Options accepted in OPTIONS; anything else is rejected by name.
    options_allowed: ClassVar[frozenset[str]] = frozenset()
    #: Messages are published to an external broker after commit (outbox + relay).
    is_broker: ClassVar[bool] = False
    #: The channel only routes to other channels.
    is_dynamic: ClassVar[bool] = False

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - self.options_allowed, key=str)
        if unknown:
            allowed = ", ".join(sorted(self.options_allowed)) or "none"
            named = ", ".join(f"{key!r}{did_you_mean(key, self.options_allowed)}" for key in unknown)
            raise ConfigurationError(
                f"channel {name!r} ({type(self).__name__}) has unknown OPTIONS {named}; valid options: {allowed}"
            )
        self.name = name
        self.options = dict(options)

    def resolve(self, envelope: Envelope) -> str:
        """The concrete channel this envelope is stored for (dynamic channels route; others are themselves)."""
        return self.name

    def targets(self) -> Sequence[str]:
        """Channels a consumer of this channel consumes."""
        return [self.name]

    def close(self) -> None:
        """Release connections (called when settings change and at worker exit)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class BrokerConsumer(Protocol):
    """One consumer of a broker channel's queue, used by one worker thread.

    It connects on first use and after :meth:`close`. A lost connection raises
    :class:`~ecotone_django.exceptions.BrokerConnectionError` (the worker waits and calls again, which
    reconnects); a consumer that must not run as configured raises ``ConfigurationError``.
    """

    @property
    def window(self) -> int:
        """How many deliveries the broker may hand this consumer before it settles one (its prefetch)."""
        ...

    @property
    def max_window(self) -> int:
        """The largest window the channel allows (``prefetch_count``)."""
        ...

    def receive(self, limit: int, timeout: float) -> list[Delivery]:
        """Deliveries that have arrived, ``limit`` or so; waits up to ``timeout`` s for a first one."""
        ...

    def resize(self, wanted: int) -> None:
        """Move the window towards ``wanted`` (see :meth:`window`)."""
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Settle deliveries whose outcome is committed: the broker forgets them."""
        ...

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        """Give deliveries back: the broker delivers them again."""
        ...

    def pending(self) -> bool:
        """Whether work is left: deliveries held or buffered here, or messages waiting in the queue."""
        ...

    def close(self) -> None:
        """Disconnect; deliveries not settled are delivered again by the broker."""
        ...


class BrokerChannel(Channel):
    """A channel backed by a message broker: the outbox row is published after commit."""

    is_broker = True

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        """Publish rows to the broker, returning only once the broker has them (confirms)."""
        raise NotImplementedError

    def depth(self) -> int:
        """Messages ready in this channel's queue (not counting those consumers hold unacknowledged)."""
        raise NotImplementedError

    def consume(self, *, time_limit: float | None, consumers: int) -> BrokerConsumer:
        """A consumer of this channel's queue, for one of ``consumers`` threads whose handlers may run
        ``time_limit`` seconds (a transport may refuse a configuration it cannot serve)."""
        raise NotImplementedError
