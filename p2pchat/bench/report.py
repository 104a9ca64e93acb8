"""The benchmark report as a table of ratios, as Markdown and JSON files, and as charts.

:func:`figure_rows` flattens a report (:func:`p2pchat.bench.runner.run_benchmarks`)
into one row per budgeted figure: the floor measured in the same run, the node's
figure, node/floor, the budget and the verdict. The text report ends with that
table (:func:`summary_lines`); ``--out DIR`` writes it as ``bench.md``
(:func:`to_markdown`) next to the whole report as ``bench.json``
(:func:`write_outputs`); ``--plot`` adds PNG charts (:func:`plot_report`,
matplotlib from the ``plot`` extra): the delivery latency CDFs and the
throughput against the number of receivers and against the channel size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pchat.errors import LocalError

JSON_NAME = "bench.json"
MARKDOWN_NAME = "bench.md"
LATENCY_CHART = "latency_cdf.png"
RECEIVERS_CHART = "throughput_receivers.png"
CHANNEL_SIZE_CHART = "throughput_channel_size.png"
#: Chart size in inches and resolution.
CHART_SIZE = (7.0, 4.5)
CHART_DPI = 100


class PlotUnavailable(LocalError):
    """``--plot`` without matplotlib installed (the ``plot`` extra)."""


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    floor: str
    node: str
    ratio: str
    budget: str
    verdict: str


def _verdict(ok: object) -> str:
    return "PASS" if ok else "OVER BUDGET"


def _x(ratio: object) -> str:
    return f"{float(ratio):.2f}x" if isinstance(ratio, int | float) else "-"


def _failed(section: str, figure: str, result: dict[str, Any]) -> Row:
    return Row(section, figure, "-", "-", "-", "", f"FAILED: {result.get('error', '?')}")


def _rows_links(results: dict[str, Any]) -> list[Row]:
    rows = []
    for key, label in (("handshake_ms", "handshake p50 (ms)"), ("rtt_ms", "round trip p50 (ms)")):
        r = results.get(key)
        if r is None:
            continue
        rows.append(Row("links", label, f"{r['raw_p50']:.3f} (raw aioquic)",
                        f"{r['node_p50']:.3f}", _x(r["ratio"]), f"<= {r['budget']:.2f}x",
                        _verdict(r["ok"])))
    return rows


def _rows_channels(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    tp = results.get("channel_throughput")
    if tp is not None:
        rows.append(_failed("channels", "throughput (msg/s)", tp) if "error" in tp else Row(
            "channels", "throughput (msg/s)", f"{tp['floor_rate']:,.0f} (pipeline)",
            f"{tp['node_rate']:,.0f}", _x(tp["ratio"]),
            f">= {tp['min_ratio']:.2f}x and >= {tp['min_rate']:,.0f}/s", _verdict(tp["ok"])))
    lat = results.get("channel_latency_ms")
    if lat is not None:
        rows.append(_failed("channels", "latency p50 (ms)", lat) if "error" in lat else Row(
            "channels", f"latency p50 (ms) at {lat['offered_rate']:,.0f} msg/s",
            f"{lat['floor_p50']:.3f} (pipeline)", f"{lat['node_p50']:.3f}", _x(lat["ratio"]),
            f"<= {lat['budget_p50']:.2f} ms", _verdict(lat["ok"])))
    sync = results.get("initial_sync_s")
    if sync is not None:
        rows.append(_failed("channels", "initial sync (s)", sync) if "error" in sync else Row(
            "channels", f"initial sync of {sync['messages']:,} (s)",
            f"{sync['floor_s']:.3f} (pipeline rate)" if "floor_s" in sync else "-",
            f"{sync['seconds']:.3f}", _x(sync.get("floor_ratio")),
            f"<= {sync['budget']:.2f} s", _verdict(sync["ok"])))
    rec = results.get("reconcile")
    if rec is not None:
        if "error" in rec:
            rows.append(_failed("channels", "reconcile", rec))
        else:
            rows.append(Row("channels", "reconcile: round trips",
                            f"{rec.get('floor_round_trips', 1)} (one exchange)",
                            f"{rec['round_trips']:g}", _x(rec.get("floor_ratio")),
                            f"<= {rec['budget_round_trips']:g}",
                            _verdict(rec["round_trips"] <= rec["budget_round_trips"])))
            rows.append(Row("channels", "reconcile: bytes over the envelopes",
                            "envelope bytes", f"{rec['overhead']:+.2%}",
                            _x(1.0 + rec["overhead"]), f"<= {rec['budget_overhead']:+.0%}",
                            _verdict(rec["overhead"] <= rec["budget_overhead"])))
    app = results.get("apply_cost_us")
    if app is not None:
        if "error" in app:
            rows.append(_failed("channels", "apply cost", app))
        else:
            floor = f"{app['floor_us']:.0f} (primitives)" if "floor_us" in app else "-"
            rows.append(Row("channels", f"apply cost p50 (us), {app['small']:,} messages",
                            floor, f"{app['small_p50_us']:.0f}",
                            _x(app.get("floor_ratio_small")), "-", "info"))
            rows.append(Row("channels", f"apply cost p50 (us), {app['big']:,} messages",
                            f"{app['small_p50_us']:.0f} (at {app['small']:,})",
                            f"{app['big_p50_us']:.0f}", _x(app["ratio"]),
                            f"<= {app['budget']:.2f}x", _verdict(app["ok"])))
    return rows


def _rows_groups(results: dict[str, Any]) -> list[Row]:
    grp = results.get("group_keys")
    if grp is None:
        return []
    if "error" in grp:
        return [_failed("group keys", "group keys", grp)]
    return [
        Row("group keys", f"bundle for {grp['members']} members: build p50 (ms)",
            f"{grp['floor_build_ms']:.2f} (X25519 + AEAD per member)"
            if "floor_build_ms" in grp else "-",
            f"{grp['bundle_build_ms_p50']:.2f}", _x(grp.get("floor_build_ratio")),
            f"<= {grp['budget_build_ms']:.0f} ms", _verdict(grp["bundle_ok"])),
        Row("group keys", f"bundle for {grp['members']} members: bytes", "-",
            f"{grp['bundle_bytes']:,}", "-", f"<= {grp['budget_bytes']:,}",
            _verdict(grp["bundle_ok"])),
        Row("group keys", "envelope over its bare change (B)",
            f"{grp.get('floor_overhead_bytes', '-')} (signature + nonce + tag)",
            f"{grp['envelope_overhead_bytes']}", _x(grp.get("floor_overhead_ratio")),
            f"<= {grp['budget_overhead']}", _verdict(grp["overhead_ok"])),
    ]


def _rows_ui(results: dict[str, Any]) -> list[Row]:
    ui = results.get("chat_ui")
    if ui is None:
        return []
    if "error" in ui:
        return [_failed("chat UI", "chat UI", ui)]
    return [Row("chat UI", f"open a channel of {ui['messages']:,} (ms)", "- (no floor)",
                f"{ui['open_median_ms']:.0f}", "-", "<= 500 ms",
                _verdict(ui["budgets"]["open_median_ms<=500"]))]


def _rows_fanout(results: dict[str, Any]) -> list[Row]:
    fo = results.get("fanout")
    if fo is None:
        return []
    if "error" in fo:
        return [_failed("fan-out", "1 -> 10", fo)]
    node, floor, ircd = fo.get("node", {}), fo.get("floor", {}), fo.get("ircd", {})
    n = fo.get("plan", {}).get("receivers", 10)
    rate = fo.get("plan", {}).get("rate", 1000.0)
    rows = []

    def num(d: dict[str, Any], key: str, spec: str) -> str:
        return format(d[key], spec) if key in d else "-"

    for error_key in ("latency_error", "saturated_error"):
        for system in (node, floor):
            if error_key in system:
                rows.append(Row("fan-out", f"1 -> {n}", "-", "-", "-", "",
                                f"FAILED: {system[error_key]}"))
    rows.append(Row("fan-out", f"1 -> {n}: delivery p50 (ms) at {rate:,.0f} msg/s",
                    f"{num(floor, 'p50_ms', '.3f')} (pipeline)", num(node, "p50_ms", ".3f"),
                    _x(fo.get("p50_ratio")), "-", "info"))
    light_rows = _light_rows(n, node, floor, ircd)
    rows.append(light_rows[0])
    rows.append(Row("fan-out", f"1 -> {n}: saturated (msg/s)",
                    f"{num(floor, 'rate', ',.0f')} (pipeline)", num(node, "rate", ",.0f"),
                    _x(fo.get("rate_ratio")), f">= {fo['min_rate']:,.0f}/s",
                    _verdict(fo.get("rate_ok"))))
    if "skipped" in ircd:
        rows.append(Row("compare", "ngircd", "-", "-", "-", "", f"SKIPPED: {ircd['skipped']}"))
    elif "error" in ircd:
        rows.append(Row("compare", "ngircd", "-", "-", "-", "", f"FAILED: {ircd['error']}"))
    elif ircd:
        for key in ("latency_error", "saturated_error"):
            if key in ircd:
                rows.append(Row("compare", "ngircd", "-", "-", "-", "", f"FAILED: {ircd[key]}"))
        server = ircd.get("server", "ngircd")
        rows.append(Row("compare", f"1 -> {n}: delivery p50 (ms) at {rate:,.0f} msg/s",
                        f"{num(ircd, 'p50_ms', '.3f')} ({server})", num(node, "p50_ms", ".3f"),
                        _x(fo.get("p50_vs_ircd")), f"<= {fo['budget_vs_ircd']:.1f}x",
                        _verdict(fo.get("p50_vs_ircd", float("inf"))
                                 <= fo["budget_vs_ircd"])))
        rows.append(Row("compare", f"1 -> {n}: delivery p99 (ms) at {rate:,.0f} msg/s",
                        f"{num(ircd, 'p99_ms', '.3f')} ({server})", num(node, "p99_ms", ".3f"),
                        _x(fo.get("p99_vs_ircd")), "-", "info"))
        rows += light_rows[1:]
        rows.append(Row("compare", f"1 -> {n}: saturated (msg/s)",
                        f"{num(ircd, 'rate', ',.0f')} ({server})", num(node, "rate", ",.0f"),
                        _x(fo.get("rate_vs_ircd")), "-", "info"))
    return rows


def _light_rows(n: int, node: dict[str, Any], floor: dict[str, Any], ircd: dict[str, Any]
                ) -> list[Row]:
    """p50 at the light offered rate: node vs floor, then node vs ngircd."""
    light = node.get("light", {})
    rate = light.get("offered_rate", 0.0)
    label = f"1 -> {n}: delivery p50 (ms) at {rate:,.0f} msg/s"

    def row(section: str, other: dict[str, Any], name: str) -> Row:
        theirs = other.get("light", {}).get("p50_ms")
        ours = light.get("p50_ms")
        ratio = ours / theirs if ours is not None and theirs else None
        return Row(section, label, f"{theirs:.3f} ({name})" if theirs is not None else "-",
                   f"{ours:.3f}" if ours is not None else "-", _x(ratio), "-", "info")

    return [row("fan-out", floor, "pipeline"),
            row("compare", ircd, str(ircd.get("server", "ngircd")))]


def _rows_floors(results: dict[str, Any]) -> list[Row]:
    floors = results.get("floors")
    if floors is None:
        return []
    if "error" in floors:
        return [_failed("floors", "primitives", floors)]
    labels = {
        "ed25519_sign": "Ed25519 sign, 200 B", "ed25519_verify": "Ed25519 verify, 200 B",
        "xchacha_seal": "XChaCha20-Poly1305 seal, 200 B",
        "xchacha_open": "XChaCha20-Poly1305 open, 200 B", "x25519": "X25519",
        "msgpack_pack": "msgpack pack, 300 B", "msgpack_unpack": "msgpack unpack, 300 B",
        "automerge_apply": "Automerge apply, one post",
    }
    return [Row("floors", f"{label} (us/op)", f"{floors[k]['us']:.2f}",
                f"{floors[k]['per_s']:,}/s", "-", "-", "floor")
            for k, label in labels.items() if k in floors]


SECTIONS: tuple[Callable[[dict[str, Any]], list[Row]], ...] = (
    _rows_links, _rows_channels, _rows_groups, _rows_ui, _rows_fanout, _rows_floors)


def figure_rows(report: dict[str, Any]) -> list[Row]:
    """Every figure of ``report`` with its floor, its ratio to it, budget and verdict."""
    results = report.get("results", {})
    return [row for section in SECTIONS for row in section(results)]


HEADER = ("section", "figure", "floor (same run)", "p2pchat", "p2pchat/floor", "budget",
          "verdict")


def _cells(row: Row) -> list[str]:
    return [row.section, row.figure, row.floor, row.node, row.ratio, row.budget, row.verdict]


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The rows as an aligned text table (the end of the text report)."""
    rows = [list(HEADER), *(_cells(r) for r in figure_rows(report))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["every figure against its floor (same run):"]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown document: a header and one table of ratios."""
    machine = report.get("machine", {})
    lines = [
        f"# p2pchat bench ({'quick' if report.get('quick') else 'full'} run)",
        "",
        f"p2pchat {report.get('version')}, aioquic {report.get('aioquic')}, "
        f"{machine.get('implementation', 'Python')} {machine.get('python')}, "
        f"{machine.get('cpus')} CPUs; took {report.get('duration_s')} s; "
        + ("all budgets met." if report.get("ok") else "**over budget**."),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---", "---"]) + "|",
    ]
    for row in figure_rows(report):
        lines.append("| " + " | ".join(_md(c) for c in _cells(row)) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path, *, plot: bool = False) -> list[Path]:
    """``bench.json`` and ``bench.md`` (and with ``plot`` the charts) in ``out``."""
    if plot:
        require_matplotlib()
    out.mkdir(parents=True, exist_ok=True)
    written = [out / JSON_NAME, out / MARKDOWN_NAME]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    written[1].write_text(to_markdown(report))
    if plot:
        written += plot_report(report, out)
    return written


# --- charts ------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Raise :class:`PlotUnavailable` with the fix if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable("--plot needs matplotlib: pip install 'p2pchat[plot]'") from None


def _latency_series(results: dict[str, Any]) -> list[tuple[str, list[float]]]:
    series = []
    fo = results.get("fanout", {})
    n = fo.get("plan", {}).get("receivers", 10)
    for key, label in (("node", "p2pchat"), ("floor", "pipeline floor"), ("ircd", "ngircd")):
        points = fo.get(key, {}).get("cdf_ms")
        if points:
            series.append((f"1 -> {n}, {label}", points))
    lat = results.get("channel_latency_ms", {})
    for key, label in (("node_cdf_ms", "p2pchat"), ("floor_cdf_ms", "pipeline floor")):
        if lat.get(key):
            series.append((f"1 -> 1, {label}", lat[key]))
    return series


def plot_report(report: dict[str, Any], out: Path) -> list[Path]:
    """PNG charts of what the report holds; returns the files written."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report.get("results", {})
    written: list[Path] = []

    series = _latency_series(results)
    if series:
        fig, ax = plt.subplots(figsize=CHART_SIZE)
        for label, points in series:
            ranks = [i / (len(points) - 1) for i in range(len(points))]
            ax.plot(points, ranks, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("delivery latency (ms, log scale)")
        ax.set_ylabel("share of deliveries")
        ax.set_title("Delivery latency CDF at the offered rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / LATENCY_CHART))

    fo = results.get("fanout", {})
    sweep = [p for p in fo.get("sweep", []) if "rate" in p]
    if sweep:
        fig, ax = plt.subplots(figsize=CHART_SIZE)
        ax.plot([p["receivers"] for p in sweep], [p["rate"] for p in sweep], "o-",
                label="p2pchat")
        n = fo.get("plan", {}).get("receivers", 10)
        for key, label, marker in (("floor", "pipeline floor", "s"), ("ircd", "ngircd", "^")):
            rate = fo.get(key, {}).get("rate")
            if rate:
                ax.plot([n], [rate], marker, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("receivers in the channel")
        ax.set_ylabel("saturated msgs/s (log scale)")
        ax.set_title("Throughput vs number of receivers (one sender)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / RECEIVERS_CHART))

    app = results.get("apply_cost_us", {})
    if "small_p50_us" in app and "big_p50_us" in app:
        fig, ax = plt.subplots(figsize=CHART_SIZE)
        sizes = [app["small"], app["big"]]
        ax.plot(sizes, [1e6 / app["small_p50_us"], 1e6 / app["big_p50_us"]], "o-",
                label="p2pchat apply (1 / p50 apply cost)")
        if "floor_us" in app:
            ax.plot(sizes, [1e6 / app["floor_us"]] * 2, "--", label="primitives floor")
        ax.set_xscale("log")
        ax.set_xlabel("messages already in the channel (log scale)")
        ax.set_ylabel("messages applied per second")
        ax.set_title("Apply throughput vs channel size")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        written.append(_save(fig, out / CHANNEL_SIZE_CHART))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=CHART_DPI)
    plt.close(fig)
    return path
