"""django-tasks (the backport of ``django.tasks`` for Django 5.2) with django-tasks-db's ORM backend.

``enqueue()`` saves the task's row through the ORM on the default database, so it joins the request's
transaction. The worker is ``manage.py db_worker`` (one task at a time, by design).
"""

from __future__ import annotations

from django_tasks import task

from .work import ship


@task()
def ship_order(order_id: int) -> None:
    ship(order_id)


def enqueue(order_id: int) -> None:
    ship_order.enqueue(order_id)
