"""What signing costs per broker message: publish-side encoding plus consume-side decoding, signed and not.

    python -m bench.signing [--messages 20000] [--rounds 5] [--payload-bytes 200]

Both sides run in one process, in alternating rounds, on the same rows: ``task_message`` (what the
publisher encodes) and ``read_task`` (what the consumer decodes) without ``ECOTONE["SIGNING"]``, then with
it. The difference is the signature's cost (HMAC-SHA256 over the fields, both ways). Median of the rounds;
nothing touches a database or a broker.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

import django
from django.conf import settings

SIGNING = {"KEYS": {"k2": "a current secret of 32 bytes....", "k1": "an older secret"}, "CURRENT": "k2"}
BASE: dict[str, Any] = {
    "TENANCY": {"CONNECTIONS": {"big_corp": "default"}},
    "CHANNELS": {"db": {"BACKEND": "ecotone_django.channels.DatabaseChannel"}},
}


def setup() -> None:
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "ecotone_django"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DATABASE_ROUTERS=["ecotone_django.routers.TenantRouter"],
        ECOTONE=BASE,
        USE_TZ=True,
    )
    django.setup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--payload-bytes", type=int, default=200)
    args = parser.parse_args()
    setup()

    from django.test import override_settings

    from ecotone_django.channels.celery.protocol import read_task, task_message
    from ecotone_django.messages import Envelope
    from ecotone_django.models import OutboxMessage
    from ecotone_django.signing import Signed, parse_signing

    rows = []
    for i in range(args.messages):
        envelope = Envelope("orders.PlaceOrder", {"n": i, "text": "x" * args.payload_bytes}, {"tenant": "big_corp"})
        rows.append(
            OutboxMessage(
                message_id=envelope.id,
                channel="orders",
                handler="orders.messaging.place_order",
                message_type=envelope.type,
                tenant="big_corp",
                body=envelope.encode(),
                attempts=0,
            )
        )

    def round_trip() -> float:
        started = time.perf_counter()
        for row in rows:
            headers, body = task_message(row)
            delivery = read_task(
                SimpleNamespace(headers=headers, content_type="application/json", body=body.encode()),  # type: ignore[arg-type]
                "orders",
            )
            assert delivery.error is None
        return (time.perf_counter() - started) / len(rows) * 1e6

    plain: list[float] = []
    signed: list[float] = []
    for _ in range(args.rounds):
        plain.append(round_trip())
        with override_settings(ECOTONE={**BASE, "SIGNING": SIGNING}):
            signed.append(round_trip())
    keyring = parse_signing(SIGNING)
    fields = [Signed(r.body, r.message_id, r.message_type, r.tenant, r.handler, r.channel, r.attempts) for r in rows]

    def sign_and_verify() -> float:
        started = time.perf_counter()
        for signed_fields in fields:
            keyring.verify(keyring.sign(signed_fields), signed_fields)
        return (time.perf_counter() - started) / len(fields) * 1e6

    alone = statistics.median(sign_and_verify() for _ in range(args.rounds))
    p, s = statistics.median(plain), statistics.median(signed)
    print(f"messages per round: {args.messages}, payload: {args.payload_bytes} bytes, rounds: {args.rounds}")
    print(f"encode + decode, unsigned: {p:7.2f} µs/msg   ({1e6 / p:9.0f} msg/s)")
    print(f"encode + decode, signed:   {s:7.2f} µs/msg   ({1e6 / s:9.0f} msg/s)")
    print(f"signing costs:             {s - p:7.2f} µs/msg   (+{(s - p) / p * 100:.0f} %)")
    print(f"sign + verify alone:       {alone:7.2f} µs/msg")


if __name__ == "__main__":
    main()
