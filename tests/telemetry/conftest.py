"""Fixtures of the telemetry tests: an SDK tracer and meter provider kept in memory, instrumented for one test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ecotone_django.telemetry import EcotoneInstrumentor
from tests.integration.broker_fixtures import rabbit_queue  # noqa: F401 - a fixture
from tests.integration.conftest import _database_service, worker  # noqa: F401 - fixtures


@dataclass
class Telemetry:
    provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def counters(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The data points of metric ``name``: sorted attribute pairs → value (histograms: count)."""
        data = self.reader.get_metrics_data()
        found: dict[tuple[tuple[str, str], ...], float] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            key = tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items()))
                            found[key] = getattr(point, "value", None) or getattr(point, "count", 0)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    instrumentor = EcotoneInstrumentor()
    instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        yield Telemetry(provider, exporter, reader)
    finally:
        instrumentor.uninstrument()
