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
own worker rejects them (only ``consume_channel`` dead-letters them).
"""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import Reject
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from .channels import Delivery
from .channels.celery.protocol import TASK_NAME
from .processing import process
from .schema import is_missing_table
from .tenancy import alias_for


@shared_task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def handle(envelope: str, handler_id: str, channel: str, attempts: int = 0) -> str:
    close_old_connections()
    try:
        return process(Delivery(envelope, handler_id, channel, attempts), fallback_alias=alias_for(None)).value
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
