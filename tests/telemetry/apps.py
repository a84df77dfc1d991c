"""An app that makes a worker process export its spans: one JSON line per span, to a file of its own.

Worker processes of the telemetry tests run with ``DJANGO_SETTINGS_MODULE=tests.telemetry.settings`` and
``ECOTONE_TEST_SPANS_DIR``: the OpenTelemetry SDK with the console exporter writing into
``<dir>/spans-<pid>.jsonl``, and :class:`~ecotone_django.telemetry.EcotoneInstrumentor` instrumented —
what a project does in its own ``AppConfig.ready()`` or Celery ``worker_process_init``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.apps import AppConfig
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from ecotone_django.telemetry import EcotoneInstrumentor


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


class ExportSpans(AppConfig):
    name = "tests.telemetry"
    label = "telemetry_tests"

    def ready(self) -> None:
        directory = os.environ.get("ECOTONE_TEST_SPANS_DIR")
        if not directory:
            return
        out = open(Path(directory) / f"spans-{os.getpid()}.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - for the process's life
        provider = TracerProvider(resource=Resource.create({"service.name": f"worker-{os.getpid()}"}))
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=_one_line)))
        if os.environ.get("ECOTONE_TEST_DB") == "postgres":  # the database spans join the tree too
            PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
        EcotoneInstrumentor().instrument(tracer_provider=provider)
