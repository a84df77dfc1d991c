"""Worker metrics through the OpenTelemetry metrics API.

Counters ``ecotone.messages.handled`` / ``.failed`` / ``.retried`` / ``.dead_lettered`` and the histogram
``ecotone.handling.duration`` (seconds), by channel (``messaging.destination.name``), handler and database
alias; gauges read from the database when the reader collects: ``ecotone.outbox.backlog`` and
``ecotone.outbox.oldest_age`` (seconds; due rows) per database, ``ecotone.sagas`` per database and status.
No tenant attribute unless asked for (``tenant_label=True``): a SaaS may have thousands of tenants.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from django.apps import apps
from django.db import DatabaseError
from django.db.models import Count, Min
from opentelemetry.metrics import CallbackOptions, Meter, Observation, get_meter_provider

from .. import signals
from ..clock import now
from ..conf import get_config
from . import receivers
from . import semconv as sc
from .probe import SdkProbe

__all__ = ["Metrics"]

_started: ContextVar[tuple[float, ...]] = ContextVar("ecotone_handling_started", default=())
_FAILED = frozenset({"retry", "dead", "error"})
#: Bucket bounds of the handling-duration histogram, in seconds (a handler takes ms, a slow one seconds).
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


#: Which method receives which signal (connected by instrument(), disconnected by uninstrument()).
WIRING: receivers.Wiring = (
    (signals.handling_started, "started", "ecotone.metrics.started"),
    (signals.handling_finished, "finished", "ecotone.metrics.finished"),
    (signals.message_retried, "on_retried", "ecotone.metrics.retried"),
    (signals.message_dead_lettered, "on_dead", "ecotone.metrics.dead"),
)


class Metrics:
    """The signal receivers that count messages, and the database gauges."""

    def __init__(self, meter: Meter, *, tenant_label: bool = False, global_provider: bool = True) -> None:
        self.tenant_label = tenant_label
        self._outbox: tuple[float, list[tuple[str, int, float]]] = (float("-inf"), [])
        self._sdk = SdkProbe(get_meter_provider, "opentelemetry.metrics", watch=global_provider)
        self.handled = meter.create_counter("ecotone.messages.handled", "{message}", "Messages handled successfully")
        self.failed = meter.create_counter("ecotone.messages.failed", "{message}", "Handler runs that failed")
        self.retried = meter.create_counter("ecotone.messages.retried", "{message}", "Failed messages stored again")
        self.dead = meter.create_counter(
            "ecotone.messages.dead_lettered", "{message}", "Failed messages that became dead letters"
        )
        self.duration = meter.create_histogram(
            "ecotone.handling.duration",
            "s",
            "Time a handler run took, its transaction included",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_gauge(
            "ecotone.outbox.backlog", [self.observe_backlog], "{message}", "Messages due in the outbox/queue table"
        )
        meter.create_observable_gauge(
            "ecotone.outbox.oldest_age", [self.observe_oldest], "s", "Age of the oldest due message"
        )
        meter.create_observable_gauge("ecotone.sagas", [self.observe_sagas], "{saga}", "Sagas by status")

    def connect(self) -> None:
        receivers.connect(self, WIRING)

    def disconnect(self) -> None:
        receivers.disconnect(WIRING)

    def _attributes(self, sender: str, handler_id: str, alias: str, tenant: str | None) -> dict[str, str]:
        attributes = {sc.DESTINATION: sender, sc.HANDLER: handler_id, sc.DB_ALIAS: alias}
        if self.tenant_label and tenant is not None:
            attributes[sc.TENANT] = str(tenant)
        return attributes

    def off(self) -> bool:
        """No SDK yet: the global meter provider is still the API's own (a proxy to nothing)."""
        return self._sdk.off()

    # -- receivers ---------------------------------------------------------------------------------

    def started(self, sender: str, **kwargs: Any) -> None:
        if not self.off():
            _started.set((*_started.get(), time.perf_counter()))

    def finished(
        self, sender: str, outcome: str, handler_id: str, alias: str, tenant: str | None, **kwargs: Any
    ) -> None:
        if self.off():
            return
        stack = _started.get()
        attributes = self._attributes(sender, handler_id, alias, tenant)
        if stack:
            _started.set(stack[:-1])
            self.duration.record(time.perf_counter() - stack[-1], {**attributes, sc.OUTCOME: outcome})
        if outcome in _FAILED:
            self.failed.add(1, attributes)
        elif outcome == "handled":
            self.handled.add(1, attributes)

    def on_retried(self, sender: str, handler_id: str, alias: str, tenant: str | None, **kwargs: Any) -> None:
        if not self.off():
            self.retried.add(1, self._attributes(sender, handler_id, alias, tenant))

    def on_dead(self, sender: str, handler_id: str, alias: str, tenant: str | None, **kwargs: Any) -> None:
        if not self.off():
            self.dead.add(1, self._attributes(sender, handler_id, alias, tenant))

    # -- gauges ------------------------------------------------------------------------------------

    def _per_database(self, *, fresh: bool) -> list[tuple[str, int, float]]:
        """(alias, due rows, oldest due age in seconds) of every database: the backlog gauge reads them, the
        age gauge of the same collection (right after it) reuses that reading."""
        read_at, found = self._outbox
        if fresh or time.monotonic() - read_at > 1.0:
            found = list(self._read_outbox())
            self._outbox = (time.monotonic(), found)
        return found

    def _read_outbox(self) -> Iterable[tuple[str, int, float]]:
        """(alias, due rows, oldest due age in seconds) of every database; one that fails is skipped."""
        moment = now()
        # Models are looked up, not imported: instrument() may run in an AppConfig.ready() before ours.
        outbox = apps.get_model("ecotone_django", "OutboxMessage")
        for alias in get_config().database_aliases:
            try:
                found = (
                    outbox.objects.using(alias)
                    .filter(available_at__lte=moment)
                    .aggregate(count=Count("pk"), oldest=Min("available_at"))
                )
            except DatabaseError:
                continue
            oldest = found["oldest"]
            yield alias, found["count"], 0.0 if oldest is None else max((moment - oldest).total_seconds(), 0.0)

    def observe_backlog(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {sc.DB_ALIAS: alias}) for alias, count, _ in self._per_database(fresh=True)]

    def observe_oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(age, {sc.DB_ALIAS: alias}) for alias, _, age in self._per_database(fresh=False)]

    def observe_sagas(self, options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        sagas = apps.get_model("ecotone_django", "SagaState")
        for alias in get_config().database_aliases:
            counts = dict.fromkeys((status for status, _ in sagas.STATUS_CHOICES), 0)
            try:
                rows = sagas.objects.using(alias).values_list("status").annotate(n=Count("pk")).order_by()
                counts.update(dict(rows))
            except DatabaseError:
                continue
            observations.extend(
                Observation(n, {sc.DB_ALIAS: alias, "ecotone.saga.status": s}) for s, n in counts.items()
            )
        return observations
