"""Handler declarations: every decorator combination, the registry built from them, injection, declaration errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

import pytest
from django.test import override_settings

from ecotone_django import (
    CommandBus,
    EventBus,
    Header,
    Metadata,
    QueryBus,
    asynchronous,
    command_bus,
    command_handler,
    deduplicated,
    delayed,
    event_bus,
    event_handler,
    internal_handler,
    query_bus,
    query_handler,
)
from ecotone_django.discovery import get_registry
from ecotone_django.dispatch import call_handler
from ecotone_django.exceptions import HandlerDeclarationError, MessageError, NoHandlerError
from ecotone_django.handlers import Handler
from ecotone_django.messages import Envelope
from ecotone_django.registry import Registry
from ecotone_django.testing import registry_of, use_registry
from tests.unit import handlers_app
from tests.unit.handlers_app import GetOrder, OrderPlaced, OrderService, PlaceOrder, PremiumOrderPlaced, Verify

MODULE = __name__
TENANT = {"tenant": "acme"}


@dataclass(frozen=True)
class Ping:
    order_id: str


@dataclass(frozen=True)
class VipOrderPlaced(PremiumOrderPlaced):
    """Handled by nobody directly; found through its base classes."""


@dataclass(frozen=True)
class Renamed:
    __message_name__ = "orders.v1.Renamed"
    x: int


# ---------------------------------------------------------------------------
# Every combination of decorators
# ---------------------------------------------------------------------------

DELAY = timedelta(seconds=90)

# name → (decorator factory, expected fields contributed)
KIND_VARIANTS: dict[str, tuple[Callable[[], Callable[[Any], Any]], dict[str, Any]]] = {
    "command": (lambda: command_handler, {"kind": "command"}),
    "command()": (lambda: command_handler(), {"kind": "command"}),
    "command(output)": (lambda: command_handler(output_channel="next"), {"kind": "command", "output_channel": "next"}),
    "event": (lambda: event_handler, {"kind": "event"}),
    "event(mapping)": (
        lambda: event_handler(identifier_mapping={"order_id": "headers.order"}),
        {"kind": "event", "identifier_mapping": {"order_id": "headers.order"}},
    ),
    "query": (lambda: query_handler, {"kind": "query"}),
    "query(output)": (lambda: query_handler(output_channel="next"), {"kind": "query", "output_channel": "next"}),
    "internal": (lambda: internal_handler("in"), {"kind": "internal", "input_channel": "in"}),
    "internal(output)": (
        lambda: internal_handler("in", output_channel="out"),
        {"kind": "internal", "input_channel": "in", "output_channel": "out"},
    ),
}

MODIFIERS: dict[str, tuple[Callable[[], Callable[[Any], Any]], dict[str, Any]]] = {
    "asynchronous": (lambda: asynchronous("orders"), {"channel": "orders"}),
    "delayed": (lambda: delayed(DELAY), {"delay": DELAY}),
    "deduplicated": (lambda: deduplicated("order_id"), {"dedup_key": "order_id"}),
}

NEUTRAL: dict[str, Any] = {
    "channel": None,
    "delay": None,
    "dedup_key": None,
    "input_channel": None,
    "output_channel": None,
    "identifier_mapping": {},
}


def _arrangements() -> list[tuple[str, ...]]:
    """Every ordered arrangement of the kind marker with any subset of the modifiers (bottom-most first)."""
    found: list[tuple[str, ...]] = []
    for size in range(len(MODIFIERS) + 1):
        for subset in itertools.combinations(MODIFIERS, size):
            found.extend(itertools.permutations(("KIND", *subset)))
    return found


ARRANGEMENTS = _arrangements()
FULL_PERMUTATIONS = list(itertools.permutations(("KIND", *MODIFIERS)))


def _stack(obj: Any, kind: str, order: Sequence[str]) -> tuple[Any, dict[str, Any]]:
    """Apply the decorators named in ``order`` (the first nearest the ``def``); return the object and expectations."""
    expected = dict(NEUTRAL)
    for name in order:
        factory, fields = KIND_VARIANTS[kind] if name == "KIND" else MODIFIERS[name]
        result = factory()(obj)
        assert result is obj, f"{name} must return the object it decorates, not a wrapper"
        expected.update(fields)
    return obj, expected


def _assert_fields(handler: Handler, expected: dict[str, Any]) -> None:
    actual = {key: getattr(handler, key) for key in expected}
    assert actual == expected
    assert handler.message_type is Ping
    assert handler.is_async is (expected["channel"] is not None)


def _envelope() -> Envelope:
    return Envelope(type="ping", payload=None, headers={})


@pytest.mark.parametrize("order", ARRANGEMENTS, ids="<".join)
@pytest.mark.parametrize("kind", KIND_VARIANTS)
def test_decorators_on_a_module_function_in_any_order(kind: str, order: tuple[str, ...]) -> None:
    def handle(message: Ping) -> tuple[str, Ping]:
        return ("function", message)

    handle.__qualname__ = "handle"
    decorated, expected = _stack(handle, kind, order)

    registry = registry_of(decorated)

    (handler,) = registry
    assert handler.id == f"{MODULE}.handle"
    assert handler.binding == "function"
    assert handler.owner is None
    _assert_fields(handler, expected)
    # The decorated function is still the plain function: callable directly and through the registry.
    assert decorated(Ping("1")) == ("function", Ping("1"))
    assert call_handler(handler, Ping("2"), _envelope(), registry) == ("function", Ping("2"))


FORMS = ["instance", "classmethod above", "classmethod below", "staticmethod above", "staticmethod below"]


def _service_class(form: str, kind: str, order: Sequence[str]) -> tuple[type, dict[str, Any]]:
    """A class with one handler ``handle`` declared in ``form``; decorators "above" wrap the classmethod object."""

    def on_instance(self: Any, message: Ping) -> tuple[str, Any, Ping]:
        return ("instance", self, message)

    def on_class(cls: type, message: Ping) -> tuple[str, Any, Ping]:
        return ("class", cls, message)

    def on_static(message: Ping) -> tuple[str, Any, Ping]:
        return ("static", None, message)

    member: Any
    if form == "instance":
        member, expected = _stack(on_instance, kind, order)
    elif form == "classmethod above":
        member, expected = _stack(classmethod(on_class), kind, order)
    elif form == "classmethod below":
        decorated, expected = _stack(on_class, kind, order)
        member = classmethod(decorated)
    elif form == "staticmethod above":
        member, expected = _stack(staticmethod(on_static), kind, order)
    else:
        decorated, expected = _stack(on_static, kind, order)
        member = staticmethod(decorated)

    def helper(self: Any, message: Ping) -> None:
        return None

    cls = type("Service", (), {"__module__": MODULE, "__qualname__": "Service", "handle": member, "helper": helper})
    return cls, expected


@pytest.mark.parametrize("order", FULL_PERMUTATIONS, ids="<".join)
@pytest.mark.parametrize("kind", ["command", "event", "query", "internal(output)"])
@pytest.mark.parametrize("form", FORMS)
def test_decorators_on_methods_in_any_order(form: str, kind: str, order: tuple[str, ...]) -> None:
    cls, expected = _service_class(form, kind, order)

    registry = registry_of(cls)

    (handler,) = registry  # "helper" carries no declaration and is not a handler
    assert handler.id == f"{MODULE}.Service.handle"
    assert handler.owner is cls
    assert handler.binding == form.split()[0].replace("method", "")
    _assert_fields(handler, expected)

    how, bound, message = call_handler(handler, Ping("7"), _envelope(), registry)
    assert message == Ping("7")
    if handler.binding == "instance":
        assert how == "instance" and isinstance(bound, cls)
        assert bound is registry.instance_of(cls), "a service class is instantiated once per registry"
    elif handler.binding == "class":
        assert (how, bound) == ("class", cls)
    else:
        assert (how, bound) == ("static", None)


def test_stacking_the_same_kind_twice_is_harmless() -> None:
    def handle(message: Ping) -> None:
        return None

    command_handler(command_handler(output_channel="x")(handle))

    (handler,) = registry_of(handle)
    assert (handler.kind, handler.output_channel) == ("command", "x")


# ---------------------------------------------------------------------------
# A scanned module
# ---------------------------------------------------------------------------


def test_registry_from_a_module_uses_dotted_paths_and_skips_undeclared_and_imported_functions() -> None:
    registry = Registry.from_modules(["tests.unit.handlers_app"])

    prefix = "tests.unit.handlers_app."
    assert sorted(registry.handlers) == sorted(
        prefix + name
        for name in (
            "place_order",
            "get_order",
            "start_pipeline",
            "verify_step",
            "OrderService.on_placed",
            "OrderService.on_premium",
            "OrderService.reminder",
            "OrderService.audit",
        )
    )
    # Module objects are accepted as well as dotted names.
    assert list(Registry.from_modules([handlers_app]).handlers) == list(registry.handlers)


def test_asynchronous_on_a_class_applies_to_its_handlers_and_a_methods_own_channel_wins() -> None:
    registry = registry_of(OrderService)
    by_name = {h.id.rsplit(".", 1)[1]: h for h in registry}

    assert {name: h.channel for name, h in by_name.items()} == {
        "on_placed": "orders",
        "on_premium": "premium",
        "reminder": "orders",
        "audit": "orders",
    }
    assert {name: h.binding for name, h in by_name.items()} == {
        "on_placed": "instance",
        "on_premium": "instance",
        "reminder": "class",
        "audit": "static",
    }
    assert by_name["reminder"].delay == timedelta(minutes=30)
    assert by_name["reminder"].identifier_mapping == {"order_id": "payload.order_id"}
    assert by_name["audit"].dedup_key == "order_id"
    # A class without @asynchronous keeps its handlers synchronous.
    assert registry_of(handlers_app.place_order).single(PlaceOrder, "command").channel is None


def test_pipeline_options_are_recorded() -> None:
    registry = Registry.from_modules(["tests.unit.handlers_app"])

    start = registry.single(Verify, "command")
    assert (start.output_channel, start.input_channel) == ("verify", None)
    (step,) = registry.for_input_channel("verify")
    assert (step.kind, step.input_channel, step.output_channel) == ("internal", "verify", "ship")
    assert registry.for_input_channel("ship") == []
    # An internal step is not a command handler of its message type.
    assert registry.for_message(Verify, "command") == [start]


def test_lookup_by_message_class_follows_the_mro_most_specific_first() -> None:
    registry = registry_of(OrderService)

    on_vip = [h.id.rsplit(".", 1)[1] for h in registry.for_message(VipOrderPlaced, "event")]
    assert on_vip == ["on_premium", "on_placed", "reminder", "audit"]
    assert [h.id.rsplit(".", 1)[1] for h in registry.for_message(OrderPlaced, "event")] == [
        "on_placed",
        "reminder",
        "audit",
    ]
    assert registry.for_message(OrderPlaced, "command") == []
    with pytest.raises(NoHandlerError, match=r"no command handler is registered for .*OrderPlaced"):
        registry.single(OrderPlaced, "command")
    with pytest.raises(NoHandlerError, match="nope"):
        registry.get("nope")


def test_message_class_finds_handled_types_their_subclasses_and_explicit_names() -> None:
    def on_renamed(event: Renamed) -> None:
        return None

    registry = registry_of(OrderService, event_handler(on_renamed))

    assert registry.message_class(f"{MODULE}.VipOrderPlaced") is VipOrderPlaced
    assert registry.message_class("tests.unit.handlers_app.OrderPlaced") is OrderPlaced
    assert registry.message_class("orders.v1.Renamed") is Renamed
    assert registry.message_class(f"{MODULE}.Renamed") is None
    assert registry.message_class("tests.unit.handlers_app.PlaceOrder") is None


# ---------------------------------------------------------------------------
# Declaration errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0, -5, 0.0, timedelta(0), timedelta(seconds=-1)])
def test_delayed_needs_a_positive_delay(delay: Any) -> None:
    with pytest.raises(HandlerDeclarationError, match="@delayed needs a positive delay"):
        delayed(delay)


@pytest.mark.parametrize("delay", ["5", True, None, [5]])
def test_delayed_needs_a_timedelta_or_seconds(delay: Any) -> None:
    with pytest.raises(HandlerDeclarationError, match="@delayed takes a timedelta or seconds"):
        delayed(delay)


def test_delayed_accepts_seconds() -> None:
    def handle(message: Ping) -> None:
        return None

    (handler,) = registry_of(delayed(2.5)(command_handler(handle)))
    assert handler.delay == timedelta(seconds=2.5)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: asynchronous(""), r"@asynchronous needs a channel name, e\.g\. @asynchronous\('orders'\)"),
        (lambda: asynchronous(None), "@asynchronous needs a channel name"),
        (lambda: deduplicated(""), "@deduplicated needs a header or field name"),
        (lambda: internal_handler(""), "@internal_handler needs the name of its input channel"),
    ],
    ids=["asynchronous('')", "asynchronous(None)", "deduplicated('')", "internal_handler('')"],
)
def test_empty_names_are_rejected(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(HandlerDeclarationError, match=message):
        make()


def test_a_handler_without_a_message_annotation_is_rejected() -> None:
    def handle(message):  # no annotation: the mistake under test
        return None

    with pytest.raises(
        HandlerDeclarationError, match=rf"^{MODULE}\..*\.handle: annotate the first parameter with the message class$"
    ):
        registry_of(command_handler(handle))


def test_a_method_without_a_message_annotation_is_rejected() -> None:
    def handle(self, message):  # no annotation: the mistake under test
        return None

    cls = type("Svc", (), {"__module__": MODULE, "__qualname__": "Svc", "handle": event_handler(handle)})
    with pytest.raises(HandlerDeclarationError, match=rf"{MODULE}\.Svc\.handle: annotate the first parameter"):
        registry_of(cls)


def test_a_handler_without_parameters_is_rejected() -> None:
    def handle() -> None:
        return None

    with pytest.raises(HandlerDeclarationError, match="takes no message parameter"):
        registry_of(command_handler(handle))


def test_a_message_annotation_that_is_not_a_class_is_rejected() -> None:
    def handle(message: list[int]) -> None:
        return None

    with pytest.raises(HandlerDeclarationError, match="must be annotated with a class"):
        registry_of(command_handler(handle))


def test_an_unresolvable_annotation_is_reported() -> None:
    def handle(message: NoSuchMessage) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(
        HandlerDeclarationError,
        match=r"cannot resolve the annotations of .*handle: name 'NoSuchMessage' is not defined",
    ):
        registry_of(command_handler(handle))


def test_an_uninjectable_parameter_is_named() -> None:
    def handle(message: Ping, repository: dict[str, int]) -> None:
        return None

    with pytest.raises(HandlerDeclarationError) as caught:
        registry_of(command_handler(handle))
    text = str(caught.value)
    assert "cannot inject parameter 'repository'" in text
    assert "CommandBus, EventBus, QueryBus, Metadata or Annotated[T, Header('name')]" in text


@pytest.mark.parametrize(
    ("first", "second"),
    [(command_handler, event_handler), (event_handler, command_handler), (query_handler, command_handler)],
)
def test_a_handler_declared_with_two_kinds_is_rejected(first: Any, second: Any) -> None:
    def handle(message: Ping) -> None:
        return None

    first(handle)
    with pytest.raises(HandlerDeclarationError, match=r"handle is declared both \w+ and \w+ handler"):
        second(handle)


def test_internal_and_command_on_one_function_is_rejected() -> None:
    def handle(message: Ping) -> None:
        return None

    with pytest.raises(HandlerDeclarationError, match="declared both internal and command handler"):
        command_handler(internal_handler("in")(handle))


def test_modifiers_without_a_kind_in_a_scanned_module_are_rejected() -> None:
    with pytest.raises(HandlerDeclarationError) as caught:
        Registry.from_modules(["tests.unit.handlers_no_kind"])
    text = str(caught.value)
    assert "tests.unit.handlers_no_kind.forgot_the_kind" in text
    assert "no @command_handler/@event_handler/@query_handler" in text


def test_modifiers_without_a_kind_on_a_method_in_a_scanned_module_are_rejected() -> None:
    with pytest.raises(HandlerDeclarationError) as caught:
        Registry.from_modules(["tests.unit.handlers_no_kind_method"])
    text = str(caught.value)
    assert "tests.unit.handlers_no_kind_method.Reminders.remind" in text
    assert "@asynchronous/@delayed/@deduplicated but no @command_handler" in text


def test_from_objects_rejects_functions_without_a_kind() -> None:
    def undeclared(message: Ping) -> None:
        return None

    def only_async(message: Ping) -> None:
        return None

    with pytest.raises(HandlerDeclarationError, match=r"undeclared has no ecotone decorator"):
        registry_of(undeclared)
    with pytest.raises(HandlerDeclarationError, match=r"only_async has @asynchronous/@delayed/@deduplicated but no"):
        registry_of(asynchronous("orders")(only_async))


def test_decorators_apply_to_functions_only() -> None:
    with pytest.raises(HandlerDeclarationError, match="apply to functions"):
        command_handler(42)


# ---------------------------------------------------------------------------
# Injection (query handlers run without a transaction, so these need no database)
# ---------------------------------------------------------------------------

seen: dict[str, Any] = {}


@dataclass(frozen=True)
class Inspect:
    tag: str


@query_handler
def inspect_injection(
    query: Inspect, commands: CommandBus, events: EventBus, queries: QueryBus, meta: Metadata
) -> dict[str, Any]:
    seen["meta"] = meta
    return {"commands": commands, "events": events, "queries": queries, "meta": dict(meta)}


@dataclass(frozen=True)
class NeedsHeader:
    tag: str


@query_handler
def needs_header(
    query: NeedsHeader,
    channel: Annotated[str, Header("sales_channel")],
    region: Annotated[str, Header("region")] = "eu",
    limit: int = 10,
) -> tuple[str, str, int]:
    return channel, region, limit


def test_buses_and_metadata_are_injected() -> None:
    with use_registry(registry_of(inspect_injection)):
        answer = query_bus.send(Inspect("x"), metadata={**TENANT, "source": "web"})

    assert answer["commands"] is command_bus
    assert answer["events"] is event_bus
    assert answer["queries"] is query_bus
    assert answer["meta"]["tenant"] == "acme"
    assert answer["meta"]["source"] == "web"
    assert {"correlation_id", "timestamp"} <= set(answer["meta"])


def test_metadata_is_read_only() -> None:
    with use_registry(registry_of(inspect_injection)):
        query_bus.send(Inspect("x"), metadata=TENANT)
    meta = seen["meta"]

    assert isinstance(meta, Metadata)
    with pytest.raises(TypeError):
        meta["tenant"] = "other"
    with pytest.raises(TypeError):
        del meta["tenant"]
    assert meta["tenant"] == "acme"
    assert len(meta) == len(list(meta)) and "tenant" in repr(meta)


def test_metadata_is_a_copy_of_the_headers() -> None:
    headers = {"tenant": "acme"}
    meta = Metadata(headers)
    headers["tenant"] = "changed"
    assert meta["tenant"] == "acme"


def test_header_present_missing_with_default_and_default_parameters() -> None:
    with use_registry(registry_of(needs_header)):
        present = query_bus.send(NeedsHeader("x"), metadata={**TENANT, "sales_channel": "web", "region": "us"})
        defaults = query_bus.send(NeedsHeader("x"), metadata={**TENANT, "sales_channel": "shop"})

    assert present == ("web", "us", 10)
    assert defaults == ("shop", "eu", 10)


def test_missing_header_without_default_is_a_clear_error() -> None:
    with use_registry(registry_of(needs_header)), pytest.raises(MessageError) as caught:
        query_bus.send(NeedsHeader("x"), metadata=TENANT)
    assert str(caught.value) == (
        f"{MODULE}.needs_header needs header 'sales_channel', which the message does not carry"
    )


def test_header_injection_plan() -> None:
    (handler,) = registry_of(needs_header)
    assert [(p.name, p.source, p.header) for p in handler.params] == [
        ("channel", "header", "sales_channel"),
        ("region", "header", "region"),
        ("limit", "default", None),
    ]


def test_a_scanned_query_with_header_and_default() -> None:
    with use_registry(Registry.from_modules(["tests.unit.handlers_app"])):
        assert query_bus.send(GetOrder("o-1"), metadata={"tenant": "big_corp"}) == "o-1@big_corp/10"


@override_settings(ECOTONE={})
def test_injection_without_tenancy() -> None:
    with use_registry(registry_of(inspect_injection)):
        answer = query_bus.send(Inspect("x"))
    assert "tenant" not in answer["meta"]


def test_use_registry_overrides_and_restores() -> None:
    project = get_registry()
    mine = registry_of(inspect_injection)
    with use_registry(mine):
        assert get_registry() is mine
        with use_registry(Registry()) as empty:
            assert get_registry() is empty
        assert get_registry() is mine
    assert get_registry() is project
    # The project's registry is built from tests.testapp.messaging.
    assert "tests.testapp.messaging.record_sync" in project.handlers


@pytest.mark.django_db
def test_a_command_handler_with_every_injection_runs_through_the_command_bus() -> None:
    with use_registry(Registry.from_modules(["tests.unit.handlers_app"])):
        order_id, bus, events, queries, meta = command_bus.send(PlaceOrder("o-1"), metadata={**TENANT, "via": "api"})
    assert (order_id, bus, events, queries) == ("o-1", command_bus, event_bus, query_bus)
    assert (meta["tenant"], meta["via"]) == ("acme", "api")
