"""The time ecotone_django schedules by.

Delays are rows with ``available_at``; whether a row is due is decided by
:func:`now`. The testing harness moves this clock forward so that delayed
messages fire without waiting; production code never changes it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._offset += delta

    def reset(self) -> None:
        with self._lock:
            self._offset = timedelta(0)


clock = Clock()


def now() -> datetime:
    """The current time, aware and in UTC."""
    return clock.now()
