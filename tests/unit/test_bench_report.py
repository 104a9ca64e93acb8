"""The benchmark report writers: the ratio table, Markdown, JSON, --out and --plot.

A small synthetic report stands in for a real run (which takes minutes), so
these tests exercise the writers only; performance is measured by the bench.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from p2pchat.bench import report as rep
from p2pchat.bench.stats import cdf
from p2pchat.cli.main import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_report() -> dict[str, Any]:
    """The shape of run_benchmarks' report, with a few made-up figures."""
    latencies = cdf([0.2 + i / 100 for i in range(200)])
    return {
        "schema": 3, "version": "0.0.0", "aioquic": "1.7.2", "quick": True, "ok": False,
        "duration_s": 1.5,
        "machine": {"implementation": "CPython", "python": "3.11.7", "cpus": 2},
        "results": {
            "handshake_ms": {"raw_p50": 8.0, "node_p50": 14.0, "ratio": 1.75, "budget": 2.0,
                             "ok": True},
            "rtt_ms": {"raw_p50": 0.3, "node_p50": 0.6, "ratio": 2.0, "budget": 1.5,
                       "ok": False},
            "channel_latency_ms": {"offered_rate": 1000.0, "floor_p50": 0.5, "node_p50": 1.0,
                                   "ratio": 2.0, "budget_p50": 2.0, "ok": True,
                                   "node_cdf_ms": latencies, "floor_cdf_ms": latencies},
            "reconcile": {"error": "reconcile: a | pipe in the reason", "ok": False},
            "apply_cost_us": {"small": 1000, "big": 20_000, "small_p50_us": 120.0,
                              "big_p50_us": 130.0, "ratio": 1.08, "budget": 2.0, "ok": True,
                              "floor_us": 110.0, "floor_ratio_small": 1.09},
            "fanout": {
                "plan": {"receivers": 10, "rate": 1000.0},
                "node": {"p50_ms": 3.0, "p99_ms": 9.0, "rate": 500.0, "cdf_ms": latencies,
                         "light": {"p50_ms": 1.2, "offered_rate": 100.0}},
                "floor": {"p50_ms": 2.0, "p99_ms": 6.0, "rate": 700.0, "cdf_ms": latencies,
                          "light": {"p50_ms": 0.9, "offered_rate": 100.0}},
                "ircd": {"server": "ngircd 26.1", "p50_ms": 0.2, "p99_ms": 1.0,
                         "rate": 30_000.0, "cdf_ms": latencies,
                         "light": {"p50_ms": 0.1, "offered_rate": 100.0}},
                "sweep": [{"receivers": 1, "rate": 2000.0}, {"receivers": 10, "rate": 500.0}],
                "min_rate": 2000.0, "budget_vs_ircd": 1.5, "rate_ok": False,
                "p50_ratio": 1.5, "rate_ratio": 0.71, "p50_vs_ircd": 15.0,
                "p99_vs_ircd": 9.0, "rate_vs_ircd": 0.0167, "ok": False,
            },
            "floors": {"ed25519_verify": {"us": 45.0, "per_s": 22_222}, "ok": True},
        },
    }


def test_every_figure_has_a_row_with_its_floor_and_ratio() -> None:
    rows = rep.figure_rows(synthetic_report())
    by_figure = {row.figure: row for row in rows}

    handshake = by_figure["handshake p50 (ms)"]
    assert "8.000 (raw aioquic)" == handshake.floor
    assert "1.75x" == handshake.ratio
    assert "PASS" == handshake.verdict
    assert "OVER BUDGET" == by_figure["round trip p50 (ms)"].verdict
    compare = by_figure["1 -> 10: delivery p50 (ms) at 1,000 msg/s"]
    assert {"fan-out", "compare"} == {r.section for r in rows if r.figure == compare.figure}
    ircd_row = next(r for r in rows if r.section == "compare" and r.figure == compare.figure)
    assert "0.200 (ngircd 26.1)" == ircd_row.floor
    assert "15.00x" == ircd_row.ratio
    assert "OVER BUDGET" == ircd_row.verdict
    light = [r for r in rows if r.figure == "1 -> 10: delivery p50 (ms) at 100 msg/s"]
    assert ["1.33x", "12.00x"] == [r.ratio for r in light]
    assert any(r.verdict.startswith("FAILED: reconcile") for r in rows)


def test_skipped_comparison_is_a_row_not_a_failure() -> None:
    report = synthetic_report()
    report["results"]["fanout"]["ircd"] = {"skipped": "ngircd is not installed"}
    rows = [r for r in rep.figure_rows(report) if r.section == "compare"]
    assert ["SKIPPED: ngircd is not installed"] == [r.verdict for r in rows]


def test_markdown_is_one_table_with_pipes_escaped() -> None:
    text = rep.to_markdown(synthetic_report())
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rep.figure_rows(synthetic_report())) + 2 == len(table)
    columns = {line.replace("\\|", "").count("|") for line in table}
    assert {len(rep.HEADER) + 1} == columns
    assert "a \\| pipe" in text


def test_summary_lines_print_every_ratio() -> None:
    lines = rep.summary_lines(synthetic_report())
    assert lines[0].startswith("every figure against its floor")
    assert len(rep.figure_rows(synthetic_report())) + 2 == len(lines)
    assert any("15.00x" in line for line in lines)


def test_write_outputs_writes_json_and_markdown(tmp_path: Path) -> None:
    report = synthetic_report()
    written = rep.write_outputs(report, tmp_path / "out")
    assert [tmp_path / "out" / rep.JSON_NAME, tmp_path / "out" / rep.MARKDOWN_NAME] == written
    assert report == json.loads(written[0].read_text())
    assert rep.to_markdown(report) == written[1].read_text()


def test_plot_writes_png_charts(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib (the plot extra) is not installed")
    written = rep.write_outputs(synthetic_report(), tmp_path, plot=True)
    charts = [p for p in written if p.suffix == ".png"]
    assert {rep.LATENCY_CHART, rep.RECEIVERS_CHART, rep.CHANNEL_SIZE_CHART} \
        == {p.name for p in charts}
    for chart in charts:
        assert chart.read_bytes().startswith(PNG_MAGIC)


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    with pytest.raises(rep.PlotUnavailable, match=r"p2pchat\[plot\]"):
        rep.write_outputs(synthetic_report(), tmp_path, plot=True)
    assert not (tmp_path / rep.JSON_NAME).exists()


def test_cli_plot_needs_out(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--home", str(tmp_path), "bench", "--plot"])
    assert 0 != result.exit_code
    assert "--out" in result.output


def test_cdf_points_are_percentiles() -> None:
    points = cdf([float(i) for i in range(101)], points=11)
    assert [float(i) for i in range(0, 101, 10)] == points
    assert [] == cdf([])
    with pytest.raises(ValueError):
        cdf([1.0], points=1)
