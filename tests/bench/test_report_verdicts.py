"""The report's verdicts come from results.json, never from the hand-written analysis (no services needed)."""

from __future__ import annotations

import re

from bench.report import ANALYSIS, fill_placeholders, verdict

RESULTS = {
    "relay_vs_raw_publish": {"value": 0.42, "goal": ">= 0.7", "met": False},
    "worker_rss_100k_vs_1k": {"value": 1.0, "goal": "<= 1.1", "met": True},
    "noisy_neighbor_p99_ratio": {"value": None, "met": False, "error": "BenchError: …"},
}


def test_placeholders_are_filled_from_the_results():
    text = "{{verdict:relay_vs_raw_publish}} {{value:relay_vs_raw_publish}} {{goal:relay_vs_raw_publish}}"
    assert fill_placeholders(text, RESULTS) == "not met 0.42 >= 0.7"
    assert fill_placeholders("{{verdict:worker_rss_100k_vs_1k}}", RESULTS) == "met"
    assert verdict(RESULTS, "noisy_neighbor_p99_ratio") == "failed to measure"
    assert verdict(RESULTS, "db_channel_scale_out") == "not measured in this run"


def test_the_analysis_states_no_verdict_of_its_own():
    text = ANALYSIS.read_text()
    written = re.findall(r"`[a-z0-9_]+` \((?:met|not met)\b", text)
    assert not written, f"hand-written verdicts in bench/analysis.md: {written}"
    # Every figure heading in it carries a computed verdict instead.
    headings = re.findall(r"\*\*`([a-z0-9_]+)` \(\{\{verdict:([a-z0-9_]+)\}\}", text)
    assert headings and all(a == b for a, b in headings)
