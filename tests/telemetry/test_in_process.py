"""Spans, metrics and log fields of an in-process worker on the database channel (any engine)."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from opentelemetry import baggage, context
from opentelemetry.trace import SpanKind, StatusCode

from ecotone_django import command_bus
from ecotone_django.dispatch import handling
from ecotone_django.messages import Envelope
from ecotone_django.models import OutboxMessage
from ecotone_django.signals import handling_started
from ecotone_django.telemetry import EcotoneInstrumentor, MessageContextFilter
from ecotone_django.worker import Worker
from tests.sagaapp.messages import PlaceOrder
from tests.telemetry.conftest import Telemetry
from tests.testapp.messaging import AlwaysFails, RecordAsync

ALL = ["default", "big_corp", "enterprise_x"]
pytestmark = pytest.mark.django_db(databases=ALL, transaction=True)
SHOP = {"tenant": "shop-7"}


def drain() -> None:
    Worker(["db"], stop_when_empty=True, relay=False).run()


def test_a_send_in_a_span_writes_traceparent_and_a_create_span(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as request:
        command_bus.send(RecordAsync("traced"), metadata=SHOP)
    envelope = Envelope.decode(OutboxMessage.objects.get().body)
    (create,) = [s for s in telemetry.spans() if s.name.startswith("create")]
    assert create.kind is SpanKind.PRODUCER
    assert create.parent is not None and create.parent.span_id == request.get_span_context().span_id
    trace_id, span_id = f"{create.context.trace_id:032x}", f"{create.context.span_id:016x}"
    assert envelope.headers["traceparent"].startswith(f"00-{trace_id}-{span_id}-")  # flags: sampled (+ random)
    assert (
        dict(create.attributes or {}).items()
        >= {
            "messaging.operation.type": "create",
            "messaging.message.id": envelope.id,
            "messaging.message.conversation_id": envelope.id,
            "ecotone.tenant": "shop-7",
        }.items()
    )


def test_without_an_active_span_a_send_writes_no_trace_context(telemetry: Telemetry) -> None:
    command_bus.send(RecordAsync("untraced"), metadata=SHOP)
    headers = Envelope.decode(OutboxMessage.objects.get().body).headers
    assert "traceparent" not in headers
    assert telemetry.spans() == []


def test_uninstrumented_there_are_no_receivers_and_no_trace_headers() -> None:
    EcotoneInstrumentor().uninstrument()
    assert not handling_started.receivers or all("telemetry" not in str(r[0]) for r in handling_started.receivers)
    command_bus.send(RecordAsync("plain"), metadata=SHOP)
    assert "traceparent" not in Envelope.decode(OutboxMessage.objects.get().body).headers


def test_the_saga_runs_in_one_trace_with_process_spans_parented_and_linked(telemetry: Telemetry) -> None:
    tracer = telemetry.provider.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER) as request:
        command_bus.send(PlaceOrder("o-1", Decimal("5.00"), "Lisbon"), metadata=SHOP)
    drain()
    spans = telemetry.spans()
    trace_id = request.get_span_context().trace_id
    process = [s for s in spans if s.name == "process db"]
    handlers = {s.attributes["ecotone.handler"] for s in process if s.attributes}
    assert "tests.sagaapp.messaging.place_order" in handlers
    assert {s.context.trace_id for s in spans} == {trace_id}
    by_id = {s.context.span_id: s for s in spans}
    for span in process:
        assert span.kind is SpanKind.CONSUMER
        assert span.parent is not None
        creator = by_id[span.parent.span_id]
        assert creator.name.startswith("create ") and creator.kind is SpanKind.PRODUCER
        assert [link.context.span_id for link in span.links] == [creator.context.span_id]
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "ecotone.database"
        assert span.attributes["messaging.destination.name"] == "db"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["ecotone.db_alias"] == "default"
        assert span.attributes["ecotone.tenant"] == "shop-7"
        assert span.attributes["ecotone.attempt"] == 1
    placed = next(s for s in spans if s.name == "create tests.sagaapp.messages.OrderPlaced")
    place_order = next(s for s in process if s.attributes and s.attributes["ecotone.handler"].endswith("place_order"))
    assert placed.parent is not None and placed.parent.span_id == place_order.context.span_id


def test_retries_and_the_dead_letter_are_span_events_and_counted(telemetry: Telemetry) -> None:
    with telemetry.provider.get_tracer("test").start_as_current_span("request"):
        command_bus.send(AlwaysFails("boom"), metadata=SHOP)
    drain()
    process = [s for s in telemetry.spans() if s.name == "process db"]
    assert [s.attributes["ecotone.attempt"] for s in process if s.attributes] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in process)
    assert [[e.name for e in s.events] for s in process] == [
        ["exception", "ecotone.retry"],
        ["exception", "ecotone.retry"],
        ["exception", "ecotone.dead_letter"],
    ]
    key = (
        ("ecotone.db_alias", "default"),
        ("ecotone.handler", "tests.testapp.messaging.always_fails"),
        ("messaging.destination.name", "db"),
    )
    assert telemetry.counters("ecotone.messages.failed") == {key: 3}
    assert telemetry.counters("ecotone.messages.retried") == {key: 2}
    assert telemetry.counters("ecotone.messages.dead_lettered") == {key: 1}


def test_handled_counter_duration_and_gauges(telemetry: Telemetry) -> None:
    for i in range(3):
        command_bus.send(RecordAsync(f"r{i}"), metadata=SHOP)
    command_bus.send(RecordAsync("big"), metadata={"tenant": "big_corp"})
    backlog = telemetry.counters("ecotone.outbox.backlog")
    assert backlog == {
        (("ecotone.db_alias", "default"),): 3,
        (("ecotone.db_alias", "big_corp"),): 1,
        (("ecotone.db_alias", "enterprise_x"),): 0,
    }
    drain()
    handled = telemetry.counters("ecotone.messages.handled")
    assert sum(handled.values()) == 4
    assert all("ecotone.tenant" not in dict(key) for key in handled)
    durations = telemetry.counters("ecotone.handling.duration")
    assert sum(durations.values()) == 4
    assert telemetry.counters("ecotone.outbox.backlog")[(("ecotone.db_alias", "default"),)] == 0


def test_worker_log_records_carry_the_message_in_hand(caplog: pytest.LogCaptureFixture) -> None:
    handler = caplog.handler
    handler.addFilter(MessageContextFilter())
    command_bus.send(AlwaysFails("logged"), metadata=SHOP)
    with caplog.at_level(logging.WARNING, logger="ecotone_django"):
        drain()
    failed = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert [(r.handler, r.channel, r.tenant, r.attempt) for r in failed] == [  # type: ignore[attr-defined]
        ("tests.testapp.messaging.always_fails", "db", "shop-7", 1),
        ("tests.testapp.messaging.always_fails", "db", "shop-7", 2),
    ]
    message_id = failed[0].message_id  # type: ignore[attr-defined]
    assert failed[0].correlation_id == message_id  # type: ignore[attr-defined]
    outside = logging.LogRecord("x", logging.INFO, "", 0, "outside", None, None)
    MessageContextFilter().filter(outside)
    assert outside.message_id is None  # type: ignore[attr-defined]


def test_an_uninstrumented_handler_passes_the_trace_context_on() -> None:
    EcotoneInstrumentor().uninstrument()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    incoming = Envelope("x", None, {"tenant": "shop-7", "traceparent": traceparent, "tracestate": "k=v"})
    with handling(incoming):
        command_bus.send(RecordAsync("passed on"))
    headers = Envelope.decode(OutboxMessage.objects.get().body).headers
    assert (headers["traceparent"], headers["tracestate"]) == (traceparent, "k=v")


def test_an_instrumented_handler_sends_its_own_span_as_the_parent(telemetry: Telemetry) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with telemetry.provider.get_tracer("test").start_as_current_span("process") as span:
        incoming = Envelope("x", None, {"tenant": "shop-7", "traceparent": traceparent})
        with handling(incoming):
            command_bus.send(RecordAsync("child"))
    sent = Envelope.decode(OutboxMessage.objects.get().body).headers["traceparent"]
    (create,) = [s for s in telemetry.spans() if s.name.startswith("create")]
    assert create.parent is not None and create.parent.span_id == span.get_span_context().span_id
    assert sent.split("-")[2] == f"{create.context.span_id:016x}"


def test_baggage_travels_to_the_handler(telemetry: Telemetry) -> None:
    seen: list[object] = []

    def observe(sender: str, **kwargs: object) -> None:
        seen.append(baggage.get_baggage("customer.plan"))

    with telemetry.provider.get_tracer("test").start_as_current_span("request"):
        token = context.attach(baggage.set_baggage("customer.plan", "premium"))
        try:
            command_bus.send(RecordAsync("with baggage"), metadata=SHOP)
        finally:
            context.detach(token)
    handling_started.connect(observe)  # after the tracing receiver: the process span's context is current
    try:
        drain()
    finally:
        handling_started.disconnect(observe)
    assert seen == ["premium"]
