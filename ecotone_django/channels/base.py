"""The channel contract every backend implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..exceptions import ConfigurationError, did_you_mean
from ..messages import Envelope

if TYPE_CHECKING:
    from ..models import OutboxMessage


class Channel:
    """A named place where asynchronous messages wait for a worker.

    ``supports_*`` flags tell the worker and the checks what a backend can do.
    Every channel keeps its delayed and retried messages in the tenant database
    (``OutboxMessage.available_at``); no backend relies on broker ETAs.
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


class BrokerChannel(Channel):
    """A channel backed by a message broker: the outbox row is published after commit."""

    is_broker = True

    def publish(self, rows: Sequence[OutboxMessage]) -> None:
        """Publish rows to the broker, returning only once the broker has them (confirms)."""
        raise NotImplementedError

    def consume(self, worker: Any) -> None:
        """Consume this channel's queue until ``worker.should_stop()`` (see ecotone_django.worker)."""
        raise NotImplementedError
