"""Whether an OpenTelemetry SDK is behind the global provider yet — asked per message, answered cheaply."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SdkProbe"]

#: Seconds between two looks at the global provider while it is still the API's own.
RECHECK_SECONDS = 1.0


class SdkProbe:
    """``off()`` is true while the global provider is the API's proxy; once an SDK is set it stays false.

    An instrumentation set up before the SDK (an ``AppConfig.ready()`` that runs first) starts recording
    within a second of ``set_tracer_provider()``; until then each message costs a clock read, not an
    environment lookup. ``watch=False`` (an explicit provider was given): never off.
    """

    def __init__(self, provider: Callable[[], object], api_module: str, *, watch: bool = True) -> None:
        self._provider = provider
        self._api_module = api_module
        self._on = not watch
        self._next_look = 0.0

    def off(self) -> bool:
        if self._on:
            return False
        moment = time.monotonic()
        if moment < self._next_look:
            return True
        self._next_look = moment + RECHECK_SECONDS
        self._on = not type(self._provider()).__module__.startswith(self._api_module)
        return not self._on
