"""Who may do what in the admin: replay and delete need their model permissions, and a non-superuser
browses only the tenant databases ``ECOTONE["ADMIN_DATABASES"]`` opens to them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.http import HttpRequest
from django.test import Client, override_settings

from ecotone_django.checks import check_ecotone
from ecotone_django.models import DeadLetter, OutboxMessage
from tests.integration.conftest import ALL_DATABASES
from tests.integration.test_admin import make_letter, url
from tests.settings import ECOTONE

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES)

HOOK = "tests.integration.test_admin_access.databases_of"


def databases_of(request: HttpRequest) -> Iterable[str]:
    """The example hook: a staff user's tenant databases, here from the user name (``ops-big_corp``)."""
    return [request.user.get_username().removeprefix("ops-")]


def staff(client: Client, name: str, *permissions: str) -> Client:
    user = get_user_model().objects.create_user(name, password="not-used", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="ecotone_django", codename__in=permissions)
    )
    client.force_login(user)
    return client


def replay(client: Client, alias: str, letter: DeadLetter) -> Any:
    return client.post(
        url("deadletter_changelist", db=alias), {"action": "replay_selected", "_selected_action": [letter.pk]}
    )


def delete(client: Client, alias: str, letter: DeadLetter) -> Any:
    selection = {"action": "delete_selected", "_selected_action": [letter.pk], "post": "yes"}
    return client.post(url("deadletter_changelist", db=alias), selection)


@override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": HOOK})
def test_viewing_alone_neither_replays_nor_deletes(client: Client) -> None:
    viewer = staff(client, "ops-big_corp", "view_deadletter")
    letter = make_letter("big_corp")

    page = viewer.get(url("deadletter_changelist", db="big_corp"))
    assert page.status_code == 200 and 'name="action"' not in page.content.decode()
    replay(viewer, "big_corp", letter)
    delete(viewer, "big_corp", letter)
    assert viewer.post(url("deadletter_delete", letter.pk) + "?db=big_corp", {"post": "yes"}).status_code == 403

    assert DeadLetter.objects.using("big_corp").filter(pk=letter.pk).exists()
    assert not OutboxMessage.objects.using("big_corp").exists()


@override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": HOOK})
def test_replay_needs_the_replay_permission_and_delete_the_delete_permission(client: Client) -> None:
    deleter = staff(Client(), "ops-big_corp", "view_deadletter", "delete_deadletter")
    replayer = staff(client, "ops-big_corp-replayer", "view_deadletter", "replay_deadletter")
    kept, deleted = make_letter("big_corp", name="kept"), make_letter("big_corp", name="deleted")

    replay(deleter, "big_corp", kept)  # the action is not offered to this user: nothing happens
    assert DeadLetter.objects.using("big_corp").filter(pk=kept.pk).exists()
    assert delete(deleter, "big_corp", deleted).status_code == 302
    assert not DeadLetter.objects.using("big_corp").filter(pk=deleted.pk).exists()

    with override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": "tests.integration.test_admin_access.big_corp"}):
        delete(replayer, "big_corp", kept)  # not offered either
        assert DeadLetter.objects.using("big_corp").filter(pk=kept.pk).exists()
        assert replay(replayer, "big_corp", kept).status_code == 302
    assert not DeadLetter.objects.using("big_corp").filter(pk=kept.pk).exists()
    assert OutboxMessage.objects.using("big_corp").count() == 1  # replayed


def big_corp(request: HttpRequest) -> Iterable[str]:
    """A hook that opens big_corp to every staff user."""
    return ["big_corp"]


@override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": HOOK})
def test_a_non_superuser_browses_only_the_databases_the_hook_allows(client: Client) -> None:
    viewer = staff(client, "ops-big_corp", "view_deadletter", "delete_deadletter")
    theirs, other = make_letter("big_corp", pk=7), make_letter("enterprise_x", pk=7)

    default_page = viewer.get(url("deadletter_changelist")).content.decode()
    assert "Database: big_corp" in default_page  # the first allowed database, not the first of all
    assert "?db=enterprise_x" not in default_page and "?db=default" not in default_page  # the filter offers it alone
    assert viewer.get(url("deadletter_changelist", db="enterprise_x")).status_code == 403
    assert viewer.get(url("deadletter_change", other.pk, db="enterprise_x")).status_code == 403
    assert viewer.get(url("deadletter_change", theirs.pk, db="big_corp")).status_code == 200
    assert viewer.get(url("deadletter_changelist", db="nowhere")).status_code == 404
    delete(viewer, "enterprise_x", other)
    assert DeadLetter.objects.using("enterprise_x").filter(pk=other.pk).exists()


def test_without_the_hook_a_non_superuser_browses_no_tenant_database(client: Client) -> None:
    viewer = staff(client, "ops-big_corp", "view_deadletter", "view_sagastate", "view_outboxmessage")
    make_letter("default")
    assert viewer.get(url("deadletter_changelist")).status_code == 403
    assert viewer.get(url("deadletter_changelist", db="default")).status_code == 403
    index = viewer.get("/admin/").content.decode()
    assert "Dead letters" not in index  # not offered at all


def test_a_superuser_browses_every_database(admin_client: Client) -> None:
    for alias in ALL_DATABASES:
        assert admin_client.get(url("deadletter_changelist", db=alias)).status_code == 200


@pytest.mark.parametrize(
    "hook", ["tests.integration.test_admin_access.nothing_here", "tests.integration.test_admin_access.HOOK"]
)
def test_a_hook_that_is_not_a_callable_is_a_system_check_error(hook: str) -> None:
    with override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": hook}):
        assert [e.id for e in check_ecotone()] == ["ecotone.E021"]
    with override_settings(ECOTONE={**ECOTONE, "ADMIN_DATABASES": HOOK}):
        assert check_ecotone() == []
