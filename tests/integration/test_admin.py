"""The read-only admins, each reading and acting on the tenant database chosen with ``?db=``."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from ecotone_django.clock import now
from ecotone_django.messages import Envelope, message_name
from ecotone_django.models import DeadLetter, OutboxMessage, SagaHistory, SagaState
from ecotone_django.worker import Worker
from tests.integration.conftest import ALL_DATABASES
from tests.testapp.messaging import RecordAsync
from tests.testapp.models import Record

RECORD_ASYNC = "tests.testapp.messaging.record_async"

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES)


@pytest.fixture
def admin(client: Client) -> Client:
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "not-used")
    client.force_login(user)
    return client


def url(view: str, *args: Any, **query: str) -> str:
    path = reverse(f"admin:ecotone_django_{view}", args=args)
    return f"{path}?{urlencode(query)}" if query else path


def page(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def make_saga(alias: str, saga_id: str, *, stage: str, pk: int | None = None, **fields: Any) -> SagaState:
    values: dict[str, Any] = {
        "saga_type": "tests.OrderSaga",
        "saga_id": saga_id,
        "tenant": alias,
        "state": {"order_id": saga_id, "stage": stage, "lines": [{"sku": "A-1", "qty": 2}]},
        "version": 3,
        "created_at": now(),
        "updated_at": now(),
        **fields,
    }
    if pk is not None:
        values["pk"] = pk
    saga = SagaState.objects.using(alias).create(**values)
    for message_type, handler in [
        ("tests.OrderPlaced", "tests.OrderSaga.start"),
        (f"tests.PaymentCaptured.{alias}", "tests.OrderSaga.on_payment_captured"),
    ]:
        SagaHistory.objects.using(alias).create(
            saga=saga, message_id=str(uuid.uuid4()), message_type=message_type, handler=handler, handled_at=now()
        )
    return saga


def make_letter(alias: str, *, name: str = "x", pk: int | None = None, **fields: Any) -> DeadLetter:
    tenant = "small" if alias == "default" else alias
    envelope = Envelope(type=message_name(RecordAsync), payload={"name": name}, headers={"tenant": tenant})
    values: dict[str, Any] = {
        "message_id": envelope.id,
        "message_type": envelope.type,
        "handler": RECORD_ASYNC,
        "channel": "db",
        "tenant": tenant,
        "reason": f"failed 3 time(s): RuntimeError: boom {name}",
        "exception_type": "RuntimeError",
        "exception_message": f"boom {name}",
        "traceback": f"Traceback (most recent call last):\nRuntimeError: boom {name}\n",
        "body": envelope.encode(),
        "attempts": 3,
        "failed_at": now(),
        **fields,
    }
    if pk is not None:
        values["pk"] = pk
    return DeadLetter.objects.using(alias).create(**values)


# -- the database chooser --------------------------------------------------------------------------


def test_saga_changelist_reads_the_chosen_database(admin: Client):
    make_saga("default", "order-in-shared", stage="paid")
    make_saga("big_corp", "order-in-big-corp", stage="paid")

    shared = page(admin.get(url("sagastate_changelist")))
    dedicated = page(admin.get(url("sagastate_changelist", db="big_corp")))

    assert "order-in-shared" in shared and "order-in-big-corp" not in shared
    assert "order-in-big-corp" in dedicated and "order-in-shared" not in dedicated
    assert "Database: big_corp" in dedicated


def database_filter(content: str) -> tuple[list[str], list[str]]:
    """The aliases the "By database" filter offers, and the selected one(s)."""
    section = re.search(r'<details data-filter-title="database".*?</details>', content, re.DOTALL)
    assert section is not None
    offered = re.findall(r'<a href="\?db=(\w+)"', section.group())
    selected = re.findall(r'<li class="selected">\s*<a href="\?db=(\w+)"', section.group())
    return offered, selected


def test_database_filter_offers_every_alias_and_marks_the_chosen_one(admin: Client):
    chosen = page(admin.get(url("sagastate_changelist", db="enterprise_x")))
    default = page(admin.get(url("sagastate_changelist")))

    assert database_filter(chosen) == (ALL_DATABASES, ["enterprise_x"])
    assert database_filter(default) == (ALL_DATABASES, ["default"])


def test_changelist_filters_and_search_work_inside_the_chosen_database(admin: Client):
    make_saga("big_corp", "order-active", stage="placed")
    make_saga("big_corp", "order-done", stage="shipped", status=SagaState.COMPLETED)
    make_saga("default", "order-done-shared", stage="shipped", status=SagaState.COMPLETED)

    completed = page(admin.get(url("sagastate_changelist", db="big_corp", status="completed")))
    searched = page(admin.get(url("sagastate_changelist", db="big_corp", q="order-act")))

    assert "order-done" in completed and "order-active" not in completed and "order-done-shared" not in completed
    assert "order-active" in searched and "order-done" not in searched


@pytest.mark.parametrize("view", ["sagastate_changelist", "deadletter_changelist", "outboxmessage_changelist"])
def test_an_unknown_database_is_a_404_not_a_500(admin: Client, view: str):
    response = admin.get(url(view, db="nope"))
    assert response.status_code == 404


def test_an_unknown_database_on_a_detail_page_is_a_404(admin: Client):
    saga = make_saga("default", "order-1", stage="paid")
    assert admin.get(url("sagastate_change", saga.pk, db="nope")).status_code == 404
    filters = quote("db=nope", safe="")
    assert admin.get(url("sagastate_change", saga.pk) + f"?_changelist_filters={filters}").status_code == 404


# -- sagas -----------------------------------------------------------------------------------------


def test_saga_detail_shows_the_state_as_pretty_json_and_the_history_of_its_database(admin: Client):
    make_saga("default", "order-shared", stage="placed", pk=7)
    make_saga("big_corp", "order-big", stage="paid", pk=7)  # the same id in another database

    content = page(admin.get(url("sagastate_change", 7, db="big_corp")))

    assert "<pre>" in content
    assert '"stage": "paid"' in content
    assert '  "lines": [\n    {\n      "qty": 2,' in content  # indented, keys sorted
    assert "order-shared" not in content
    assert "tests.PaymentCaptured.big_corp" in content and "tests.OrderSaga.on_payment_captured" in content
    assert "tests.PaymentCaptured.default" not in content
    assert all(entry.message_id in content for entry in SagaHistory.objects.using("big_corp").filter(saga_id=7))
    assert "(database: big_corp)" in content
    shared = page(admin.get(url("sagastate_change", 7)))
    assert '"stage": "placed"' in shared and "tests.PaymentCaptured.default" in shared


def test_changelist_links_carry_the_database_to_the_detail_page(admin: Client):
    saga = make_saga("big_corp", "order-big", stage="paid", pk=11)
    make_saga("default", "order-shared", stage="placed", pk=11)

    changelist = admin.get(url("sagastate_changelist", db="big_corp")).content.decode()
    link = re.search(rf'href="({reverse("admin:ecotone_django_sagastate_change", args=[saga.pk])}[^"]*)"', changelist)
    assert link is not None
    detail = page(admin.get(html.unescape(link.group(1))))

    assert '"stage": "paid"' in detail
    # Its breadcrumbs lead back to the same database's changelist.
    assert f'href="{reverse("admin:ecotone_django_sagastate_changelist")}?db=big_corp"' in detail


def test_a_detail_page_opened_with_db_keeps_it_in_its_links(admin: Client):
    letter = make_letter("big_corp")

    content = page(admin.get(url("deadletter_change", letter.pk, db="big_corp")))

    assert f'href="{reverse("admin:ecotone_django_deadletter_changelist")}?db=big_corp"' in content
    delete_url = reverse("admin:ecotone_django_deadletter_delete", args=[letter.pk])
    assert f'href="{delete_url}?_changelist_filters=db%3Dbig_corp"' in content


def test_the_admins_are_read_only(admin: Client):
    saga = make_saga("big_corp", "order-big", stage="paid")
    for view in ["sagastate_add", "deadletter_add", "outboxmessage_add"]:
        assert admin.get(url(view)).status_code == 403
    response = admin.post(url("sagastate_change", saga.pk, db="big_corp"), {"status": "completed", "version": "9"})
    assert response.status_code == 403
    assert SagaState.objects.using("big_corp").get(pk=saga.pk).version == 3
    assert admin.get(url("sagastate_delete", saga.pk, db="big_corp")).status_code == 403
    assert 'name="_save"' not in page(admin.get(url("sagastate_change", saga.pk, db="big_corp")))


# -- dead letters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ALL_DATABASES)
def test_dead_letter_changelist_and_detail_render_in_each_database(admin: Client, alias: str):
    letter = make_letter(alias, name=f"in-{alias}")
    for other in ALL_DATABASES:
        if other != alias:
            make_letter(other, name=f"in-{other}")

    listing = page(admin.get(url("deadletter_changelist", db=alias)))
    detail = page(admin.get(url("deadletter_change", letter.pk, db=alias)))

    assert f"boom in-{alias}" in listing
    assert all(f"boom in-{other}" not in listing for other in ALL_DATABASES if other != alias)
    assert RECORD_ASYNC in listing
    assert "Traceback (most recent call last):\nRuntimeError: boom in-" + alias in detail
    assert "RuntimeError: boom in-" + alias in detail
    assert f'"name": "in-{alias}"' in detail
    assert '\n  "payload": {' in detail  # the envelope, pretty-printed


@pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)
def test_replay_action_moves_the_letter_back_to_its_database_outbox_and_a_worker_handles_it(admin: Client):
    letter = make_letter("big_corp", name="replayed", pk=5)
    twin = make_letter("default", name="left-alone", pk=5)

    response = admin.post(
        url("deadletter_changelist", db="big_corp"), {"action": "replay_selected", "_selected_action": [str(letter.pk)]}
    )

    assert response.status_code == 302
    assert response["Location"].endswith("?db=big_corp")
    assert "Replayed 1 dead letter(s) in database big_corp." in page(admin.get(response["Location"]))
    assert not DeadLetter.objects.using("big_corp").exists()
    assert DeadLetter.objects.using("default").filter(pk=twin.pk).exists()
    row = OutboxMessage.objects.using("big_corp").get()
    assert (row.handler, row.channel, row.attempts) == (RECORD_ASYNC, "db", 0)

    Worker(["db"], stop_when_empty=True, relay=False).run()

    assert Record.objects.using("big_corp").filter(name="replayed", handler="record_async").count() == 1
    assert not Record.objects.using("default").exists()


def test_replay_action_reports_a_letter_it_cannot_replay_and_keeps_it(admin: Client):
    bad = make_letter("enterprise_x", body="{broken")

    response = admin.post(
        url("deadletter_changelist", db="enterprise_x"), {"action": "replay_selected", "_selected_action": [bad.pk]}
    )

    content = page(admin.get(response["Location"]))
    assert f"Dead letter {bad.pk} cannot be replayed: its body is not a valid envelope" in content
    assert DeadLetter.objects.using("enterprise_x").filter(pk=bad.pk).exists()
    assert not OutboxMessage.objects.using("enterprise_x").exists()


def test_delete_action_removes_letters_of_the_chosen_database_only(admin: Client):
    letter = make_letter("big_corp", pk=9)
    twin = make_letter("default", pk=9)
    changelist = url("deadletter_changelist", db="big_corp")
    selection = {"action": "delete_selected", "_selected_action": [letter.pk]}

    confirmation = page(admin.post(changelist, selection))
    assert "Are you sure" in confirmation
    response = admin.post(changelist, {**selection, "post": "yes"})

    assert response.status_code == 302
    assert not DeadLetter.objects.using("big_corp").exists()
    assert DeadLetter.objects.using("default").filter(pk=twin.pk).exists()


def test_delete_button_of_a_detail_page_deletes_in_that_database(admin: Client):
    letter = make_letter("enterprise_x", pk=12)
    twin = make_letter("default", pk=12)
    filters = quote("db=enterprise_x", safe="")

    response = admin.post(url("deadletter_delete", letter.pk) + f"?_changelist_filters={filters}", {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"].endswith("?db=enterprise_x")
    assert not DeadLetter.objects.using("enterprise_x").exists()
    assert DeadLetter.objects.using("default").filter(pk=twin.pk).exists()


def test_sagas_and_pending_messages_offer_no_actions(admin: Client):
    make_saga("default", "order-1", stage="paid")
    make_letter("default")
    assert 'name="action"' not in page(admin.get(url("sagastate_changelist")))
    assert 'name="action"' in page(admin.get(url("deadletter_changelist")))


# -- pending messages ------------------------------------------------------------------------------


def test_pending_messages_list_and_detail_in_the_chosen_database(admin: Client):
    envelope = Envelope(type=message_name(RecordAsync), payload={"name": "waiting"}, headers={"tenant": "big_corp"})
    row = OutboxMessage.objects.using("big_corp").create(
        message_id=envelope.id,
        channel="db",
        handler=RECORD_ASYNC,
        message_type=envelope.type,
        tenant="big_corp",
        body=envelope.encode(),
        available_at=now(),
        attempts=2,
        created_at=now(),
        last_error="RuntimeError: flaky",
    )

    listing = page(admin.get(url("outboxmessage_changelist", db="big_corp")))
    shared = page(admin.get(url("outboxmessage_changelist")))
    detail = page(admin.get(url("outboxmessage_change", row.pk, db="big_corp")))

    assert RECORD_ASYNC in listing and "RuntimeError: flaky" in listing
    assert RECORD_ASYNC not in shared
    assert '"name": "waiting"' in detail and envelope.id in detail
