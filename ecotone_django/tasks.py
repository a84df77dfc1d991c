"""The Celery task that carries ecotone_django messages.

``celery -A proj worker -Q orders_premium`` picks it up through Celery's
autodiscovery of installed apps' ``tasks`` modules. Run such workers with
``--prefetch-multiplier 1``; the task acks late and rejects on worker loss, so a
killed worker's message is redelivered and the inbox makes it count once.

A message runs through the same :func:`ecotone_django.processing.process` as under
``manage.py consume_channel``: inbox, handler and outgoing messages in one
transaction; failures become retries held in the outbox (``available_at``, no
ETA) or dead letters. Retries and delayed messages are published by the outbox
relay, so a deployment with Celery workers only also runs ``manage.py
relay_outbox``. Messages Celery cannot decode never reach this task: Celery's
own worker rejects them (only ``consume_channel`` dead-letters them). With
``ECOTONE["SIGNING"]`` the task checks the message's signature first, as
``consume_channel`` does: a bad one is dead-lettered in the default database.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from .channels import Delivery
from .channels.celery.protocol import TASK_NAME, verify
from .exceptions import BadSignatureError, DecodeError
from .messages import Envelope
from .processing import Outcome, process, reject
from .schema import is_missing_table
from .signing import KEY_ID_HEADER, SIGNATURE_HEADER, get_keyring
from .tenancy import alias_for


def _signature_error(request: Any, envelope: str, handler_id: str, channel: str, attempts: int) -> Exception | None:
    """Why the task message's signature does not verify; ``None`` when it does or signing is off."""
    keyring = get_keyring()
    if keyring is None:
        return None
    headers = {name: getattr(request, name, None) for name in (KEY_ID_HEADER, SIGNATURE_HEADER)}
    try:
        decoded: Envelope | None = Envelope.decode(envelope)
    except DecodeError:
        decoded = None
    try:
        verify(keyring, headers, envelope, decoded, handler_id, channel, attempts)
    except BadSignatureError as exc:
        return exc
    return None


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle(self: Any, envelope: str, handler_id: str, channel: str, attempts: int = 0) -> str:
    close_old_connections()
    try:
        delivery = Delivery(envelope, handler_id, channel, attempts)
        bad = _signature_error(self.request, envelope, handler_id, channel, attempts)
        if bad is not None:
            reject(delivery, str(bad), bad)
            return Outcome.DEAD.value
        return process(delivery, fallback_alias=alias_for(None)).value
    except DatabaseError as exc:
        if is_missing_table(exc):  # an unmigrated tenant database: keep the message (a failed task is acked, lost)
            raise Reject(
                f"a database is not migrated ({exc}); run `python manage.py migrate --database ALIAS` for it",
                requeue=True,
            ) from exc
        if isinstance(exc, OperationalError | InterfaceError):  # the database is unreachable: the message goes back
            raise Reject(f"database unavailable: {exc}", requeue=True) from exc
        raise
    finally:
        close_old_connections()
