"""A fault of the chaos driver: one tenant database down while the others are up.

The dedicated database of tenant ``enterprise_x`` refuses new connections (``ALTER DATABASE …
ALLOW_CONNECTIONS false``) and loses its sessions (``pg_terminate_backend``) for a few seconds, then
accepts them again, whatever happens. Only that database of this run is touched, never the server, so
it is not a disruptive fault. During it the workers go on serving the other tenants; the down tenant's
messages wait in its database (or are requeued on the broker) and must end handled once, like every
other message of the run (lost 0, doubled 0).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import psycopg

__all__ = ["TENANT", "refusing_connections", "tenant_database", "tenant_down"]

#: The tenant whose dedicated database goes down.
TENANT = "enterprise_x"


def tenant_database(databases: Sequence[str]) -> str:
    """The name of the down tenant's database among this run's databases."""
    for name in databases:
        if name.endswith(f"_{TENANT}"):
            return name
    raise RuntimeError(f"no database of tenant {TENANT!r} among {', '.join(databases) or 'none'}")


@contextlib.contextmanager
def refusing_connections(postgres_url: str, database: str) -> Iterator[int]:
    """``database`` refuses connections and loses its sessions for the block (yields how many were cut)."""
    with psycopg.connect(postgres_url, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [database],
            ).fetchall()
            yield sum(1 for (done,) in rows if done)
        finally:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def tenant_down(postgres_url: str, databases: Sequence[str], seconds: float, stop: threading.Event) -> str:
    """Take the tenant's database down for ``seconds`` (less if ``stop`` is set); what was done."""
    database = tenant_database(databases)
    with refusing_connections(postgres_url, database) as cut:
        stop.wait(seconds)
    return f"database {database} (tenant {TENANT}) refused connections for {seconds:.1f} s; {cut} session(s) cut"
