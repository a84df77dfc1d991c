"""``python -m bench.telemetry_overhead [--worker]``: what the telemetry seams cost per message, in-process.

Per message a bus sends it (``message_sent``) and a worker runs its handler (``handling_started`` /
``handling_finished``). Timed three ways: nothing connected (the core's check alone), instrumented with
the OpenTelemetry API and no SDK (no-op tracer and meter), and instrumented with the SDK, a
``BatchSpanProcessor`` exporting to ``/dev/null`` and an SDK meter provider. Compare the microseconds
with a worker's per-message time (``1e6 / msg/s`` of ``bench/run.py``'s database-channel figure).

``--worker`` measures that directly: with ``ECOTONE_TEST_DB=postgres`` it creates the test suite's
databases, and in rounds sends 1,000 commands for a database-channel handler (an INSERT) and times one
worker (in this process) draining them, in each of the variants above, interleaved, so that the
machine's load falls on all of them alike, each variant first in one round.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from opentelemetry import context, trace  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from ecotone_django.declarations import Kind  # noqa: E402
from ecotone_django.messages import Envelope  # noqa: E402
from ecotone_django.signals import handling_finished, handling_started, message_sent  # noqa: E402
from ecotone_django.telemetry import EcotoneInstrumentor  # noqa: E402

N = 5_000


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


def worker_rounds(rounds: int = 4, n: int = 1000) -> None:
    from django.db import connections

    from ecotone_django import command_bus
    from ecotone_django.worker import Worker
    from tests.testapp.messaging import RecordAsync
    from tests.testapp.models import Record

    aliases = list(connections.settings)
    for alias in aliases:
        connections[alias].creation.create_test_db(verbosity=0, autoclobber=True)
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    try:
        for r in range(rounds):
            for variant in VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]:  # each goes first once
                samples = results[variant]
                teardown = _variant(variant)  # sends inside a span where there is a tracer
                for i in range(n):
                    command_bus.send(RecordAsync(f"m{i}"), metadata={"tenant": "shop"})
                started = time.perf_counter()
                Worker(["db"], stop_when_empty=True, relay=False).run()
                samples.append(n / (time.perf_counter() - started))
                teardown()
                assert Record.objects.count() == n, Record.objects.count()
                Record.objects.all().delete()
                print(f"round {r + 1} {variant:40s} {samples[-1]:8,.0f} msg/s", flush=True)
    finally:
        for alias in aliases:
            connections[alias].creation.destroy_test_db(connections[alias].settings_dict["NAME"], verbosity=0)
    base = statistics.median(results["nothing connected"])
    for variant, samples in results.items():
        median = statistics.median(samples)
        print(f"{variant:40s} median {median:8,.0f} msg/s ({median / base:.1%} of nothing connected)")


class _Discard(SpanExporter):
    """An exporter that drops the spans: what the SDK costs before any serialisation."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _variant(name: str) -> Callable[[], None]:
    """Instrument for variant ``name``; returns the teardown."""
    instrumentor = EcotoneInstrumentor()
    if name == "nothing connected":
        return lambda: None
    if name == "instrumented, no SDK configured":
        instrumentor.instrument()  # the global providers: proxies to nothing
        return instrumentor.uninstrument
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed by the teardown

    def line(span: ReadableSpan) -> str:
        return span.to_json(indent=None) + "\n"

    exporter = ConsoleSpanExporter(out=sink, formatter=line) if "JSON" in name else _Discard()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=100_000))
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider([InMemoryMetricReader()]))
    span = provider.get_tracer("bench").start_span("request")  # sends inside a span make create spans
    token = context.attach(trace.set_span_in_context(span))

    def teardown() -> None:
        context.detach(token)
        instrumentor.uninstrument()
        provider.shutdown()
        sink.close()

    return teardown


def _nothing() -> None:
    pass


VARIANTS = (
    "nothing connected",
    "instrumented, no SDK configured",
    "SDK, BatchSpanProcessor, spans dropped",
    "SDK, BatchSpanProcessor, spans to JSON",
)


def main() -> None:
    if "--worker" in sys.argv:
        worker_rounds()
        return
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(5):
        for name in VARIANTS:
            teardown = _variant(name)
            results[name].append(per_message_us())
            teardown()  # the JSON variant's batch thread finishes its queue here, outside the timing
    for name, samples in results.items():
        print(f"{name:40s} {statistics.median(samples):8.2f} µs per message (send + handle), median of 5")
    # The machine's speed at the time, to compare runs: 1,000 empty function calls.
    started = time.perf_counter()
    for _ in range(1000):
        _nothing()
    print(f"{'(reference: 1,000 empty function calls)':40s} {(time.perf_counter() - started) * 1e6:8.2f} µs")


if __name__ == "__main__":
    main()
