"""The Celery app behind ``celery -A tests.celery_worker_app worker`` in the tests.

Django is set up first (the task runs handlers and uses the ORM), then the app the ``rabbit`` channel
publishes through is exposed with the ``ecotone_django.handle`` task registered on it.
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

import ecotone_django.tasks  # noqa: E402,F401  (registers ecotone_django.handle)
from tests.celery_apps import rabbit_app as app  # noqa: E402

__all__ = ["app"]
