"""Proof: real worker processes export their spans to files; read back, each request's story is one trace.

A view places an order (never paid: the saga's payment timeout cancels it) and another reports a payment
for an order that cannot be shipped (the saga compensates with a refund). The workers — ``consume_channel``
processes with the OpenTelemetry SDK and the console exporter (``tests.telemetry.apps``) — handle every
hop: outbox → relay → RabbitMQ or the database channel → worker, the delayed timeout, the messages the
handlers send. The request spans come from the Django instrumentation in this process. Per tenant: a
shared-database tenant and a dedicated-database tenant on the database channel, and the premium tenant
on RabbitMQ (PostgreSQL run only).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db.models import Model
from django.test import Client, override_settings

from ecotone_django.models import OutboxMessage, SagaState
from tests.helpers.processes import ManagedProcess, wait_for
from tests.integration.conftest import WorkerFactory
from tests.sagaapp.messaging import NOWHERE
from tests.sagaapp.models import Cancellation, Refund
from tests.telemetry.conftest import Telemetry

DjangoInstrumentor = pytest.importorskip("opentelemetry.instrumentation.django").DjangoInstrumentor

ALL = ["default", "big_corp", "enterprise_x"]
SAGA = "tests.sagaapp.messaging.OrderSaga"
HANDLERS = "tests.sagaapp.messaging."
#: (handler that sent the message, handler of that message): place_order publishes OrderPlaced, which
#: starts the saga and, delayed, runs its payment timeout; that sends CancelOrder.
TIMEOUT_CHAIN = [
    (None, f"{HANDLERS}place_order"),
    (f"{HANDLERS}place_order", f"{SAGA}.start"),
    (f"{HANDLERS}place_order", f"{SAGA}.payment_timeout"),
    (f"{SAGA}.payment_timeout", f"{HANDLERS}cancel_order"),
]
REFUND_CHAIN = [
    (None, f"{SAGA}.on_payment_captured"),
    (f"{SAGA}.on_payment_captured", f"{HANDLERS}fulfill_order"),
    (f"{HANDLERS}fulfill_order", f"{SAGA}.on_fulfillment_failed"),
    (f"{SAGA}.on_fulfillment_failed", f"{HANDLERS}refund_payment"),
]


def _hex(value: str | int) -> str:
    return value[2:] if isinstance(value, str) else f"{value:016x}" if value < 2**64 else f"{value:032x}"


def exported(directory: Path) -> list[dict[str, Any]]:
    """The spans every worker wrote, as the console exporter's JSON (ids as bare hex)."""
    spans = []
    for path in sorted(directory.glob("spans-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                span = json.loads(line)
                spans.append(span)
    return spans


def normalised(files: list[dict[str, Any]], telemetry: Telemetry) -> list[dict[str, Any]]:
    """Worker spans and this process's spans in one shape: name, kind, ids, parent, links, attributes, events."""
    result = [
        {
            "name": s["name"],
            "kind": s["kind"].rsplit(".", 1)[-1],
            "trace_id": _hex(s["context"]["trace_id"]),
            "span_id": _hex(s["context"]["span_id"]),
            "parent_id": _hex(s["parent_id"]) if s["parent_id"] else None,
            "links": [_hex(link["context"]["span_id"]) for link in s["links"]],
            "attributes": s["attributes"],
            "events": [e["name"] for e in s["events"]],
            "start": datetime.fromisoformat(s["start_time"]).timestamp(),
            "end": datetime.fromisoformat(s["end_time"]).timestamp(),
            "service": s["resource"]["attributes"].get("service.name", ""),
        }
        for s in files
    ]
    for span in telemetry.spans():
        result.append(
            {
                "name": span.name,
                "kind": span.kind.name,
                "trace_id": _hex(span.context.trace_id).rjust(32, "0"),
                "span_id": _hex(span.context.span_id).rjust(16, "0"),
                "parent_id": _hex(span.parent.span_id).rjust(16, "0") if span.parent else None,
                "links": [_hex(link.context.span_id).rjust(16, "0") for link in span.links],
                "attributes": dict(span.attributes or {}),
                "events": [e.name for e in span.events],
                "start": (span.start_time or 0) / 1e9,
                "end": (span.end_time or 0) / 1e9,
                "service": "web",
            }
        )
    return result


@pytest.fixture
def django_requests(telemetry: Telemetry) -> Iterator[None]:
    instrumentor = DjangoInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.provider)
    try:
        with override_settings(ROOT_URLCONF="tests.telemetry.urls"):
            yield
    finally:
        instrumentor.uninstrument()


def processed(spans: list[dict[str, Any]], order_id: str) -> dict[str, dict[str, Any]]:
    return {s["attributes"]["ecotone.handler"]: s for s in spans if s["kind"] == "CONSUMER"}


def check_one_trace(
    spans: list[dict[str, Any]], url: str, chain: list[tuple[str | None, str]], system: str, alias: str
) -> str:
    """Every hop of ``chain`` ran in the trace of the request to ``url``, parented and linked."""
    (request,) = [
        s
        for s in spans
        if s["kind"] == "SERVER" and str(s["attributes"].get("http.url", s["attributes"].get("url.full"))).endswith(url)
    ]
    trace = [s for s in spans if s["trace_id"] == request["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}
    handlers = {s["attributes"]["ecotone.handler"]: s for s in trace if s["kind"] == "CONSUMER"}
    assert {handler for _, handler in chain} <= set(handlers), sorted(handlers)
    for _, handler in chain:
        span = handlers[handler]
        creator = by_id[span["parent_id"]]  # the create span of its message, in this trace
        assert creator["kind"] == "PRODUCER" and creator["name"].startswith("create "), creator
        assert span["links"] == [creator["span_id"]]
        assert span["attributes"]["messaging.system"] == system
        assert span["attributes"]["messaging.operation.type"] == "process"
        assert span["attributes"]["ecotone.db_alias"] == alias
        assert span["attributes"]["messaging.message.id"] == creator["attributes"]["messaging.message.id"]
        assert span["attributes"]["messaging.message.conversation_id"]
        assert span["attributes"]["ecotone.attempt"] == 1
        hop = span
        while hop["parent_id"] is not None:  # every ancestor is in this trace, up to the request
            hop = by_id[hop["parent_id"]]
        assert hop is request
    # each message was created in the process span of the handler that sent it (the first: in the request)
    for sender, handler in chain:
        created_in = by_id[handlers[handler]["parent_id"]]["parent_id"]
        assert created_in == (request if sender is None else handlers[sender])["span_id"], (sender, handler)
    return request["trace_id"]


def run_story(
    client: Client, tenant: str, using: str, procs: tuple[ManagedProcess, ...], spans_dir: Path
) -> list[dict[str, Any]]:
    assert client.post(f"/orders/{tenant}/unpaid/Porto").status_code == 202
    assert client.post(f"/orders/{tenant}/unshippable/{NOWHERE}").status_code == 202

    def until(predicate: Any, what: str) -> None:
        try:
            wait_for(predicate, timeout=60, message=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n" + "\n".join(p.output_tail() for p in procs)) from None

    def exists(model: type[Model], order_id: str, **extra: Any) -> Any:
        return lambda: model.objects.using(using).filter(**({"order_id": order_id} | extra)).exists()

    until(lambda: SagaState.objects.using(using).filter(saga_id="unshippable").exists(), "saga started")
    assert client.post(f"/payments/{tenant}/unshippable").status_code == 202
    until(exists(Cancellation, "unpaid"), "the cancellation by the timeout")
    until(exists(Refund, "unshippable"), "the refund")
    until(lambda: not OutboxMessage.objects.using(using).exists(), "every message delivered")

    def all_exported() -> bool:
        handlers = {s["attributes"].get("ecotone.handler") for s in exported(spans_dir)}
        return {handler for _, handler in TIMEOUT_CHAIN + REFUND_CHAIN} <= handlers

    until(all_exported, "the last process spans exported")
    return exported(spans_dir)


WORKER_ENV = {"DJANGO_SETTINGS_MODULE": "tests.telemetry.settings", "SAGAAPP_PAYMENT_TIMEOUT_SECONDS": "2"}


@pytest.mark.django_db(databases=ALL, transaction=True)
@pytest.mark.parametrize(("tenant", "using"), [("shop-7", "default"), ("enterprise_x", "enterprise_x")])
def test_one_trace_per_request_across_database_channel_workers(
    worker: WorkerFactory, telemetry: Telemetry, django_requests: None, tmp_path: Path, tenant: str, using: str
) -> None:
    proc = worker("db", env={**WORKER_ENV, "ECOTONE_TEST_SPANS_DIR": str(tmp_path)})
    files = run_story(Client(), tenant, using, (proc,), tmp_path)
    spans = normalised(files, telemetry)
    order_trace = check_one_trace(spans, "/unpaid/Porto", TIMEOUT_CHAIN, "ecotone.database", using)
    payment_trace = check_one_trace(spans, f"/payments/{tenant}/unshippable", REFUND_CHAIN, "ecotone.database", using)
    assert order_trace != payment_trace
    keep = os.environ.get("ECOTONE_TEST_KEEP_SPANS")  # docs/trace_waterfall.py draws docs/images/ from it
    if keep and tenant == "shop-7":
        kept = [s for s in spans if s["trace_id"] in (order_trace, payment_trace)]
        Path(keep).write_text("".join(json.dumps(s) + "\n" for s in kept), encoding="utf-8")
    tenants = {s["attributes"].get("ecotone.tenant") for s in spans if s["kind"] == "CONSUMER"}
    assert tenants == {tenant}
    if settings.ENGINE == "postgres":  # the psycopg instrumentation's spans are children of ours
        by_id = {s["span_id"]: s for s in spans}
        queries = [s for s in spans if s["kind"] == "CLIENT" and s["parent_id"] in by_id]
        assert any(by_id[q["parent_id"]]["kind"] == "CONSUMER" for q in queries), [s["name"] for s in spans]


@pytest.mark.usefixtures("rabbit_queue")  # PostgreSQL run only; needs RabbitMQ
@pytest.mark.django_db(databases=ALL, transaction=True)
def test_one_trace_per_request_across_rabbitmq_the_relay_and_a_tenant_database(
    worker: WorkerFactory, telemetry: Telemetry, django_requests: None, tmp_path: Path
) -> None:
    proc = worker("rabbit", env={**WORKER_ENV, "ECOTONE_TEST_SPANS_DIR": str(tmp_path)})
    files = run_story(Client(), "big_corp", "big_corp", (proc,), tmp_path)
    spans = normalised(files, telemetry)
    check_one_trace(spans, "/unpaid/Porto", TIMEOUT_CHAIN, "rabbitmq", "big_corp")
    check_one_trace(spans, "/payments/big_corp/unshippable", REFUND_CHAIN, "rabbitmq", "big_corp")
    sends = [s for s in spans if s["name"] == "send rabbit"]
    assert sends and all(s["attributes"]["messaging.batch.message_count"] >= 1 for s in sends)
    assert all(s["attributes"]["messaging.system"] == "rabbitmq" for s in sends)
    creates = {s["span_id"] for s in spans if s["name"].startswith("create ")}
    assert all(set(s["links"]) <= creates and s["links"] for s in sends)
