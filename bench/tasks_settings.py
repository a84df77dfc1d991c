"""Settings of the ``django.tasks`` comparison (``bench/tasks_vs_db_worker.py``): one side per process.

``ECOTONE_BENCH_PEER=ecotone_db``: our OutboxBackend, tasks on the ``peer_db`` DatabaseChannel (the
peer comparison's settings for our database channel, plus ``TASKS``). ``ECOTONE_BENCH_PEER=django_tasks_db``:
django-tasks-db's DatabaseBackend, exactly as in the peer comparison. Each side has its own database.
"""

from __future__ import annotations

from bench.peers import settings as _peer
from bench.peers.settings import *  # noqa: F403

if _peer.TOOL.ours:
    ECOTONE = {**_peer.ECOTONE, "DEFAULT_CHANNEL": "peer_db"}
    TASKS = {"default": {"BACKEND": "ecotone_django.task_backends.OutboxBackend", "QUEUES": ["default"]}}
