"""What happens to a message whose handler failed: retry later, or dead letter."""

from __future__ import annotations

from datetime import datetime

from .clock import now
from .conf import get_config
from .handlers import Handler
from .messages import Envelope
from .outbox import enqueue

__all__ = ["describe", "schedule_retry"]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def schedule_retry(envelope: Envelope, handler: Handler, channel: str, attempts: int, exc: BaseException) -> datetime:
    """Store the message again with ``available_at`` = now + backoff with jitter (held in the database, not the broker).

    Returns when the next attempt is due.
    """
    due = now() + get_config().retry.delay(attempts)
    enqueue(envelope, handler, channel, due, attempts=attempts, last_error=describe(exc))
    return due
