"""A circuit breaker for publishing to a broker.

A broker that stops answering (a dropped route, a dead load balancer, a resource alarm) costs every
publish its full timeout. The breaker remembers the failure: after one, it *opens* and every publish
fails at once with :class:`~ecotone_django.exceptions.BrokerUnavailableError` (the caller keeps the
message in the outbox) until ``cool_down`` seconds have passed. Then it is *half open*: the next publish
is the probe, and only that one; meanwhile the others still fail at once. A probe that succeeds closes
the breaker; one that fails opens it for another cool-down.

So a request that sends while the broker is known bad never waits for it, and a process pays the
timeout at most once per cool-down, whoever publishes (a request, the after-commit hook or the relay).

Only a failure that cost time opens it (the caller says which: a timeout, a blocked broker, a failure
that took long). A broker that refuses at once (stopped, restarting) costs nothing to try, so such a
failure leaves the breaker closed — and ends a probe: the broker answers again, if only with a refusal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..exceptions import BrokerUnavailableError

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Thread-safe: closed → (a failure) → open → (the cool-down) → half open → (the probe) → closed or open."""

    def __init__(self, name: str, cool_down: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.cool_down = cool_down
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._probing = False
        self._reason = ""

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (the cool-down is over, or a probe is under way)."""
        with self._lock:
            if self._open_until is None:
                return "closed"
            return "half-open" if self._probing or self._clock() >= self._open_until else "open"

    def before_call(self) -> None:
        """Let a call through (closed, or the probe of a half-open breaker); raise at once otherwise."""
        if self.cool_down <= 0:
            return
        with self._lock:
            if self._open_until is None:
                return
            remaining = self._open_until - self._clock()
            if remaining <= 0 and not self._probing:
                self._probing = True  # this call is the probe
                return
            wait = f"retrying in {remaining:.1f} s" if remaining > 0 else "a probe is under way"
            raise BrokerUnavailableError(
                f"broker of {self.name!r} is unavailable ({self._reason}); {wait}", retry_after=max(remaining, 0.0)
            )

    def succeeded(self) -> None:
        with self._lock:
            self._open_until = None
            self._probing = False

    def failed(self, exc: BaseException, *, slow: bool = True) -> None:
        """A call failed: a ``slow`` failure opens the breaker; a quick one (a refusal) closes it."""
        if self.cool_down <= 0 or isinstance(exc, BrokerUnavailableError):
            return
        if not slow:
            self.succeeded()
            return
        with self._lock:
            self._open_until = self._clock() + self.cool_down
            self._probing = False
            self._reason = f"{type(exc).__name__}: {exc}"[:200]
