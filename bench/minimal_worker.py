"""``python -m bench.minimal_worker CHANNEL CLAIM``: the least a database-channel worker must do, in bare psycopg.

Per transaction: claim CLAIM due rows (``SELECT … FOR UPDATE SKIP LOCKED``), decode each envelope,
rebuild the message and call the handler (the bench's own, :func:`bench.probe.mark`, as our worker's
handler does), insert the batch's inbox rows with one statement, delete the rows, commit. No Django,
tenancy, savepoints, retries or time limits. It runs as its own process, like the worker it bounds,
and exits when no row is due.
"""

from __future__ import annotations

import json
import sys

import psycopg

from .config import DATABASE_NAMES, postgres_params
from .handlers import PingDb
from .probe import mark

CLAIM = (
    "SELECT id, body, handler FROM ecotone_outbox WHERE channel = %s AND available_at <= now()"
    " ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
)
RECORD = (
    "INSERT INTO ecotone_inbox (key, handler, handled_at) SELECT k, h, now()"
    " FROM unnest(%s::varchar[], %s::varchar[]) AS b(k, h) ON CONFLICT DO NOTHING RETURNING key, handler"
)
DELETE = "DELETE FROM ecotone_outbox WHERE id = ANY(%s)"


def handle(message: PingDb) -> None:
    mark(message.seq, message.sent_at)


def main() -> None:
    channel, limit = sys.argv[1], int(sys.argv[2])
    done = 0
    params = postgres_params(DATABASE_NAMES["default"])
    with psycopg.connect(**params) as conn:  # type: ignore[arg-type]
        while True:
            rows = conn.execute(CLAIM, (channel, limit), prepare=True).fetchall()
            if not rows:
                conn.rollback()
                break
            envelopes = [json.loads(body) for _, body, _ in rows]
            keys = [(envelope["id"], handler) for envelope, (_, _, handler) in zip(envelopes, rows, strict=True)]
            new = set(conn.execute(RECORD, ([k for k, _ in keys], [h for _, h in keys]), prepare=True).fetchall())
            for envelope, key in zip(envelopes, keys, strict=True):
                if key in new:
                    handle(PingDb(**envelope["payload"]))
                    done += 1
            conn.execute(DELETE, ([row[0] for row in rows],), prepare=True)
            conn.commit()
    print(f"handled {done}", flush=True)


if __name__ == "__main__":
    main()
