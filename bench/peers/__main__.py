"""``python -m bench.peers --tools ecotone_db,celery [--requests N …] [--json FILE]``: the comparison alone.

Creates and drops each tool's database and queue (namespaced by ``ECOTONE_BENCH_ID``); prints one line
per tool and, with ``--json``, writes every tool's results. ``bench/run.py`` runs the same harness as
part of ``make bench``; this entry point serves a quick look and the smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .config import TOOLS
from .harness import PeerSizes, run_tools


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated, of: {', '.join(TOOLS)}")
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--latency-interval", type=float, default=0.01)
    parser.add_argument("--crash-orders", type=int, default=300)
    parser.add_argument("--stall-seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")  # the harness itself uses no Django
    names = [n for n in args.tools.split(",") if n]
    unknown = set(names) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tool(s): {', '.join(sorted(unknown))}")
    sizes = PeerSizes(
        args.requests, args.latency_messages, args.latency_interval, args.crash_orders, args.stall_seconds
    )
    results = run_tools(names, sizes, lambda line: print(line, flush=True))
    if args.json:
        args.json.write_text(json.dumps({n: r.as_json() for n, r in results.items()}, indent=2) + "\n")
    return 1 if any(r.error for r in results.values() if r.ours) else 0


if __name__ == "__main__":
    raise SystemExit(main())
