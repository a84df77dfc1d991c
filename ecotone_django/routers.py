"""``TenantRouter``: the tenant context picks the database of tenant-scoped apps.

Add it to ``DATABASE_ROUTERS``. Models of ``ECOTONE["TENANCY"]["TENANT_APPS"]``
read and write on the current tenant's alias; every other app stays on
``default``. Migrations put ecotone_django's tables and the tenant apps on every
tenant database, so ``migrate --database big_corp`` builds a complete tenant.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from .conf import get_config
from .exceptions import ConfigurationError
from .tenancy import current_alias

OWN_APP = "ecotone_django"


class TenantRouter:
    def _is_tenant_app(self, app_label: str) -> bool:
        tenancy = get_config().tenancy
        return tenancy is not None and app_label in tenancy.tenant_apps

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if self._is_tenant_app(model._meta.app_label):
            return current_alias()
        return None

    db_for_write = db_for_read

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        db1, db2 = obj1._state.db, obj2._state.db
        if db1 is not None and db2 is not None:
            return db1 == db2
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        try:
            config = get_config()
        except ConfigurationError:
            # An invalid ECOTONE setting is the system check ecotone.E001, which every management command runs
            # before it does anything. Django's model checks ask this method too (on every alias since Django 6.1):
            # abstaining here lets the check run finish and report E001 instead of crashing with a traceback.
            return None
        if config.tenancy is None:
            return None
        tenant_dbs = config.tenancy.aliases
        if app_label == OWN_APP or self._is_tenant_app(app_label):
            return db in tenant_dbs or db == "default"
        # Every other app lives on "default" only; a dedicated tenant database holds just tenant data.
        if db in tenant_dbs and db != "default":
            return False
        return None
