"""OpenTelemetry for the example shop, on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (docker compose sets it).

Spans go over OTLP/HTTP to that endpoint (Jaeger in the compose file): the Django request spans, the
psycopg query spans and ecotone_django's message spans, one trace per order. The workers serve their
metrics to Prometheus themselves (``consume_channel --metrics-port 9464``). Needs the packages the
Dockerfile installs: ``ecotone-django[metrics]``, ``opentelemetry-exporter-otlp-proto-http``,
``opentelemetry-instrumentation-django`` and ``-psycopg``.
"""

from __future__ import annotations

import sys

from django.apps import AppConfig
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ecotone_django.telemetry import EcotoneInstrumentor


def service_name(argv: list[str]) -> str:
    """``shop-web``, or ``shop-worker-<channel>`` for ``manage.py consume_channel <channel>``."""
    if len(argv) > 2 and argv[1] == "consume_channel":
        return f"shop-worker-{argv[2]}"
    return "shop-web"


class Observability(AppConfig):
    name = "example_project"
    label = "observability"

    def ready(self) -> None:
        provider = TracerProvider(resource=Resource.create({"service.name": service_name(sys.argv)}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint from the environment
        trace.set_tracer_provider(provider)
        DjangoInstrumentor().instrument()
        PsycopgInstrumentor().instrument(enable_commenter=False)
        EcotoneInstrumentor().instrument()
