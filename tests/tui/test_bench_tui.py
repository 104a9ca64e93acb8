"""The chat UI benchmark runs and its scroll measure means what it says."""

from __future__ import annotations

import pytest

from p2pchat.bench.tui import bench_tui

pytestmark = pytest.mark.integration


def test_bench_tui_small() -> None:
    result = bench_tui(messages=1_000)
    assert 3 == len(result["open_ms"])
    assert 500 == result["entries_in_pane"]  # the history window, not 1,000
    assert result["scrolled_lines"] > 0
    assert 0 < result["distinct_lines_drawn"] <= result["visible_lines"]
    assert result["budgets"]["scroll_renders_only_visible"], result
    assert result["open_median_ms"] < 5_000, result  # the 500 ms budget is for bench runs
