"""The task of the ``django.tasks`` comparison: the same function on both backends (the settings pick one)."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef]

from .peers.work import ship


@task
def ship_order(order_id: int) -> None:
    ship(order_id)
