"""A valid project (two tenant databases, a dynamic channel, one asynchronous handler), then the one mistake
that ``ECOTONE_CHECK_CASE`` names. Nothing here needs a server: the databases are SQLite in memory.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

SECRET_KEY = "ecotone-check-project-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ROOT_URLCONF = "tests.checkproject.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "ecotone_django"]
# ECOTONE_CHECK_DB_DIR: SQLite files there (tests that migrate, run workers, send); else in memory.
# ECOTONE_CHECK_PG_PREFIX: PostgreSQL databases <prefix>_<alias> on POSTGRES_URL instead (the test creates them).
DB_DIR = os.environ.get("ECOTONE_CHECK_DB_DIR")
PG_PREFIX = os.environ.get("ECOTONE_CHECK_PG_PREFIX")
DATABASES: dict[str, dict[str, Any]] = {
    alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": f"{DB_DIR}/{alias}.sqlite3" if DB_DIR else ":memory:"}
    for alias in ("default", "big_corp")
}
if PG_PREFIX:
    _pg = urlparse(os.environ.get("POSTGRES_URL") or "postgres://postgres@127.0.0.1:5432/postgres")
    DATABASES = {
        alias: {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": f"{PG_PREFIX}_{alias}",
            "USER": _pg.username or "postgres",
            "PASSWORD": _pg.password or "",
            "HOST": _pg.hostname or "127.0.0.1",
            "PORT": _pg.port or 5432,
        }
        for alias in DATABASES
    }
DATABASE_ROUTERS = ["ecotone_django.routers.TenantRouter"]

DATABASE_CHANNEL = {"BACKEND": "ecotone_django.channels.DatabaseChannel"}
ORDERS: dict[str, Any] = {
    "BACKEND": "ecotone_django.channels.DynamicChannel",
    "OPTIONS": {"header": "tenant", "mapping": {"big_corp": "orders_premium"}, "default": "orders_shared"},
}
ECOTONE: dict[str, Any] = {
    "TENANCY": {"HEADER": "tenant", "CONNECTIONS": {"big_corp": "big_corp"}},
    "CHANNELS": {"orders_shared": DATABASE_CHANNEL, "orders_premium": DATABASE_CHANNEL, "orders": ORDERS},
    "HANDLER_MODULES": ["tests.checkproject.handlers"],
}

CASE = os.environ.get("ECOTONE_CHECK_CASE", "")
if CASE == "misspelt_backend":
    ECOTONE["CHANNELS"]["orders_shared"] = {"BACKEND": "ecotone_django.channels.DatabseChannel"}
elif CASE == "unknown_option":
    ECOTONE["CHANNELS"]["orders"] = {**ORDERS, "OPTIONS": {**ORDERS["OPTIONS"], "mappings": {}}}
elif CASE == "dynamic_mapping_to_a_missing_channel":
    typo = {"big_corp": "orders_premum"}
    ECOTONE["CHANNELS"]["orders"] = {**ORDERS, "OPTIONS": {**ORDERS["OPTIONS"], "mapping": typo}}
elif CASE == "missing_router":
    DATABASE_ROUTERS = []
elif CASE == "unknown_asynchronous_channel":
    ECOTONE["HANDLER_MODULES"] = [*ECOTONE["HANDLER_MODULES"], "tests.checkproject.handlers_typo"]
elif CASE == "misspelt_top_level_key":
    ECOTONE["CHANELS"] = ECOTONE.pop("CHANNELS")
elif CASE == "tenant_header_case":
    ECOTONE["CHANNELS"]["orders"] = {**ORDERS, "OPTIONS": {**ORDERS["OPTIONS"], "header": "Tenant"}}
elif CASE == "handler_without_annotation":
    ECOTONE["HANDLER_MODULES"] = [*ECOTONE["HANDLER_MODULES"], "tests.checkproject.handlers_unannotated"]
elif CASE == "tenant_apps_typo":
    ECOTONE["TENANCY"]["TENANT_APPS"] = ["contenttype"]
elif CASE == "connection_alias_typo":
    ECOTONE["TENANCY"]["CONNECTIONS"] = {"big_corp": "bigcorp"}
elif CASE == "celery_app_typo":
    ECOTONE["CHANNELS"]["orders_premium"] = {"BACKEND": "ecotone_django.channels.CeleryChannel"}
    ECOTONE["CELERY_APP"] = "tests.checkproject.celery_app.ap"
elif CASE == "resolver_typo":
    ECOTONE["TENANCY"]["REQUEST"] = {"RESOLVER": "ecotone_django.middleware.tenant_from_usr"}
elif CASE == "header_resolver_without_header":
    ECOTONE["TENANCY"]["REQUEST"] = {"RESOLVER": "ecotone_django.middleware.tenant_from_header"}
elif CASE == "middleware_before_authentication":
    MIDDLEWARE = [
        "django.contrib.sessions.middleware.SessionMiddleware",
        "ecotone_django.middleware.TenantMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
elif CASE:
    raise RuntimeError(f"unknown ECOTONE_CHECK_CASE {CASE!r}")
