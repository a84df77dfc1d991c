"""``python docs/trace_waterfall.py SPANS.jsonl OUT.png``: draw exported spans as one waterfall per trace.

The spans come from the telemetry proof test (``ECOTONE_TEST_KEEP_SPANS=SPANS.jsonl pytest
tests/telemetry/test_workers.py -k shop``): real ``consume_channel`` workers and a Django request, one JSON
object per span with ``name``, ``kind``, ``trace_id``, ``span_id``, ``parent_id``, ``start`` / ``end``
(epoch seconds) and ``attributes``. ``docs/images/order-trace.png`` is drawn from
``docs/images/order-trace-spans.jsonl`` this way.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = {"SERVER": "#4c72b0", "PRODUCER": "#dd8452", "CONSUMER": "#55a868", "INTERNAL": "#8172b3"}


def _label(span: dict[str, Any]) -> str:
    attributes = span["attributes"]
    if span["kind"] == "CONSUMER":
        handler = attributes.get("ecotone.handler", "").split(".")
        return f"process {'.'.join(handler[-2:]) if handler[-2][0].isupper() else handler[-1]}"
    if span["kind"] == "PRODUCER":
        return f"{span['name'].split()[0]} {span['name'].rsplit('.', 1)[-1]}"
    return f"{attributes.get('http.method', '')} {attributes.get('http.url', span['name']).split('//')[-1]}"


def _ordered(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """Depth-first (a parent above its children), children by start time: (depth, span)."""
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    ids = {s["span_id"] for s in spans}
    for span in spans:
        children[span["parent_id"] if span["parent_id"] in ids else None].append(span)
    result: list[tuple[int, dict[str, Any]]] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children[parent], key=lambda s: s["start"]):
            result.append((depth, span))
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return result


def draw(spans: list[dict[str, Any]], out: Path) -> None:
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in spans:
        traces[span["trace_id"]].append(span)
    ordered = sorted(traces.values(), key=lambda t: min(s["start"] for s in t))
    rows = sum(len(t) for t in ordered)
    fig, axes = plt.subplots(
        len(ordered), 1, figsize=(11, 0.34 * rows + 1.6 * len(ordered)), height_ratios=[len(t) for t in ordered]
    )
    for ax, trace in zip(axes if len(ordered) > 1 else [axes], ordered, strict=True):
        start, end = min(s["start"] for s in trace), max(s["end"] for s in trace)
        total = (end - start) * 1000
        tree = _ordered(trace)
        for row, (_, span) in enumerate(tree):
            left, took = (span["start"] - start) * 1000, (span["end"] - span["start"]) * 1000
            width = max(took, total * 0.004)  # an instant span stays visible
            ax.barh(row, width, left=left, color=COLOURS.get(span["kind"], "grey"), height=0.7)
            ax.text(left + width + total * 0.01, row, f"{_label(span)}  ({took:.1f} ms)", va="center", fontsize=8)
        ax.set_yticks([])
        ax.invert_yaxis()
        ax.set_xlim(0, total * 1.45)
        ax.set_xlabel("ms since the request started")
        root = tree[0][1]
        ax.set_title(f"trace {root['trace_id'][:12]}…: {_label(root)}", fontsize=10, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, ["request (Django)", "create / send", "process (worker)", "other"], loc="upper right", ncol=4)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=110)


def main() -> None:
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    spans = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    draw(spans, out)
    print(f"wrote {out} ({len(spans)} spans)")


if __name__ == "__main__":
    main()
