"""Tracing in benchmark workers: with ``ECOTONE_BENCH_OTEL_SPANS=<file>`` the bench settings add this app, which
configures the OpenTelemetry SDK with a ``BatchSpanProcessor`` exporting one JSON line per span to that file
(plus ``-<pid>``), and instruments ecotone_django — what a production worker with tracing on pays.
"""

from __future__ import annotations

import os

from django.apps import AppConfig
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from ecotone_django.telemetry import EcotoneInstrumentor


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


class TracedWorker(AppConfig):
    name = "bench"
    label = "bench_otel"

    def ready(self) -> None:
        path = os.environ["ECOTONE_BENCH_OTEL_SPANS"]
        out = open(f"{path}-{os.getpid()}", "a", encoding="utf-8")  # noqa: SIM115 - for the process's life
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line)))
        EcotoneInstrumentor().instrument(tracer_provider=provider)
