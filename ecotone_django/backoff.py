"""Exponential backoff per key: a database (or anything else) that failed is left alone for a while.

A worker serving several tenant databases must not let one that is down slow down the others: instead
of pausing its whole loop after a failure, it skips that database until its next try, half a second
after the first failure, doubling up to :data:`MAX_BACKOFF` seconds while it keeps failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["FIRST_BACKOFF", "MAX_BACKOFF", "Backoff"]

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0


class Backoff:
    """When each failing key may be tried again; thread-safe (a worker's consumer threads share one)."""

    def __init__(
        self, first: float = FIRST_BACKOFF, maximum: float = MAX_BACKOFF, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.first = first
        self.maximum = maximum
        self.clock = clock
        self._delay: dict[Hashable, float] = {}
        self._next_try: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable) -> bool:
        """Whether ``key`` may be tried now (it never failed, or its backoff has passed)."""
        return self.clock() >= self._next_try.get(key, 0.0)

    def failed(self, key: Hashable) -> float:
        """Record a failure of ``key``; returns the seconds until it is tried again."""
        with self._lock:
            delay = min(self._delay[key] * 2, self.maximum) if key in self._delay else self.first
            self._delay[key] = delay
            self._next_try[key] = self.clock() + delay
        return delay

    def succeeded(self, key: Hashable) -> None:
        """``key`` works again: no more backoff."""
        if key in self._delay:
            with self._lock:
                self._delay.pop(key, None)
                self._next_try.pop(key, None)
