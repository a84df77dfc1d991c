"""Joins the two 0002 migrations: the dead-letter replay permission and the django.tasks results table."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("ecotone_django", "0002_security_replay_permission"),
        ("ecotone_django", "0002_tasks_results"),
    ]

    operations: list[migrations.operations.base.Operation] = []
