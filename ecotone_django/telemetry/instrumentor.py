"""``EcotoneInstrumentor``: switch ecotone_django's spans and metrics on and off.

In the manner of the ``opentelemetry-instrumentation-*`` packages (one instance per process,
``instrument(tracer_provider=..., meter_provider=...)`` / ``uninstrument()``, the global providers by
default), but needing only ``opentelemetry-api``: the core sends signals
(:mod:`ecotone_django.signals`) and this connects the receivers that make spans and record metrics.
Uninstrumented — or instrumented with no SDK configured — the core pays a check per message.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from . import semconv
from .metrics import Metrics
from .tracing import Tracing

__all__ = ["EcotoneInstrumentor"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"

try:
    __version__ = version("ecotone-django")
except PackageNotFoundError:  # running from a source checkout
    __version__ = "0.2.0.dev0"


class EcotoneInstrumentor:
    """Instruments ecotone_django: ``EcotoneInstrumentor().instrument()``; the same instance every time.

    Keyword arguments of :meth:`instrument`: ``tracer_provider`` and ``meter_provider`` (default: the
    global ones), ``tracing`` / ``metrics`` (both ``True``) to leave either out, and ``tenant_label``
    (``False``) to add the tenant to metric attributes — only where tenants are few. A no-op provider
    (``OTEL_SDK_DISABLED``, or passed in) connects nothing: the core then pays its check alone.
    """

    _instance: EcotoneInstrumentor | None = None
    _lock = threading.Lock()

    def __new__(cls, *args: Any, **kwargs: Any) -> EcotoneInstrumentor:
        with cls._lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                instance._tracing = None
                instance._metrics = None
                instance._instrumented = False
                cls._instance = instance
        return cls._instance

    _tracing: Tracing | None
    _metrics: Metrics | None
    _instrumented: bool

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("django >= 5.2",)

    @property
    def is_instrumented_by_opentelemetry(self) -> bool:
        return self._instrumented

    def instrument(self, **kwargs: Any) -> None:
        """Connect the receivers; a second call while instrumented does nothing (like the official ones)."""
        if self._instrumented:
            return
        semconv.system_of.cache_clear()
        provider: TracerProvider | None = kwargs.get("tracer_provider")
        if kwargs.get("tracing", True) and not isinstance(provider or trace.get_tracer_provider(), NoOpTracerProvider):
            tracer = trace.get_tracer("ecotone_django", __version__, provider, schema_url=SCHEMA_URL)
            self._tracing = Tracing(tracer, global_provider=provider is None)
            self._tracing.connect()
        meters: MeterProvider | None = kwargs.get("meter_provider")
        if kwargs.get("metrics", True) and not isinstance(meters or metrics.get_meter_provider(), NoOpMeterProvider):
            self.instrument_metrics(meters, tenant_label=kwargs.get("tenant_label", False))
        self._instrumented = True

    def instrument_metrics(self, meter_provider: MeterProvider | None = None, *, tenant_label: bool = False) -> None:
        """(Re)connect the metrics alone, to ``meter_provider``: what ``consume_channel --metrics-port`` uses."""
        if self._metrics is not None:
            self._metrics.disconnect()
        meter = metrics.get_meter("ecotone_django", __version__, meter_provider, schema_url=SCHEMA_URL)
        self._metrics = Metrics(meter, tenant_label=tenant_label, global_provider=meter_provider is None)
        self._metrics.connect()

    def uninstrument(self, **kwargs: Any) -> None:
        """Disconnect every receiver; messages sent afterwards carry no trace context of ours."""
        if self._tracing is not None:
            self._tracing.disconnect()
            self._tracing = None
        if self._metrics is not None:
            self._metrics.disconnect()
            self._metrics = None
        self._instrumented = False
