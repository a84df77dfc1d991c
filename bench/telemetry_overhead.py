"""``python -m bench.telemetry_overhead``: what the telemetry seams cost per message, in-process, no database.

Per message a bus sends it (``message_sent``) and a worker runs its handler (``handling_started`` /
``handling_finished``). Timed three ways: nothing connected (the core's check alone), instrumented with
the OpenTelemetry API and no SDK (no-op tracer and meter), and instrumented with the SDK, a
``BatchSpanProcessor`` exporting to ``/dev/null`` and an SDK meter provider. Compare the microseconds
with a worker's per-message time (``1e6 / msg/s`` of ``bench/run.py``'s database-channel figure).
"""

from __future__ import annotations

import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from opentelemetry.metrics import NoOpMeterProvider  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter  # noqa: E402
from opentelemetry.trace import NoOpTracerProvider  # noqa: E402

from ecotone_django.declarations import Kind  # noqa: E402
from ecotone_django.messages import Envelope  # noqa: E402
from ecotone_django.signals import handling_finished, handling_started, message_sent  # noqa: E402
from ecotone_django.telemetry import EcotoneInstrumentor  # noqa: E402

N = 20_000


def one_message(envelope: Envelope) -> None:
    """The seams one message passes through, as the bus and the worker call them."""
    if message_sent.receivers:
        responses = message_sent.send(sender=Kind.COMMAND, message=None, envelope=envelope)
        added = {k: v for _, extra in responses if extra for k, v in extra.items()}
        if added:
            envelope = envelope.with_headers(**added)
    if handling_started.receivers:
        context = {"envelope": envelope, "handler_id": "shop.place_order", "alias": "default", "tenant": "t1"}
        handling_started.send(sender="orders", attempt=1, **context)
        handling_finished.send(sender="orders", attempt=1, outcome="handled", error=None, **context)


def per_message_us() -> float:
    envelope = Envelope("shop.PlaceOrder", {"id": 1}, {"tenant": "t1", "correlation_id": "c"})
    for _ in range(1000):
        one_message(envelope)
    started = time.perf_counter()
    for _ in range(N):
        one_message(envelope)
    return (time.perf_counter() - started) / N * 1e6


def main() -> None:
    instrumentor = EcotoneInstrumentor()
    results = {"nothing connected": per_message_us()}
    instrumentor.instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    results["instrumented, API only (no SDK)"] = per_message_us()
    instrumentor.uninstrument()
    with open(os.devnull, "w") as sink:

        def line(span: ReadableSpan) -> str:
            return span.to_json(indent=None) + "\n"

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sink, formatter=line)))
        meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
        instrumentor.instrument(tracer_provider=provider, meter_provider=meters)
        tracer = provider.get_tracer("bench")
        with tracer.start_as_current_span("request"):  # so that the send makes a create span too
            results["SDK + BatchSpanProcessor + SDK metrics"] = per_message_us()
        instrumentor.uninstrument()
        provider.shutdown()
    for name, micros in results.items():
        print(f"{name:45s} {micros:8.2f} µs per message (send + handle)")


if __name__ == "__main__":
    main()
