"""The Celery app behind ``orders_premium`` (``ECOTONE["CELERY_APP"] = "example_project.celery.app"``).

The broker is ``CELERY_BROKER_URL`` (RabbitMQ or Redis). ``manage.py consume_channel orders_premium``
consumes the queue; ``celery -A example_project.celery worker -Q orders_premium --prefetch-multiplier 1``
can run the same messages through Celery's own worker (the ``ecotone_django.handle`` task).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["ecotone_django"])
