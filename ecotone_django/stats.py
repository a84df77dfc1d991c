"""What a worker counts, and the time limit it puts on a handler."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from .exceptions import HandlerTimeoutError
from .processing import Outcome

__all__ = ["Stats", "TimeLimit"]


@dataclass
class Stats:
    handled: int = 0
    duplicates: int = 0
    retried: int = 0
    dead: int = 0
    relayed: int = 0
    consecutive_failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcome: Outcome) -> None:
        with self.lock:
            if outcome is Outcome.HANDLED:
                self.handled += 1
                self.consecutive_failures = 0
            elif outcome is Outcome.DUPLICATE:
                self.duplicates += 1
            elif outcome is Outcome.RETRY:
                self.retried += 1
                self.consecutive_failures += 1
            else:
                self.dead += 1
                self.consecutive_failures += 1

    def count_rejected(self) -> None:
        """A delivery the transport could not read was dead-lettered (no handler failed: no failure streak)."""
        with self.lock:
            self.dead += 1

    def snapshot(self) -> tuple[int, int, int, int, int]:
        with self.lock:
            return (self.handled, self.duplicates, self.retried, self.dead, self.consecutive_failures)

    def restore(self, counts: tuple[int, int, int, int, int]) -> None:
        """Forget outcomes counted since :meth:`snapshot` (their transaction was rolled back)."""
        with self.lock:
            self.handled, self.duplicates, self.retried, self.dead, self.consecutive_failures = counts

    @property
    def total(self) -> int:
        return self.handled + self.duplicates + self.retried + self.dead

    def line(self) -> str:
        return (
            f"handled={self.handled} duplicates={self.duplicates} retried={self.retried} "
            f"dead={self.dead} relayed={self.relayed}"
        )


class TimeLimit:
    """Raise HandlerTimeoutError in the handler if it runs past ``seconds`` (main thread only)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if seconds and threading.current_thread() is threading.main_thread() else None

    def _expired(self, signum: int, frame: FrameType | None) -> None:
        raise HandlerTimeoutError(f"handler exceeded the time limit of {self.seconds} s")

    def __enter__(self) -> None:
        if self.seconds:
            signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc: Any) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
