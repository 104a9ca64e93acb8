"""The chat UI benchmark runs and its scroll measure means what it says."""

from __future__ import annotations

import pytest

from p2pchat.bench.tui import bench_tui

# runs the benchmark workload: one bench test at a time (group "bench", see CONTRIBUTING.md)
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("bench")]


def test_bench_tui_small() -> None:
    result = bench_tui(messages=1_000)
    assert 3 == len(result["open_ms"])
    assert 500 == result["entries_in_pane"]  # the history window, not 1,000
    assert result["scrolled_lines"] > 0
    assert 0 < result["distinct_lines_drawn"] <= result["visible_lines"]
    assert result["budgets"]["scroll_renders_only_visible"], result
    # how fast the pane opens is a figure of `p2pchat bench` (budget 500 ms), never asserted
    assert result["open_median_ms"] > 0, result
