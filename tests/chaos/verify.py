"""The chaos run's verdict, read from the databases once everything settled.

Nothing here trusts a counter kept in memory by the driver or a worker: orders, side effects, sagas, inbox,
outbox and dead letters are read back from every tenant database and checked against what the driver sent.

* every order is in a final stage and its side effects agree with it (``example_project.demo.classify``);
* no side effect happened twice: the UNIQUE order ids make a second charge, refund, shipment, cancellation or
  notification fail with an IntegrityError, which would end as a dead letter (or a retry still queued);
* each asynchronous handler committed exactly as many inbox rows in a database as that database's orders
  call for — a message handled twice, or in another tenant's database, shows up as a count off by one;
* every business, saga, inbox, outbox and dead-letter row sits in the database of the tenant it belongs to;
* dead letters exist for the injected poison messages only, at least one for each.

Imports Django models: import this module only after ``django.setup()``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Model

from ecotone_django.models import DeadLetter, InboxEntry, OutboxMessage, SagaState
from ecotone_django.tenancy import alias_for
from example_project.demo import TenantResult, read_results
from example_project.fulfillment.models import Shipment
from example_project.notifications.models import Notification
from example_project.orders.messages import OrderStage
from example_project.orders.models import Cancellation, Order
from example_project.payments import gateway
from example_project.payments.models import Charge, Refund

PLACE_ORDER = "example_project.orders.messaging.place_order"
CHARGE = "example_project.payments.messaging.charge_customer"
SETTLE = "example_project.payments.messaging.settle_payment"
TIMEOUT = "example_project.orders.messaging.OrderSaga.payment_timeout"
FULFILL = "example_project.fulfillment.messaging.fulfill_order"
REFUND = "example_project.payments.messaging.refund_payment"
CANCEL = "example_project.orders.messaging.cancel_order"
NOTIFY = "example_project.notifications.messaging.send_notification"
ASYNC_HANDLERS = (PLACE_ORDER, CHARGE, SETTLE, TIMEOUT, FULFILL, REFUND, CANCEL, NOTIFY)
SIDE_EFFECTS: tuple[type[Model], ...] = (Charge, Refund, Shipment, Cancellation, Notification)
SAGA_TYPE = "example_project.orders.messaging.OrderSaga"


@dataclass(frozen=True)
class Poison:
    """A message injected to fail: its ``token`` is in its body, so its dead letter can be told apart."""

    token: str
    kind: str
    alias: str  # where its dead letter belongs
    tenant: str  # the tenant its dead letter names ("" when the message carries none that can be read)


@dataclass
class Verdict:
    results: list[TenantResult]
    violations: list[str] = field(default_factory=list)
    handled: int = 0  # inbox rows: handler runs that committed
    dead_letters: int = 0
    poison_dead: int = 0
    poison_duplicates: int = 0
    side_effects: Counter[str] = field(default_factory=Counter)
    misplaced: int = 0

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.results)

    @property
    def doubled(self) -> int:
        return sum(r.doubled for r in self.results)

    def fail(self, text: str) -> None:
        self.violations.append(text)


def expected_inbox(order_id: str, facts: Mapping[str, set[str]], stage: str) -> list[str]:
    """The asynchronous handlers one settled order ran, each exactly once (its inbox rows)."""
    handlers = [PLACE_ORDER, CHARGE, TIMEOUT, NOTIFY]
    if gateway.fate(order_id) is gateway.Fate.LATE:
        handlers.append(SETTLE)
    if stage in (OrderStage.COMPLETED, OrderStage.REFUNDED):
        handlers.append(FULFILL)
    if order_id in facts["refund"]:
        handlers.append(REFUND)
    if order_id in facts["cancellation"]:
        handlers.append(CANCEL)
    return handlers


def verify(
    placed: Mapping[str, Sequence[str]],
    prefix: str,
    since: datetime,
    aliases: Iterable[str],
    poison: Sequence[Poison],
) -> Verdict:
    aliases = list(aliases)
    owner = {order_id: tenant for tenant, ids in placed.items() for order_id in ids}
    verdict = Verdict(read_results(placed, prefix, since))
    for result in verdict.results:
        if result.lost:
            verdict.fail(f"{result.tenant}: {result.lost} order(s) not settled consistently (lost)")
        if result.doubled:
            verdict.fail(f"{result.tenant}: {result.doubled} side effect(s) attempted twice (IntegrityError)")
    for alias in aliases:
        _check_database(verdict, alias, owner)
    _check_dead_letters(verdict, aliases, poison)
    return verdict


def _misplaced(verdict: Verdict, alias: str, what: str, tenant: str | None, detail: str) -> None:
    verdict.misplaced += 1
    verdict.fail(f"{alias}: {what} of tenant {tenant!r} belongs in {alias_for(tenant)!r} ({detail})")


def _check_database(verdict: Verdict, alias: str, owner: Mapping[str, str]) -> None:
    def belongs(tenant: str | None) -> bool:
        return alias_for(tenant or None) == alias

    # Orders: the row's tenant column and the tenant the driver placed it for.
    stages: dict[str, str] = {}
    for order_id, tenant, stage in Order._default_manager.using(alias).values_list("order_id", "tenant", "stage"):
        stages[order_id] = stage
        if order_id not in owner:
            verdict.fail(f"{alias}: order {order_id!r} was never placed")
        elif owner[order_id] != tenant or not belongs(tenant):
            _misplaced(verdict, alias, f"order {order_id}", tenant, f"placed for {owner[order_id]!r}")
        if not OrderStage(stage).is_final:
            verdict.fail(f"{alias}: order {order_id} is still {stage}")

    # Side effects: every row's order belongs to a tenant of this database; none twice (UNIQUE anyway).
    facts: dict[str, set[str]] = {}
    for model in SIDE_EFFECTS:
        ids = list(model.objects.using(alias).values_list("order_id", flat=True))  # type: ignore[attr-defined]
        name = model.__name__.lower()
        facts[name] = set(ids)
        verdict.side_effects[name] += len(ids)
        for order_id, times in Counter(ids).items():
            if times > 1:
                verdict.fail(f"{alias}: {times} {name}s of order {order_id}")
        for order_id in facts[name]:
            tenant = owner.get(order_id)
            if tenant is None or not belongs(tenant):
                _misplaced(verdict, alias, f"{name} of order {order_id}", tenant, "side effect")

    # Sagas: the tenant column and the order the saga coordinates.
    for saga_type, saga_id, tenant in SagaState.objects.using(alias).values_list("saga_type", "saga_id", "tenant"):
        if saga_type != SAGA_TYPE:
            verdict.fail(f"{alias}: unexpected saga {saga_type} {saga_id}")
        elif owner.get(saga_id) != tenant or not belongs(tenant):
            _misplaced(verdict, alias, f"saga {saga_id}", tenant, f"order of {owner.get(saga_id)!r}")

    # Inbox: each handler's rows number exactly what this database's orders call for.
    expected: Counter[str] = Counter()
    for order_id, stage in stages.items():
        expected.update(expected_inbox(order_id, facts, stage))
    actual: Counter[str] = Counter()
    for key, handler in InboxEntry.objects.using(alias).values_list("key", "handler").iterator():
        actual[handler] += 1
        if key.startswith("dedup:order_id="):
            order_id = key.removeprefix("dedup:order_id=")
            tenant = owner.get(order_id)
            if tenant is None or not belongs(tenant):
                _misplaced(verdict, alias, f"inbox row {key}", tenant, handler)
    verdict.handled += sum(actual.values())
    for handler in sorted(set(expected) | set(actual)):
        if actual[handler] != expected[handler]:
            verdict.fail(
                f"{alias}: {actual[handler]} inbox row(s) of {handler.rsplit('.', 1)[-1]}, "
                f"its orders call for {expected[handler]}"
            )

    # Outbox: nothing may be left; whatever is, must be in its tenant's database.
    for row in OutboxMessage.objects.using(alias).all():
        if not belongs(row.tenant):
            _misplaced(verdict, alias, f"queued {row.message_type}", row.tenant, row.handler)
        verdict.fail(f"{alias}: still queued after settling: {row.message_type} for {row.handler} ({row.tenant})")


def _check_dead_letters(verdict: Verdict, aliases: Sequence[str], poison: Sequence[Poison]) -> None:
    found: dict[str, list[str]] = defaultdict(list)
    for alias in aliases:
        for letter in DeadLetter.objects.using(alias).all():
            verdict.dead_letters += 1
            if alias_for(letter.tenant or None) != alias:
                _misplaced(verdict, alias, f"dead letter {letter.pk}", letter.tenant, letter.reason)
            match = next((p for p in poison if p.token in letter.body), None)
            if match is None:
                verdict.fail(
                    f"{alias}: dead letter of a real message: {letter.message_type or '?'} for "
                    f"{letter.handler or '?'} ({letter.tenant or 'no tenant'}): {letter.reason}"
                )
                continue
            found[match.token].append(alias)
            if (alias, letter.tenant) != (match.alias, match.tenant):
                verdict.fail(
                    f"poison {match.token} ({match.kind}) dead-lettered in {alias!r} for {letter.tenant!r}, "
                    f"expected {match.alias!r} for {match.tenant!r}"
                )
    for item in poison:
        copies = len(found.get(item.token, []))
        if copies == 0:
            verdict.fail(f"poison {item.token} ({item.kind}) has no dead letter")
        verdict.poison_dead += min(copies, 1)
        verdict.poison_duplicates += max(copies - 1, 0)


def queued(aliases: Iterable[str]) -> int:
    return sum(OutboxMessage.objects.using(alias).count() for alias in aliases)


def settled_orders(aliases: Iterable[str], prefix: str) -> int:
    """Orders in a final stage (a cheap count for progress; the verdict checks consistency)."""
    final = [s.value for s in OrderStage if s.is_final]
    return sum(
        Order._default_manager.using(alias).filter(order_id__startswith=prefix, stage__in=final).count()
        for alias in aliases
    )


def dead_letter_bodies(aliases: Iterable[str]) -> list[str]:
    return [body for alias in aliases for body in DeadLetter.objects.using(alias).values_list("body", flat=True)]
