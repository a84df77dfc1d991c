"""The tenant context: which tenant the current code runs for.

A :class:`contextvars.ContextVar` holds it, so it never leaks between threads
(a new thread starts empty) or asyncio tasks (each task works on a copy).
Workers enter :func:`tenant_context` per message; it always resets on exit;
``ecotone_django.middleware.TenantMiddleware`` enters it per request.

:func:`tenant_atomic` opens a transaction on the current tenant's database
(``ecotone_django.transactions.check_send_transaction`` refuses a send inside a
transaction on another database than the tenant's).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ContextDecorator
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, overload

from django.db import transaction

from .conf import get_config
from .messages import Envelope

_F = TypeVar("_F", bound=Callable[..., Any])

_current_tenant: ContextVar[str | None] = ContextVar("ecotone_tenant", default=None)


def current_tenant() -> str | None:
    """The tenant the current code runs for, or ``None`` outside any tenant context."""
    return _current_tenant.get()


class tenant_context:
    """Run the block for ``tenant``; the previous tenant is restored afterwards, even on error.

    A class rather than ``@contextmanager``: it is entered for every message a worker handles.
    """

    __slots__ = ("tenant", "token")

    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant

    def __enter__(self) -> str | None:
        self.token = _current_tenant.set(self.tenant)
        return self.tenant

    def __exit__(self, *exc: object) -> None:
        _current_tenant.reset(self.token)


def alias_for(tenant: str | None) -> str:
    """The DATABASES alias holding ``tenant``'s data (unknown tenants: the default connection)."""
    return get_config().alias_for(tenant)


def current_alias() -> str:
    """The DATABASES alias of the current tenant."""
    return alias_for(current_tenant())


def tenant_of(envelope: Envelope) -> str | None:
    """The tenant a message belongs to (its tenant header), or ``None`` when tenancy is not configured."""
    tenancy = get_config().tenancy
    if tenancy is None:
        return None
    value = envelope.headers.get(tenancy.header)
    return None if value is None else str(value)


class TenantAtomic(ContextDecorator):
    """``transaction.atomic()`` on the current tenant's database, chosen when the block starts.

    As a decorator it picks the alias on each call, not when the function is decorated, so a view
    decorated once runs in the transaction of whichever tenant each request is for.
    """

    def __init__(self, *, savepoint: bool = True, durable: bool = False) -> None:
        self.savepoint = savepoint
        self.durable = durable
        self._block: transaction.Atomic | None = None

    def _recreate_cm(self) -> TenantAtomic:  # a fresh block per decorated call: calls may nest or overlap
        return TenantAtomic(savepoint=self.savepoint, durable=self.durable)

    def __enter__(self) -> str:
        alias = current_alias()
        self._block = transaction.atomic(using=alias, savepoint=self.savepoint, durable=self.durable)
        self._block.__enter__()
        return alias

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._block is not None
        block, self._block = self._block, None
        block.__exit__(exc_type, exc, tb)


@overload
def tenant_atomic(func: _F, /) -> _F: ...
@overload
def tenant_atomic(*, savepoint: bool = True, durable: bool = False) -> TenantAtomic: ...
def tenant_atomic(func: Any = None, /, *, savepoint: bool = True, durable: bool = False) -> Any:
    """A transaction on the current tenant's database: ``with tenant_atomic():`` or ``@tenant_atomic``.

    What ``ATOMIC_REQUESTS`` does for ``default``, for the database the tenant's rows and messages live
    in: the business rows and the outbox rows of the messages sent inside commit or roll back together.
    """
    if func is not None:
        return TenantAtomic(savepoint=savepoint, durable=durable)(func)
    return TenantAtomic(savepoint=savepoint, durable=durable)
