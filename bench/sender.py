"""``python -m bench.sender``: send PingOrders through the command bus at a steady pace (noisy-neighbour figure).

Runs with the settings of the layout under test (``ECOTONE_BENCH_LAYOUT``), so a send is exactly what a
view of that deployment does: inside ``transaction.atomic()`` on the tenant's database, a business row
(an ``Order``) and the message's outbox row, then the publish after commit. ``--autocommit`` sends
outside any transaction instead (no business row; the send's own fast path).
The first message (seq -1) warms the connections up and is not counted. With ``--go-file`` the sender
then says ``ready`` and waits for that file, so that a burst starts at a moment the benchmark picks.
"""

from __future__ import annotations

import argparse
import os
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True, help="seconds between two sends")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--start", type=int, default=0, help="seq of the first message")
    parser.add_argument("--go-file", default=None, help="after warming up, print 'ready' and wait for this file")
    parser.add_argument("--autocommit", action="store_true", help="send outside a transaction, without a business row")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    django.setup()

    from django.conf import settings
    from django.db import transaction

    from ecotone_django import command_bus

    from .handlers import PingOrders
    from .peers.shop.models import Order

    metadata = {"tenant": args.tenant}
    tenancy = settings.ECOTONE["TENANCY"]
    alias = tenancy["CONNECTIONS"].get(args.tenant, tenancy["DEFAULT_CONNECTION"])  # the tenant's database

    def send(seq: int) -> None:
        if args.autocommit:
            command_bus.send(PingOrders(seq=seq, sent_at=time.time()), metadata=metadata)
            return
        with transaction.atomic(using=alias):
            Order.objects.using(alias).create()
            command_bus.send(PingOrders(seq=seq, sent_at=time.time()), metadata=metadata)

    send(-1)
    time.sleep(0.5)
    if args.go_file:
        print("ready", flush=True)
        while not os.path.exists(args.go_file):
            time.sleep(0.005)
    tick = time.monotonic()
    for seq in range(args.start, args.start + args.count):
        send(seq)
        tick += args.interval
        time.sleep(max(0.0, tick - time.monotonic()))
    print(f"sent {args.count}", flush=True)


if __name__ == "__main__":
    main()
