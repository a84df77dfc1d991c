"""Spans for messages: ``create`` when a bus sends, ``process`` when a worker runs a handler, ``send`` for a
batch the outbox publishes to a broker — named and attributed by the OpenTelemetry messaging conventions.

The creation context travels in the envelope headers as W3C ``traceparent`` / ``tracestate``. A
``process`` span is a child of its message's ``create`` span and links to it as well (the conventions'
link from consumer to producer); being its child keeps the whole story — request, command, event,
saga, timeout, compensation — one trace, whichever worker or tenant database a hop went through. A
``send`` span links to the ``create`` span of every message in its batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from .. import signals
from ..conf import get_config
from ..messages import CORRELATION_ID, TRACE_HEADERS, Envelope
from . import receivers
from . import semconv as sc
from .probe import SdkProbe

__all__ = ["Tracing"]

_FAILED = frozenset({"retry", "dead", "error"})

#: The process spans open in this thread or task, innermost last, with their context tokens.
_open: ContextVar[tuple[tuple[Span, object], ...]] = ContextVar("ecotone_process_spans", default=())


def _headers(envelope: Envelope) -> dict[str, str]:
    """The trace context headers of ``envelope`` (the propagator reads only these)."""
    return {key: str(envelope.headers[key]) for key in TRACE_HEADERS if key in envelope.headers}


def _creation_link(carrier: Mapping[str, str]) -> tuple[context.Context | None, list[Link]]:
    extracted = propagate.extract(carrier)
    creation = trace.get_current_span(extracted).get_span_context()
    if not creation.is_valid:
        return None, []
    return extracted, [Link(creation)]


#: Which method receives which signal (connected by instrument(), disconnected by uninstrument()).
WIRING: receivers.Wiring = (
    (signals.message_sent, "sent", "ecotone.telemetry.sent"),
    (signals.handling_started, "started", "ecotone.telemetry.started"),
    (signals.handling_finished, "finished", "ecotone.telemetry.finished"),
    (signals.message_retried, "retried", "ecotone.telemetry.retried"),
    (signals.message_dead_lettered, "dead", "ecotone.telemetry.dead"),
    (signals.batch_published, "published", "ecotone.telemetry.published"),
)


class Tracing:
    """The signal receivers that make spans; :class:`~ecotone_django.telemetry.EcotoneInstrumentor` connects them."""

    def __init__(self, tracer: Tracer, *, global_provider: bool = True) -> None:
        self.tracer = tracer
        self._sdk = SdkProbe(trace.get_tracer_provider, "opentelemetry.trace", watch=global_provider)

    def off(self) -> bool:
        """No SDK yet: the global provider is still the API's own proxy (an SDK is set later, or never)."""
        return self._sdk.off()

    def connect(self) -> None:
        receivers.connect(self, WIRING)

    def disconnect(self) -> None:
        receivers.disconnect(WIRING)

    # -- sending -----------------------------------------------------------------------------------

    def sent(self, sender: Any, envelope: Envelope, **kwargs: Any) -> dict[str, str] | None:
        """A ``create`` span for a command, event or pipeline message; its context goes into the headers."""
        if sender == "query" or self.off():  # a query is answered in-process: a function call, not a message
            return None
        if not trace.get_current_span().get_span_context().is_valid:
            return None  # no trace to continue: the message carries no trace context
        span = self.tracer.start_span(
            f"create {envelope.type}",
            kind=SpanKind.PRODUCER,
            attributes={
                sc.SYSTEM: sc.ECOTONE_SYSTEM,
                sc.DESTINATION: envelope.type,
                sc.OPERATION_TYPE: "create",
                sc.OPERATION_NAME: "create",
                sc.MESSAGE_ID: envelope.id,
                sc.CONVERSATION_ID: str(envelope.headers.get(CORRELATION_ID, envelope.id)),
                sc.MESSAGE_TYPE: envelope.type,
                sc.MESSAGE_KIND: str(sender),
                **_tenant(envelope),
            },
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier or None

    def published(
        self, sender: str, alias: str, bodies: list[str], started_ns: int, error: BaseException | None, **kwargs: Any
    ) -> None:
        """One ``send`` span for a batch the outbox published, linked to every message's ``create`` span."""
        if self.off():
            return
        links: list[Link] = []
        for body in bodies:
            try:
                headers = json.loads(body).get("headers") or {}
            except (ValueError, AttributeError):
                continue
            _, link = _creation_link({k: str(headers[k]) for k in TRACE_HEADERS if k in headers})
            links.extend(link)
        span = self.tracer.start_span(
            f"send {sender}",
            kind=SpanKind.PRODUCER,
            start_time=started_ns,
            links=links,
            attributes={
                sc.SYSTEM: sc.system_of(sender),
                sc.DESTINATION: sender,
                sc.OPERATION_TYPE: "send",
                sc.OPERATION_NAME: "send",
                sc.BATCH_COUNT: len(bodies),
                sc.DB_ALIAS: alias,
            },
        )
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    # -- handling ----------------------------------------------------------------------------------

    def started(
        self, sender: str, envelope: Envelope, handler_id: str, alias: str, tenant: str | None, attempt: int, **kw: Any
    ) -> None:
        """Open the ``process`` span of a handler run and make it current (what the handler sends is its child)."""
        if self.off():
            return
        parent, links = _creation_link(_headers(envelope))
        attributes: dict[str, Any] = {
            sc.SYSTEM: sc.system_of(sender),
            sc.DESTINATION: sender,
            sc.OPERATION_TYPE: "process",
            sc.OPERATION_NAME: "process",
            sc.MESSAGE_ID: envelope.id,
            sc.CONVERSATION_ID: str(envelope.headers.get(CORRELATION_ID, envelope.id)),
            sc.MESSAGE_TYPE: envelope.type,
            sc.HANDLER: handler_id,
            sc.DB_ALIAS: alias,
            sc.ATTEMPT: attempt,
        }
        if tenant is not None:
            attributes[sc.TENANT] = str(tenant)
        span = self.tracer.start_span(
            f"process {sender}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span, parent))  # with the baggage that came along
        _open.set((*_open.get(), (span, token)))

    def finished(self, sender: str, outcome: str, error: BaseException | None, **kwargs: Any) -> None:
        stack = _open.get()
        if not stack:
            return
        (span, token), rest = stack[-1], stack[:-1]
        _open.set(rest)
        span.set_attribute(sc.OUTCOME, outcome)
        if error is not None:
            span.record_exception(error)
        if outcome in _FAILED:
            span.set_status(Status(StatusCode.ERROR, "handler failed" if error is None else type(error).__name__))
        context.detach(token)  # type: ignore[arg-type]
        span.end()

    def retried(self, sender: str, error: BaseException, due: datetime, attempt: int, **kwargs: Any) -> None:
        span = trace.get_current_span()
        span.record_exception(error)
        span.add_event(
            "ecotone.retry",
            {sc.ATTEMPT: attempt, "ecotone.retry.due": due.isoformat(), "exception.type": type(error).__name__},
        )

    def dead(self, sender: str, error: BaseException, reason: str, attempt: int, **kwargs: Any) -> None:
        span = trace.get_current_span()
        span.record_exception(error)
        span.add_event("ecotone.dead_letter", {sc.ATTEMPT: attempt, "ecotone.dead_letter.reason": reason[:255]})


def _tenant(envelope: Envelope) -> dict[str, str]:
    tenancy = get_config().tenancy
    tenant = envelope.headers.get(tenancy.header) if tenancy is not None else None
    return {sc.TENANT: str(tenant)} if tenant not in (None, "") else {}
