"""procrastinate through its Django integration (``procrastinate.contrib.django``).

``defer()`` from synchronous Django code runs on Django's connection, so the job row is written in the
request's transaction. The worker (``manage.py procrastinate worker``) runs one job at a time
(concurrency 1), woken by LISTEN/NOTIFY with polling as the fallback.

A worker killed mid-job leaves its job ``doing``. procrastinate's documented remedy is a periodic task
that retries the jobs of workers whose heartbeat stopped; it is included (every 2 s, heartbeat every
second, a worker stalled after 5 s), so the crash column measures procrastinate with its recovery on.
"""

from __future__ import annotations

from procrastinate.contrib.django import app

from .config import current
from .work import ship

QUEUE = current().queue
STALLED_AFTER = 5.0


@app.task(name="bench.peers.ship", queue=QUEUE)
def ship_order(order_id: int) -> None:
    ship(order_id)


@app.periodic(cron="* * * * * */2")
@app.task(name="bench.peers.retry_stalled", queue=QUEUE, queueing_lock="retry_stalled", pass_context=True)
async def retry_stalled_jobs(context, timestamp: int) -> None:  # type: ignore[no-untyped-def]
    stalled = await context.app.job_manager.get_stalled_jobs(seconds_since_heartbeat=STALLED_AFTER)
    for job in stalled:
        await context.app.job_manager.retry_job(job)


def enqueue(order_id: int) -> None:
    ship_order.defer(order_id=order_id)
