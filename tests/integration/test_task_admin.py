"""The admin lists ``django.tasks`` results per tenant database (``?db=``), with errors and return values."""

from __future__ import annotations

import pytest
from django.test import Client

from ecotone_django.messaging import tasks_api
from ecotone_django.tenancy import tenant_context
from ecotone_django.worker import Worker
from tests.integration.conftest import ALL_DATABASES
from tests.integration.test_admin import admin, page, url

if tasks_api is None:  # pragma: no cover - every supported leg installs django.tasks or the backport
    pytest.skip("needs django.tasks or the django-tasks backport", allow_module_level=True)

from tests.testapp import jobs

__all__ = ["admin"]  # the fixture, imported for its side effect on this module

pytestmark = pytest.mark.django_db(databases=ALL_DATABASES, transaction=True)


def test_results_are_listed_in_their_tenants_database_with_details(admin: Client) -> None:
    with tenant_context("big_corp"):
        ok = jobs.add.enqueue(20, 22)
        failing = jobs.flaky.enqueue("admin", succeed_on=99)
    Worker(["db"], stop_when_empty=True, relay=False).run()

    listing = page(admin.get(url("taskrun_changelist", db="big_corp")))
    shared = page(admin.get(url("taskrun_changelist")))
    success = page(admin.get(url("taskrun_change", ok.id, db="big_corp")))
    failure = page(admin.get(url("taskrun_change", failing.id, db="big_corp")))

    assert "tests.testapp.jobs.add" in listing and "tests.testapp.jobs.flaky" in listing
    assert "SUCCESSFUL" in listing.upper() and "FAILED" in listing.upper()
    assert "tests.testapp.jobs.add" not in shared
    assert "42" in success and '"args": [\n    20,\n    22\n  ]' in success
    assert "ValueError: attempt 3 fails" in failure
