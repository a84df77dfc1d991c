"""Us against the tools a Django team would install instead: same workload, same machine, same run.

The comparison (``bench/peers/harness.py``) runs once per bench run; its figures read the same results:
per family, our throughput against the best peer's and our p99 against the best peer's, and lost +
doubled effects of our two channels over every phase (crash included). Peers are reported as measured.
On the broker side our p99 is also judged against the yardstick (``bench/peers/minimal_broker.py``): the
least a deduplicating transactional path costs here, in bare code, measured in the same comparison.
"""

from __future__ import annotations

from typing import Any

from ..peers.config import TOOLS
from ..peers.harness import PHASES, PeerSizes, ToolResult, run_tools
from . import Context, Figure

#: ``--peers`` narrows the comparison to these tools (our two channels and the yardstick are always measured).
SELECTED = "peer_tools"
RESULTS = "peer_results"


def results(ctx: Context) -> dict[str, ToolResult]:
    """The comparison's results, measured on first use in this run."""
    if RESULTS not in ctx.extras:
        wanted = ctx.extras.get(SELECTED) or list(TOOLS)
        names = [n for n in TOOLS if n in wanted or TOOLS[n].ours or TOOLS[n].yardstick]
        s = ctx.sizes
        sizes = PeerSizes(
            requests=s.peer_requests,
            latency_messages=s.peer_latency_messages,
            latency_interval=s.peer_latency_interval,
            crash_orders=s.peer_crash_orders,
            stall_seconds=s.peer_stall_seconds,
        )
        ctx.log(f"  peers: {', '.join(names)}; N = {sizes.requests:,} per tool")
        ctx.extras[RESULTS] = run_tools(names, sizes, ctx.log)
    return ctx.extras[RESULTS]


def _table(found: dict[str, ToolResult], family: str | None = None) -> list[dict[str, Any]]:
    return [r.as_json() for r in found.values() if family is None or r.family == family]


def _ours_and_peers(ctx: Context, family: str, metric: str) -> tuple[ToolResult, list[ToolResult]]:
    found = results(ctx)
    ours = [r for r in found.values() if r.family == family and r.ours]
    if not ours or ours[0].error:
        raise RuntimeError(f"our {family} channel was not measured: {ours[0].error if ours else 'absent'}")
    peers = [r for r in _peers(found, family) if getattr(r, metric) is not None]
    if not peers:
        raise RuntimeError(f"no {family}-backed peer was measured: " + "; ".join(
            f"{r.name}: {r.error}" for r in _peers(found, family)
        ))  # fmt: skip
    return ours[0], peers


def _peers(found: dict[str, ToolResult], family: str | None = None) -> list[ToolResult]:
    """The peers measured (a yardstick is none)."""
    return [r for r in found.values() if not r.ours and not r.yardstick and (family is None or r.family == family)]


def _throughput(ctx: Context, family: str) -> Figure:
    ours, peers = _ours_and_peers(ctx, family, "rate")
    best = max(peers, key=lambda r: r.rate or 0.0)
    assert ours.rate is not None and best.rate is not None
    return Figure(
        title=f"{family.capitalize()}-backed: our throughput vs the best peer's (Order + enqueue → Shipment)",
        goal=">= 1.5",
        baseline=best.rate,
        measured=ours.rate,
        unit="msg/s",
        baseline_name=(
            f"{best.label}: handled per second draining {ctx.sizes.peer_requests:,} orders, one worker process"
        ),
        measured_name=f"{ours.label}: the same workload, one worker process",
        details={"best_peer": best.name, "n": ctx.sizes.peer_requests, "tools": _table(results(ctx), family)},
    )


def _p99(ctx: Context, family: str) -> Figure:
    ours, peers = _ours_and_peers(ctx, family, "p99_ms")
    best = min(peers, key=lambda r: r.p99_ms or float("inf"))
    assert ours.p99_ms is not None and best.p99_ms is not None
    interval = ctx.sizes.peer_latency_interval
    return Figure(
        title=f"{family.capitalize()}-backed: our p99 commit → handler start vs the best peer's",
        goal="<= 1",
        baseline=best.p99_ms,
        measured=ours.p99_ms,
        unit="ms",
        baseline_name=f"{best.label}: p99, {ctx.sizes.peer_latency_messages:,} requests {interval * 1000:g} ms apart",
        measured_name=f"{ours.label}: the same",
        details={"best_peer": best.name, "tools": _table(results(ctx), family)},
    )


def peers_db_throughput(ctx: Context) -> Figure:
    return _throughput(ctx, "database")


def peers_db_p99(ctx: Context) -> Figure:
    return _p99(ctx, "database")


def peers_broker_throughput(ctx: Context) -> Figure:
    return _throughput(ctx, "broker")


def peers_broker_p99(ctx: Context) -> Figure:
    return _p99(ctx, "broker")


def peers_broker_p99_vs_minimal(ctx: Context) -> Figure:
    """Our broker p99 against the yardstick's: the least a deduplicating transactional path costs here."""
    ours, _ = _ours_and_peers(ctx, "broker", "p99_ms")
    floor = results(ctx).get("minimal_broker")
    if floor is None or floor.error or floor.p99_ms is None:
        raise RuntimeError(f"the yardstick was not measured: {floor.error if floor else 'absent'}")
    assert ours.p99_ms is not None
    interval = ctx.sizes.peer_latency_interval
    return Figure(
        title="Broker-backed: our p99 commit → handler start vs the minimal deduplicating path's",
        goal="<= 1.3",
        baseline=floor.p99_ms,
        measured=ours.p99_ms,
        unit="ms",
        baseline_name=(
            f"{floor.label}: p99, {ctx.sizes.peer_latency_messages:,} requests {interval * 1000:g} ms apart — "
            "outbox row in the request's transaction, publish with confirm after commit, inbox row before the "
            "handler"
        ),
        measured_name=f"{ours.label}: the same",
        details={
            "p50_ms": {"baseline": floor.p50_ms, "measured": ours.p50_ms},
            "best_peer_p99_ms": min((r.p99_ms for r in _peers(results(ctx), "broker") if r.p99_ms), default=None),
            "yardstick": floor.as_json(),
        },
    )


def peers_ours_lost_doubled(ctx: Context) -> Figure:
    """Lost + doubled effects of our two channels over every phase, the crashes included (absolute)."""
    found = results(ctx)
    ours = [r for r in found.values() if r.ours]
    broken = [r for r in ours if r.error or set(r.phases) != PHASES]
    if broken:
        raise RuntimeError("; ".join(f"{r.name}: {r.error or 'incomplete'}" for r in broken))
    ours_bad = sum(p.lost + p.doubled for r in ours for p in r.phases.values())
    peers = [r for r in _peers(found) if not r.error]
    peers_bad = sum(p.lost + p.doubled for r in peers for p in r.phases.values())
    return Figure(
        title="Lost + doubled effects, our two channels, every phase (worker and requester killed -9 included)",
        goal="<= 0",
        baseline=peers_bad,
        measured=ours_bad,
        unit="effects",
        baseline_name="context: the peers' lost + doubled effects in the same phases, summed",
        measured_name="Shipment rows missing or duplicated per Order, read from the database, ecotone DatabaseChannel "
        "and CeleryChannel",
        absolute=True,
        details={
            "crash": {
                r.name: {"lost": r.lost, "doubled": r.doubled, "phases": {k: v.__dict__ for k, v in r.phases.items()}}
                for r in found.values()
                if not r.error
            },
            "errors": {r.name: r.error for r in found.values() if r.error},
        },
    )
