"""The check project's Celery app (an in-memory broker: nothing is ever sent)."""

from __future__ import annotations

from celery import Celery

app = Celery("checkproject", broker="memory://", set_as_current=False)
