"""``consume_channel --metrics-port N``: the worker's metrics as Prometheus text over HTTP.

The metrics are recorded through the OpenTelemetry API (:mod:`.metrics`); here an SDK meter provider
of our own keeps them in memory and a ``prometheus-client`` collector turns each scrape's reading into
Prometheus families (dots become underscores; counters get ``_total``, the seconds histogram
``_seconds``). Needs ``opentelemetry-sdk`` and ``prometheus-client`` (the ``metrics`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from django.db import connections
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, Histogram, InMemoryMetricReader, Sum
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .instrumentor import EcotoneInstrumentor

__all__ = ["OpenTelemetryCollector", "serve_metrics"]

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def _name(name: str, unit: str) -> str:
    base = _INVALID.sub("_", name)
    suffix = _UNITS.get(unit)
    return f"{base}_{suffix}" if suffix and not base.endswith(suffix) else base


def _labels(attributes: Any) -> dict[str, str]:
    return {_INVALID.sub("_", str(key)): str(value) for key, value in (attributes or {}).items()}


class OpenTelemetryCollector(Collector):
    """Reads an in-memory OpenTelemetry reader on each scrape and yields Prometheus metric families."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        try:
            data = self.reader.get_metrics_data()
        finally:
            connections.close_all()  # the gauges queried the databases from this (the server's) thread
        if data is None:
            return
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    yield from self._families(metric)

    def _families(self, metric: Any) -> Iterator[Metric]:
        name, points = _name(metric.name, metric.unit), metric.data.data_points
        label_names = sorted({key for point in points for key in _labels(point.attributes)})

        def values(point: Any) -> list[str]:
            labels = _labels(point.attributes)
            return [labels.get(key, "") for key in label_names]

        family: Metric
        if isinstance(metric.data, Sum) and metric.data.is_monotonic:
            family = CounterMetricFamily(name, metric.description, labels=label_names)
            for point in points:
                family.add_metric(values(point), point.value)
        elif isinstance(metric.data, Sum | Gauge):
            family = GaugeMetricFamily(name, metric.description, labels=label_names)
            for point in points:
                family.add_metric(values(point), point.value)
        elif isinstance(metric.data, Histogram):
            family = HistogramMetricFamily(name, metric.description, labels=label_names)
            for point in points:
                cumulative, buckets = 0, []
                for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                    cumulative += count
                    buckets.append((repr(float(bound)), cumulative))
                buckets.append(("+Inf", point.count))
                family.add_metric(values(point), buckets, point.sum)
        else:
            return
        yield family


def serve_metrics(port: int, addr: str = "0.0.0.0") -> MeterProvider:
    """Serve this process's ecotone metrics on ``http://addr:port/metrics``; returns the meter provider.

    Instruments ecotone_django's metrics with that provider (tracing, if already instrumented, stays as it is).
    """
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OpenTelemetryCollector(reader))
    start_http_server(port, addr=addr, registry=registry)
    EcotoneInstrumentor().instrument_metrics(provider)
    return provider
