"""The ``ecotone_saga`` and ``ecotone_saga_history`` tables: saga state with an optimistic version."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from ..clock import now
from ..exceptions import ConcurrencyError
from ..messages import Envelope
from ..models import SagaHistory, SagaState

__all__ = ["create", "exists", "find", "record", "save"]

ACTIVE, COMPLETED = SagaState.ACTIVE, SagaState.COMPLETED


def exists(alias: str, saga_type: str, saga_id: str) -> bool:
    return SagaState.objects.using(alias).filter(saga_type=saga_type, saga_id=saga_id).exists()


def find(alias: str, saga_type: str, saga_id: str) -> SagaState | None:
    return SagaState.objects.using(alias).filter(saga_type=saga_type, saga_id=saga_id).first()


def create(alias: str, saga_type: str, saga_id: str, *, tenant: str, state: dict[str, Any], status: str) -> SagaState:
    """Insert a new saga row (version 1); one started meanwhile by another transaction raises ConcurrencyError."""
    moment = now()
    try:
        with transaction.atomic(using=alias):
            return SagaState.objects.using(alias).create(
                saga_type=saga_type,
                saga_id=saga_id,
                tenant=tenant,
                state=state,
                status=status,
                created_at=moment,
                updated_at=moment,
            )
    except IntegrityError:
        if exists(alias, saga_type, saga_id):  # started by a concurrent transaction: retrying will ignore ours
            raise ConcurrencyError(f"{saga_type} {saga_id} was started concurrently") from None
        raise


def save(alias: str, row: SagaState, *, state: dict[str, Any], status: str) -> None:
    """Store the new state of ``row`` if its version is still the one loaded; else raise ConcurrencyError."""
    updated = (
        SagaState.objects.using(alias)
        .filter(pk=row.pk, version=row.version)
        .update(state=state, status=status, version=row.version + 1, updated_at=now())
    )
    if updated != 1:
        raise ConcurrencyError(f"{row.saga_type} {row.saga_id} changed concurrently (loaded version {row.version})")


def record(alias: str, row: SagaState, handler_id: str, envelope: Envelope) -> None:
    """Add the handled message to the saga's history."""
    SagaHistory.objects.using(alias).create(
        saga=row, message_id=envelope.id, message_type=envelope.type, handler=handler_id, handled_at=now()
    )
