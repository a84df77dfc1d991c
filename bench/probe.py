"""What the benchmark's handlers do: note the time they start (and, on request, the process's RSS).

A handler calls :func:`mark`; with ``BENCH_LOG`` set it appends ``seq sent_at started_at`` to that file
(line-buffered, so the benchmark reads it while the worker runs). ``BENCH_RSS_AT=1000,100000`` adds a
line ``rss <count> <kB>`` when the process has handled that many messages. No Django imports: the bare
Celery task of the baseline calls it too, so both sides pay the same.
"""

from __future__ import annotations

import os
import time
from typing import TextIO

_log: TextIO | None = None
_count = 0
_RSS_AT = frozenset(int(n) for n in os.environ.get("BENCH_RSS_AT", "").split(",") if n.strip())


def rss_kb(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` in kB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def mark(seq: int, sent_at: float) -> None:
    global _log, _count
    started = time.time()
    _count += 1
    if _log is None:
        path = os.environ.get("BENCH_LOG")
        if not path:
            return
        _log = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the life of the worker
    _log.write(f"{seq} {sent_at:.6f} {started:.6f}\n")
    if _count in _RSS_AT:
        _log.write(f"rss {_count} {rss_kb()}\n")
