"""The claim lease: how long a database-channel claim may sit idle before the database ends it.

A worker holds the rows it claimed with row locks in the transaction that handles them. A worker that
stops answering while it holds them (SIGSTOP, a debugger, a frozen VM, a network partition) would keep
them locked, and so unhandled, for as long as it is stopped. With a lease the database itself ends a
claiming transaction that has been idle for ``WORKER["CLAIM_LEASE"]`` seconds: it rolls the transaction
back, releasing the rows to the other workers, and closes that connection. When the stopped worker
resumes, its next statement fails, its batch is gone (nothing of it committed) and it claims again; the
inbox keeps any effect that did commit elsewhere from happening twice.

Idle means between statements: a handler that keeps talking to the database is never cut off, one that
spends longer than the lease in pure Python (or waiting on another service) inside its transaction is.

* PostgreSQL: ``idle_in_transaction_session_timeout``, set for the claiming transaction only (``SET LOCAL``
  semantics through ``set_config(…, true)``).
* MariaDB (10.3+): ``idle_transaction_timeout`` for the worker's session.
* SQLite serialises writers and has no row locks; MySQL has no idle-transaction timeout: no lease there.
"""

from __future__ import annotations

import math

from django.db import connections

__all__ = ["CLAIM_SETTING", "hold", "milliseconds"]

#: The PostgreSQL setting of the lease; a claim statement may set it itself (:func:`milliseconds`).
CLAIM_SETTING = "idle_in_transaction_session_timeout"


def hold(alias: str, seconds: float) -> None:
    """Have the database end the current transaction on ``alias`` once it idles for ``seconds`` (0: never)."""
    if seconds <= 0:
        return
    connection = connections[alias]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT set_config('{CLAIM_SETTING}', %s, true)", [milliseconds(seconds)])
    elif connection.vendor == "mysql" and getattr(connection, "mysql_is_mariadb", False):
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION idle_transaction_timeout = %s", [max(1, math.ceil(seconds))])


def milliseconds(seconds: float) -> str:
    """The PostgreSQL value of a lease of ``seconds``, for ``set_config('idle_in_transaction_session_timeout', …)``."""
    return f"{math.ceil(seconds * 1000)}"
