"""A missing table is recognised on the engine under test (PostgreSQL, MariaDB or SQLite) and named with the
command that creates it; a migrated test database has nothing left to apply."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connections, transaction

from ecotone_django.exceptions import UnmigratedDatabaseError
from ecotone_django.schema import migrate_hint, unapplied_migrations
from tests.integration.conftest import ALL_DATABASES


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_a_missing_table_becomes_an_error_naming_the_migrate_command() -> None:
    named = pytest.raises(UnmigratedDatabaseError, match=r"run `python manage\.py migrate --database big_corp`$")
    with named, migrate_hint("big_corp"), transaction.atomic(using="big_corp"):
        connections["big_corp"].cursor().execute("SELECT 1 FROM ecotone_no_such_table")


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_other_database_errors_pass_unchanged() -> None:
    with pytest.raises(DatabaseError) as caught, migrate_hint("big_corp"), transaction.atomic(using="big_corp"):
        connections["big_corp"].cursor().execute("SELECT * FROM ecotone_outbox WHERE no_such_column = 1")
    assert not isinstance(caught.value, UnmigratedDatabaseError)


@pytest.mark.django_db(databases=ALL_DATABASES)
def test_the_test_databases_are_fully_migrated() -> None:
    assert {alias: unapplied_migrations(alias) for alias in ALL_DATABASES} == {alias: [] for alias in ALL_DATABASES}
