"""``django.tasks`` through our OutboxBackend against django-tasks-db's ``db_worker``, same run.

The measurement is ``bench/tasks_vs_db_worker.py``: the same task, a backlog drained by one worker process
of each, then enqueue → finished latency of paced tasks read from each backend's result rows.
"""

from __future__ import annotations

from ..tasks_vs_db_worker import measure
from . import Context, Figure

TASKS, TASKS_QUICK = 10_000, 1_000
PACED, PACED_QUICK = 300, 50
#: 10 tasks per second: below either worker's capacity even on a busy machine, so that no backlog builds up.
INTERVAL = 0.1


def tasks_vs_db_worker(ctx: Context) -> Figure:
    tasks = TASKS_QUICK if ctx.quick else TASKS
    paced = PACED_QUICK if ctx.quick else PACED
    ours = ctx.attempt("OutboxBackend", lambda: measure("ecotone_tasks", tasks, paced, INTERVAL, ctx.log))
    peer = ctx.attempt("django-tasks-db", lambda: measure("django_tasks_db", tasks, paced, INTERVAL, ctx.log))
    return Figure(
        title="django.tasks: our OutboxBackend drain rate vs django-tasks-db db_worker (Order + enqueue → Shipment)",
        goal=">= 1.0",
        baseline=peer["drain_per_s"],
        measured=ours["drain_per_s"],
        unit="tasks/s",
        baseline_name=f"django-tasks-db `db_worker`: {tasks:,} tasks drained by one worker process",
        measured_name="OutboxBackend on a DatabaseChannel, `consume_channel`: the same",
        details={"ours": ours, "django_tasks_db": peer},
    )
