"""The tenant context: which tenant the current code runs for.

A :class:`contextvars.ContextVar` holds it, so it never leaks between threads
(a new thread starts empty) or asyncio tasks (each task works on a copy).
Workers enter :func:`tenant_context` per message; it always resets on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .conf import get_config
from .messages import Envelope

_current_tenant: ContextVar[str | None] = ContextVar("ecotone_tenant", default=None)


def current_tenant() -> str | None:
    """The tenant the current code runs for, or ``None`` outside any tenant context."""
    return _current_tenant.get()


@contextmanager
def tenant_context(tenant: str | None) -> Iterator[str | None]:
    """Run the block for ``tenant``; the previous tenant is restored afterwards, even on error."""
    token = _current_tenant.set(tenant)
    try:
        yield tenant
    finally:
        _current_tenant.reset(token)


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
