"""``python -m bench.peers.producer``: the requests of the peer comparison, for one tool.

Each request is ``with transaction.atomic(): Order.objects.create(); enqueue(order.id)`` — the tool's
own way to enqueue the order's processing in that transaction. Every ``--baseline-every``-th request
creates its Order without an enqueue: the same transaction without the enqueue, so that the enqueue's
cost in the request is the difference of the two medians (it includes any on-commit publish).

The commit instant of each request is taken by an ``on_commit`` hook registered before the tool's
own, so it runs right after COMMIT and before any publish a tool does on commit. ``--crash`` registers a
hook that SIGKILLs this process in that same place after the last request: killed right after a commit.
At the end (before the crash) it writes one line per request to ``--out``:
``order_id with_task commit_at request_us call_us``.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Callable

import django


def _enqueuer(tool: str) -> Callable[[int], None]:
    if tool == "ecotone_db":
        from .ours import enqueue_database

        return enqueue_database
    if tool == "ecotone_rabbit":
        from .ours import enqueue_rabbit

        return enqueue_rabbit
    if tool == "procrastinate":
        from .procrastinate_tasks import enqueue

        return enqueue
    if tool == "django_tasks_db":
        from .tasks_db import enqueue

        return enqueue
    if tool == "dbos":
        from .dbos_peer import Enqueuer

        return Enqueuer()
    if tool == "celery":
        from .celery_peer import enqueue

        return enqueue
    if tool == "dramatiq":
        from .dramatiq_actors import enqueue

        return enqueue
    if tool == "minimal_broker":
        from .minimal_broker import Enqueuer as MinimalEnqueuer

        return MinimalEnqueuer()
    raise ValueError(tool)


def _wait_for_shipments(order_ids: list[int], timeout: float) -> None:
    from .shop.models import Shipment

    deadline = time.monotonic() + timeout
    while Shipment.objects.filter(order_id__in=order_ids).values("order_id").distinct().count() < len(order_ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"warm-up orders {order_ids} not handled within {timeout:g} s")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True, help="requests that enqueue")
    parser.add_argument("--interval", type=float, default=0.0, help="seconds between requests (0: flat out)")
    parser.add_argument("--baseline-every", type=int, default=0, help="also one request without an enqueue per N")
    parser.add_argument("--warm-up", type=int, default=0, help="first send this many and wait until handled")
    parser.add_argument("--crash", action="store_true", help="SIGKILL this process right after the last commit")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")
    django.setup()

    from django.db import connection, transaction

    from .config import current
    from .shop.models import Order

    enqueue = _enqueuer(current().name)
    committed: list[float] = []

    def note_commit() -> None:
        committed.append(time.time())

    def request(with_task: bool, last: bool = False) -> tuple[int, float, float, float]:
        call = 0.0
        t0 = time.perf_counter()
        with transaction.atomic():
            transaction.on_commit(note_commit)
            if last:
                transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
            order = Order.objects.create(with_task=with_task)
            if with_task:
                c0 = time.perf_counter()
                enqueue(order.id)
                call = time.perf_counter() - c0
        elapsed = time.perf_counter() - t0
        return order.id, committed[-1], elapsed * 1e6, call * 1e6

    connection.ensure_connection()
    if args.warm_up:
        ids = [request(True)[0] for _ in range(args.warm_up)]
        _wait_for_shipments(ids, 120)
    print("producer ready", flush=True)
    lines: list[str] = []
    tick = time.monotonic()
    sent = 0
    while sent < args.count:
        last = args.crash and sent == args.count - 1
        if args.baseline_every and sent % args.baseline_every == 0:
            order_id, commit_at, request_us, _ = request(False)
            lines.append(f"{order_id} 0 {commit_at:.6f} {request_us:.1f} 0")
        if last:
            with open(args.out, "w") as out:
                out.write("\n".join(lines) + "\n")
        order_id, commit_at, request_us, call_us = request(True, last=last)
        lines.append(f"{order_id} 1 {commit_at:.6f} {request_us:.1f} {call_us:.1f}")
        sent += 1
        if args.interval:
            tick += args.interval
            time.sleep(max(0.0, tick - time.monotonic()))
    with open(args.out, "w") as out:
        out.write("\n".join(lines) + "\n")
    print(f"sent {sent}", flush=True)


if __name__ == "__main__":
    main()
