"""BENCHMARKS.md and its plots, from the results of a run.

The report is regenerated on every run: the table and plots from the numbers, then the hand-written
analysis in ``bench/analysis.md`` (what bounds each figure, what profiling showed, what changed). The
analysis never states a verdict itself: ``{{verdict:NAME}}`` and ``{{value:NAME}}`` in it are replaced
by the figure's "met" / "not met" and value from ``results.json``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .figures import Context

ANALYSIS = Path(__file__).with_name("analysis.md")
PLOT_NAME = "noisy_neighbor.png"
PEERS_PLOT_NAME = "peers.png"
PEER_FIGURES = (
    "peers_db_throughput_vs_best",
    "peers_db_p99_vs_best",
    "peers_broker_throughput_vs_best",
    "peers_broker_p99_vs_best",
)
_PLACEHOLDER = re.compile(r"\{\{(verdict|value|goal):([a-z0-9_]+)\}\}")


def verdict(results: dict[str, Any], name: str) -> str:
    """The figure's verdict as the report words it, from results.json alone."""
    entry = results.get(name)
    if entry is None:
        return "not measured in this run"
    if entry.get("error"):
        return "failed to measure"
    return "met" if entry.get("met") else "not met"


def fill_placeholders(text: str, results: dict[str, Any]) -> str:
    """``{{verdict:NAME}}``, ``{{value:NAME}}``, ``{{goal:NAME}}`` → the figure's, from ``results``."""

    def replace(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        if kind == "verdict":
            return verdict(results, name)
        entry = results.get(name) or {}
        if kind == "goal":
            return str(entry.get("goal") or "—")
        return _ratio(entry.get("value"))

    return _PLACEHOLDER.sub(replace, text)


def peer_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tool of the peer comparison once, in the comparison's order."""
    rows: dict[str, dict[str, Any]] = {}
    for name in PEER_FIGURES:
        for row in (results.get(name) or {}).get("tools", []):
            rows.setdefault(row["name"], row)
    return list(rows.values())


def plot_peers(rows: list[dict[str, Any]], path: Path) -> None:
    """Handled per second, p50/p99 and the enqueue's cost, per tool, ours highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("rate") is not None]
    labels = [r["label"].replace(" (", "\n(") for r in rows]
    colors = [("tab:blue" if r["ours"] else "tab:gray") if r["family"] == "database" else
              ("tab:green" if r["ours"] else "khaki" if r.get("yardstick") else "silver") for r in rows]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), dpi=100)
    y = list(range(len(rows)))
    axes[0].barh(y, [r["rate"] for r in rows], color=colors)
    axes[0].set_title("handled per second (one worker process)")
    axes[1].barh([i - 0.2 for i in y], [r["p50_ms"] or 0 for r in rows], height=0.4, color=colors, label="p50")
    axes[1].barh([i + 0.2 for i in y], [r["p99_ms"] or 0 for r in rows], height=0.4, color=colors, alpha=0.5,
                 hatch="//", label="p99")  # fmt: skip
    axes[1].set_xscale("log")
    axes[1].set_title("commit → handler start, ms (log; solid p50, hatched p99)")
    axes[2].barh(y, [max(r["enqueue_us"] or 0, 0) for r in rows], color=colors)
    axes[2].set_title("enqueue's cost in the request, µs")
    for ax in axes:
        ax.set_yticks(y)
        ax.set_yticklabels(labels if ax is axes[0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(
        "ecotone (blue: database channel, green: Celery channel) against the peers (gray), same workload; "
        "khaki: the broker family's yardstick (bare code, not a peer)"
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_noisy_neighbor(curve: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Premium p50/p99 against the free tier's backlog, dynamic channels vs a single shared queue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=110)
    styles = {
        "dynamic": ("tab:blue", "dynamic channels (premium: own DB + RabbitMQ queue)"),
        "single": ("tab:red", "single shared queue (one DatabaseChannel, one DB)"),
    }
    for layout, points in curve.items():
        color, label = styles[layout]
        backlog = [p.get("waiting", p["backlog"]) for p in points]
        ax.plot(backlog, [p["p50_ms"] for p in points], "o--", color=color, label=f"{label} p50")
        ax.plot(backlog, [p["p99_ms"] for p in points], "s-", color=color, label=f"{label} p99")
    ax.set_yscale("log")
    ax.set_xlabel("free-tier messages waiting (backlog)")
    ax.set_ylabel("premium send → handler start (ms, log scale)")
    ax.set_title("Premium tenant latency under a noisy free tier")
    ax.grid(True, which="both", alpha=0.3)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _fmt(value: Any) -> str:
    """A measured number for the table: thousands separators, three significant digits below 100."""
    if value is None:
        return "—"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def _ratio(value: Any) -> str:
    """A figure's value: two decimals, or two significant digits when it is that small."""
    if value is None:
        return "—"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def write_report(results: dict[str, Any], run: dict[str, Any], ctx: Context, path: Path) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python bench/run.py`); do not edit by hand — the analysis below the numbers",
        "comes from `bench/analysis.md`, its verdicts filled in from `results.json`. Every figure compares us with a",
        "**baseline measured in the same run on the same machine** — a raw baseline, subject and baseline",
        "interleaved (baseline, subject, baseline, subject, …), medians taken; or the peers a Django team would",
        "install instead, each through the same workload. Absolute rates move with the machine's load; compare",
        "only numbers from one run.",
        "",
        f"Run: {'`--quick` smoke run (small numbers)' if run['quick'] else 'full run'}, {run['seconds']:.0f} s, "
        f"Python {run['machine']['python']}, {run['machine']['cpus']} CPUs, load average "
        f"{run['machine']['loadavg_at_start'][0]} at start and {run['machine']['loadavg_at_end'][0]} at end "
        "(the load average tells how busy the 2 cores were besides the benchmark).",
        "",
        *(
            [
                "Rounds repeated after a failure (a service restarted or connections closed by another suite): "
                + "; ".join("`" + r.replace("`", "'") + "`" for r in run["repeated"]),
                "",
            ]
            if run.get("repeated")
            else []
        ),
        "The value of a ratio figure is measured ÷ baseline; of an absolute one (a latency, a count) the measured",
        "number itself, with the baseline as context from the same run.",
        "",
        "| figure | value | goal | met | baseline | measured | unit |",
        "|---|---:|---|:-:|---:|---:|---|",
    ]
    for name, entry in results.items():
        met = "yes" if entry.get("met") else ("**error**" if entry.get("error") else "**no**")
        lines.append(
            f"| `{name}` | {_ratio(entry.get('value'))} | {entry.get('goal') or '—'} | {met} | "
            f"{_fmt(entry.get('baseline'))} | {_fmt(entry.get('measured'))} | {entry.get('unit') or '—'} |"
        )
    lines += ["", "## What each figure compares", ""]
    for name, entry in results.items():
        if entry.get("error"):
            lines += [f"- `{name}`: **failed**: `{entry['error'][:300]}`"]
            continue
        lines += [
            f"- `{name}` — {entry['title']}.",
            f"  - measured: {entry['measured_is']}",
            f"  - baseline: {entry['baseline_is']}",
        ]
        extra = _extra_line(name, entry)
        if extra:
            lines.append(f"  - {extra}")
    curve = results.get("noisy_neighbor_p99_ratio", {}).get("curve")
    if curve:
        plot_path = ctx.output / PLOT_NAME
        plot_noisy_neighbor(curve, plot_path)
        rel = os.path.relpath(plot_path, path.parent)
        lines += ["", "## Noisy neighbour", "", f"![premium latency against free-tier backlog]({rel})", ""]
        lines += [
            "| layout | backlog | waiting at the burst | premium p50 (ms) | premium p99 (ms) |",
            "|---|---:|---:|---:|---:|",
        ]
        for layout, points in curve.items():
            for p in points:
                waiting = p.get("waiting", p["backlog"])
                lines.append(
                    f"| {layout} | {p['backlog']:,} | {waiting:,} | {_fmt(p['p50_ms'])} | {_fmt(p['p99_ms'])} |"
                )
    rows = peer_rows(results)
    if rows:
        lines += _peers_section(rows, results, ctx, path)
    if ANALYSIS.exists():
        lines += ["", fill_placeholders(ANALYSIS.read_text().rstrip(), results)]
    path.write_text("\n".join(lines) + "\n")


def _one_line(error: str) -> str:
    """An error for a table cell: its first line and its last, no pipes or backticks."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} … {lines[-1]}"
    return text.replace("|", "/").replace("`", "'")[:300]


def _num(value: Any) -> str:
    return "—" if value is None else _fmt(value)


def _peers_section(rows: list[dict[str, Any]], results: dict[str, Any], ctx: Context, path: Path) -> list[str]:
    plot_path = ctx.output / PEERS_PLOT_NAME
    plot_peers(rows, plot_path)
    rel = os.path.relpath(plot_path, path.parent)
    n = (results.get("peers_db_throughput_vs_best") or {}).get("n")
    lines = [
        "",
        "## Against the peers",
        "",
        f"![ecotone against the peers]({rel})",
        "",
        "Workload: a request creates an `Order` and, in the same transaction, enqueues its processing; the "
        "worker writes a `Shipment`. One worker process per tool, each in its own database and queue, one "
        f"tool after another in this run. Handled per second: draining {n or 'N'} orders; latency: commit → "
        "handler start of paced requests; enqueue: the request's median time with the enqueue minus without "
        "it (so a publish on commit counts), the call alone beside it; crash: the requester SIGKILLed right "
        "after its last commit, then the worker SIGKILLed mid-backlog and started again — lost and doubled "
        "Shipments read from the database (other phases: lost/doubled per phase, expected 0/0).",
        "",
        "| tool | family | handled/s | p50 ms | p99 ms | enqueue µs | call µs | crash lost | crash doubled "
        "| drain / latency lost+doubled |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = f"**{r['label']}**" if r["ours"] else r["label"]
        if r.get("error"):
            error = _one_line(r["error"])
            lines.append(f"| {name} | {r['family']} | — | — | — | — | — | — | — | error: {error} |")
            continue
        phases = r.get("phases", {})
        other = " / ".join(
            f"{phases[k]['lost'] + phases[k]['doubled']}" if k in phases else "—" for k in ("drain", "latency")
        )
        lines.append(
            f"| {name} | {r['family']} | {_num(r['rate'])} | {_num(r['p50_ms'])} | {_num(r['p99_ms'])} | "
            f"{_num(r['enqueue_us'])} | {_num(r['enqueue_call_us'])} | {_num(r['lost'])} | {_num(r['doubled'])} | "
            f"{other} |"
        )
    lines += ["", "Settings of each side (both measured at their best documented settings for this load):", ""]
    lines += [f"- {r['label']}: {r['settings']}" for r in rows]
    return lines


def _extra_line(name: str, entry: dict[str, Any]) -> str:
    if name == "relay_vs_raw_publish" and "raw_one_by_one_msg_s" in entry:
        samples = entry["samples"]
        return (
            f"per round — baseline: {_list(samples['baseline'])}; measured: {_list(samples['measured'])}; "
            f"a raw publisher waiting for each confirm (context): {_fmt(entry['raw_one_by_one_msg_s'])} msg/s"
            + (
                f"; the minimal relay (bare psycopg + py-amqp, context): {_fmt(entry['minimal_relay_msg_s'])} msg/s, "
                f"{_fmt(entry['minimal_relay_vs_baseline'])} of the baseline; ours is "
                f"{_fmt(entry['relay_vs_minimal_relay'])} of it"
                if "minimal_relay_msg_s" in entry
                else ""
            )
        )
    if name == "celery_handling_vs_bare_task" and "celery_msg_s_by_prefetch" in entry:
        by = ", ".join(f"prefetch {p}: {_fmt(v)} msg/s" for p, v in entry["celery_msg_s_by_prefetch"].items())
        return f"Celery worker, same run — {by}; ours per round: {_list(entry['samples']['measured'])}"
    if name == "latency_p50_vs_raw_roundtrip" and "p99_ms" in entry:
        p99 = entry["p99_ms"]
        line = f"p99: baseline {p99['baseline']} ms, measured {p99['measured']} ms"
        if "autocommit_p50_ms" in entry:
            line += (
                f"; the autocommit send, no business row (not in the ratio): p50 "
                f"{_fmt(entry['autocommit_p50_ms'])} ms, p99 {_fmt(entry['autocommit_p99_ms'])} ms"
            )
        if "minimal_transactional_p50_ms" in entry:
            line += (
                f"; the minimal transactional path (bare psycopg + kombu, context): p50 "
                f"{_fmt(entry['minimal_transactional_p50_ms'])} ms, "
                f"{_fmt(entry['minimal_transactional_vs_raw'])} times raw; ours is "
                f"{_fmt(entry['measured_vs_minimal_transactional'])} times that path"
            )
        return line
    if name == "noisy_neighbor_p99_ratio" and "single_queue_ratio" in entry:
        s = entry["single_queue_p99_ms"]
        auto = entry.get("autocommit_sends", {})
        pool = entry.get("pooled_p99_ms")
        pooled = (
            f"pooled over every round's {pool['messages_per_side']:,} premium messages a side (context): p99 "
            f"{_fmt(pool['idle'])} ms idle → {_fmt(pool['loaded'])} ms loaded (ratio {_fmt(pool['ratio'])}); "
            if pool
            else ""
        )
        control = entry.get("control_idle_vs_idle")
        noise = (
            f"control, no backlog on either side (the machine's own noise): worst round "
            f"{_fmt(control['worst'])}, pooled {_fmt(control['pooled_ratio'])}; "
            if control
            else ""
        )
        ratios = ", ".join(_ratio(r) for r in entry.get("round_ratios", []))
        return (
            f"ratio per round: {ratios} (judged on the worst, round {entry.get('worst_round')}); {pooled}{noise}"
            f"autocommit sends (not judged): {_fmt(auto.get('idle_p99_ms'))} → {_fmt(auto.get('loaded_p99_ms'))} ms "
            f"(ratio {_fmt(auto.get('ratio'))}); single shared queue, same test: p99 {_fmt(s['idle'])} ms idle → "
            f"{_fmt(s['loaded'])} ms with {entry['backlog']:,} waiting (ratio {_fmt(entry['single_queue_ratio'])})"
        )
    if name == "db_channel_vs_minimal_worker" and "samples" in entry:
        samples = entry["samples"]
        return (
            f"per round — baseline: {_list(samples['baseline'])}; measured: {_list(samples['measured'])}; "
            f"raw claim-and-delete loop, {entry['raw_rows_per_statement']} rows per statement (context, goal "
            f"retired): {_fmt(entry['raw_skip_locked_msg_s'])} msg/s"
        )
    if name == "db_channel_scale_out" and "msg_s_by_processes" in entry:
        by = ", ".join(f"{c}: {_fmt(v)} msg/s" for c, v in entry["msg_s_by_processes"].items())
        return f"processes → rate: {by}; 4 vs 1: {_ratio(entry['four_vs_one'])}"
    if name == "db_channel_idle_wakeup" and "p99_ms" in entry:
        return (
            f"p99 {_fmt(entry['p99_ms'])} ms over {entry['messages']} sends; raw LISTEN/NOTIFY p50 "
            f"{_fmt(entry['baseline'])} ms, p99 {_fmt(entry['raw_notify_p99_ms'])} ms (context)"
        )
    if name == "peers_broker_p99_vs_minimal" and "p50_ms" in entry:
        p50 = entry["p50_ms"]
        return (
            f"p50: yardstick {_fmt(p50['baseline'])} ms, ours {_fmt(p50['measured'])} ms; the best peer's p99 "
            f"(context, a tool that writes no outbox row and records nothing before its handler): "
            f"{_fmt(entry.get('best_peer_p99_ms'))} ms"
        )
    if name.startswith("peers_") and "best_peer" in entry:
        return f"best peer: `{entry['best_peer']}` (every tool in the table below)"
    if name == "peers_ours_lost_doubled" and "crash" in entry:
        return "crash column per tool in the table below" + (
            f"; not measured: {', '.join(entry['errors'])}" if entry.get("errors") else ""
        )
    if name == "delayed_poll_cost_1m_vs_1k" and "ratios" in entry:
        ms = entry["median_ms"]
        return "; ".join(
            f"{kind} poll {_fmt(ms['big_corp'][kind])} ms → {_fmt(ms['default'][kind])} ms "
            f"(ratio {entry['ratios'][kind]:.3f})"
            for kind in ("relay", "worker")
        )
    if name == "worker_rss_100k_vs_1k" and "rss_kb_at" in entry:
        return "RSS kB after N messages: " + ", ".join(f"{int(n):,}: {kb:,}" for n, kb in entry["rss_kb_at"].items())
    if "samples" in entry:
        samples = entry["samples"]
        return f"per round — baseline: {_list(samples['baseline'])}; measured: {_list(samples['measured'])}"
    return ""


def _list(values: list[float]) -> str:
    return ", ".join(_fmt(float(v)) for v in values)
