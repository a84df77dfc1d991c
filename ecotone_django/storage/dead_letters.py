"""The ``ecotone_dead_letter`` table: messages that could not be handled, with the reason."""

from __future__ import annotations

import logging
import traceback as tb
from typing import Any

from ..clock import now
from ..messages import Envelope
from ..models import DeadLetter

__all__ = ["dead_letter", "safe_text"]

logger = logging.getLogger("ecotone_django.retry")  # the name logging configurations know it by


def dead_letter(
    alias: str,
    *,
    reason: str,
    body: str,
    exc: BaseException | None = None,
    envelope: Envelope | None = None,
    handler_id: str = "",
    channel: str = "",
    attempts: int = 0,
    tenant: str | None = None,
) -> DeadLetter:
    """Write a dead letter in ``alias`` (the tenant's database when the tenant is known)."""
    letter = DeadLetter.objects.using(alias).create(
        message_id=(envelope.id if envelope else "")[:100],
        message_type=(envelope.type if envelope else "")[:255],
        handler=handler_id[:255],
        channel=channel[:150],
        tenant=(tenant or "")[:150],
        reason=reason[:255],
        exception_type=type(exc).__qualname__ if exc else "",
        exception_message=str(exc) if exc else "",
        traceback="".join(tb.format_exception(exc)) if exc else "",
        body=body,
        attempts=attempts,
        failed_at=now(),
    )
    logger.error("dead letter %s in %r: %s (%s)", letter.pk, alias, reason, handler_id or "no handler")
    return letter


def safe_text(body: Any) -> str:
    """``body`` as text any database stores: invalid UTF-8 replaced, NUL escaped (PostgreSQL rejects it)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body)
    return text.replace("\x00", "\\x00")
