"""OpenTelemetry for ecotone_django: traces, metrics and log context (the ``otel`` extra).

``EcotoneInstrumentor().instrument()`` makes a ``create`` span per message sent, a ``process`` span per
handler run and a ``send`` span per batch the outbox publishes, and records the worker's metrics;
W3C trace context travels in the envelope headers. :mod:`.logs` adds the message in hand to log records
(no OpenTelemetry needed); :mod:`.prometheus` serves the metrics for ``consume_channel --metrics-port``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .logs import JsonFormatter, MessageContextFilter

if TYPE_CHECKING:
    from .instrumentor import EcotoneInstrumentor

__all__ = ["EcotoneInstrumentor", "JsonFormatter", "MessageContextFilter"]


def __getattr__(name: str) -> Any:
    # The instrumentor needs opentelemetry-api; the log filter and formatter do not.
    if name == "EcotoneInstrumentor":
        from .instrumentor import EcotoneInstrumentor  # noqa: PLC0415 - opentelemetry-api is optional

        return EcotoneInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
