"""Names that differ between the supported Django versions, for the tests.

``transaction.savepoint()`` became ``savepoint_create()`` in Django 6.1 (the old name warns, and warnings are
errors in this suite); 5.2 and 6.0 have only the old name.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

savepoint_create: Callable[..., str] = getattr(transaction, "savepoint_create", None) or transaction.savepoint

__all__ = ["savepoint_create"]
