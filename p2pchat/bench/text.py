"""The report of ``p2pchat bench`` as text: the aligned tables it prints.

:func:`format_report` lays out the link comparison (raw aioquic against the node),
the channel, group-key and chat UI figures with their budgets and verdicts, the
notes under them, the ratio table of :func:`p2pchat.bench.report.summary_lines`,
and the machine load during the run.
"""

from __future__ import annotations

from typing import Any

from p2pchat.bench.report import summary_lines


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                 enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def _verdict(result: dict[str, Any]) -> str:
    if "error" in result:
        return "FAILED"
    return "PASS" if result["ok"] else "OVER BUDGET"


def _channel_lines(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    tp, lat = results["channel_throughput"], results["channel_latency_ms"]
    sync, rec, app = results["initial_sync_s"], results["reconcile"], results["apply_cost_us"]
    plan = report.get("parameters", {})
    rows = [["channels", "floor", "node", "node/floor", "budget", "verdict"]]
    notes: list[str] = []
    if "error" in tp:
        rows.append(["end-to-end throughput (msg/s)", "-", "-", "-", "", _verdict(tp)])
        notes.append(f"throughput failed: {tp['error']}")
    else:
        rows.append([
            f"end-to-end throughput (msg/s), {tp['messages']:,} x {tp['rounds']}",
            f"{tp['floor_rate']:,.0f}", f"{tp['node_rate']:,.0f}", f"{tp['ratio']:.2f}x",
            f">= {tp['min_ratio']:.2f}x and >= {tp['min_rate']:,.0f}/s", _verdict(tp)])
        notes.append(
            "throughput runs (msg/s): floor "
            + ", ".join(f"{r['rate']:,.0f}" for r in tp["floor_runs"]) + "; node "
            + ", ".join(f"{r['rate']:,.0f}" for r in tp["node_runs"])
            + f"; senders alone: floor {tp['floor_sender_rate']:,.0f}, "
            f"node A {tp['node_sender_rate']:,.0f}")
    if "error" in lat:
        rows.append(["one-way latency p50 (ms)", "-", "-", "-", "", _verdict(lat)])
        notes.append(f"latency failed: {lat['error']}")
    else:
        rows.append([
            f"one-way latency p50 (ms) at {lat['offered_rate']:,.0f} msg/s, "
            f"n={lat['node']['n']:,}",
            f"{lat['floor_p50']:.3f}", f"{lat['node_p50']:.3f}", f"{lat['ratio']:.2f}x",
            f"<= {lat['budget_p50']:.2f} ms", _verdict(lat)])
        notes.append(f"latency p99 (ms): floor {lat['floor_p99']:.3f}, node {lat['node_p99']:.3f}; "
                     f"sent at {lat['floor_sent_rate']:,.0f} / {lat['node_sent_rate']:,.0f} msg/s")
    if "error" in sync:
        rows.append(["initial sync (s)", "-", "-", "-", "", _verdict(sync)])
        notes.append(f"initial sync failed: {sync['error']}")
    else:
        rows.append([f"initial sync of {sync['messages']:,} messages (s), median", "-",
                     f"{sync['seconds']:.3f}", "-", f"<= {sync['budget']:.2f} s",
                     _verdict(sync)])
        runs = ", ".join(f"{x:.3f}" for x in sync.get("runs_s", []))
        notes.append(f"initial sync (s): {runs}; median run: link open after "
                     f"{sync['link_open_s']} s, first message after {sync['first_message_s']} s")
    if "error" in rec:
        rows.append(["reconcile", "-", "-", "-", "", _verdict(rec)])
        notes.append(f"reconcile failed: {rec['error']}")
    else:
        label = f"reconcile {rec['diverged_each']:,} + {rec['diverged_each']:,} diverged"
        rows.append([f"{label}: round trips", "-", f"{rec['round_trips']:g}", "-",
                     f"<= {rec['budget_round_trips']:g}",
                     "PASS" if rec["round_trips"] <= rec["budget_round_trips"]
                     else "OVER BUDGET"])
        rows.append([f"{label}: bytes over envelopes", "-", f"{rec['overhead']:+.2%}", "-",
                     f"<= {rec['budget_overhead']:+.0%}",
                     "PASS" if rec["overhead"] <= rec["budget_overhead"] else "OVER BUDGET"])
        order = ["Subscribe", "Summary", "Envelopes"]
        names = [k for k in order if k in rec["frames"]]
        names += sorted(k for k in rec["frames"] if k not in order)
        frames = ", ".join(f"{rec['frames'][k]} {k}" for k in names)
        notes.append(f"reconcile (in-process, no QUIC): {frames}; {rec['channel_bytes']:,} "
                     f"channel-frame bytes for {rec['envelopes_needed']:,} envelopes of "
                     f"{rec['envelope_bytes']:,} bytes ({rec['envelopes_sent']:,} sent)")
    if "error" in app:
        rows.append(["apply cost", "-", "-", "-", "", _verdict(app)])
        notes.append(f"apply cost failed: {app['error']}")
    else:
        rows.append([f"apply cost p50 (us), {_k(app['small'])} -> {_k(app['big'])} messages",
                     "-", f"{app['small_p50_us']:.0f} -> {app['big_p50_us']:.0f}",
                     f"{app['ratio']:.2f}x", f"<= {app['budget']:.2f}x", _verdict(app)])
        notes.append(f"apply cost: receive_bytes of {app['samples']:,} fresh envelopes per size; "
                     f"small p50 {app['small_first_p50_us']:.0f} before / "
                     f"{app['small_again_p50_us']:.0f} after the big build "
                     f"({app['build_rate']:,.0f} msg/s)")
        if plan.get("apply_big", 0) < 100_000:
            notes.append(f"quick run: apply cost compares {_k(app['small'])} with "
                         f"{_k(app['big'])} messages, not 100k")
    grp = results.get("group_keys")
    if grp is not None and "error" in grp:
        rows.append(["group keys", "-", "-", "-", "", _verdict(grp)])
        notes.append(f"group keys failed: {grp['error']}")
    elif grp is not None:
        rows.append([f"bundle for {grp['members']} members: build p50 (ms)", "-",
                     f"{grp['bundle_build_ms_p50']:.2f}", "-",
                     f"<= {grp['budget_build_ms']:.0f} ms",
                     "PASS" if grp["bundle_ok"] else "OVER BUDGET"])
        rows.append([f"bundle for {grp['members']} members: bytes", "-",
                     f"{grp['bundle_bytes']:,}", "-", f"<= {grp['budget_bytes']:,}",
                     "PASS" if grp["bundle_ok"] else "OVER BUDGET"])
        rows.append([f"envelope over bare change, {grp['post_text_chars']}-char post (B)",
                     "-", f"{grp['envelope_overhead_bytes']}", "-",
                     f"<= {grp['budget_overhead']}",
                     "PASS" if grp["overhead_ok"] else "OVER BUDGET"])
        notes.append(f"group keys: opening a {grp['members']}-member bundle p50 "
                     f"{grp['bundle_open_ms_p50']:.2f} ms")
        if grp.get("conversation_overhead_p50_bytes") is not None:
            notes.append("group keys: a post answering another member's (one more dep) "
                         f"is {grp['conversation_overhead_p50_bytes']:.0f} B over its change")
    ui = results.get("chat_ui")
    if ui is not None and "error" in ui:
        rows.append(["chat UI", "-", "-", "-", "", _verdict(ui)])
        notes.append(f"chat UI failed: {ui['error']}")
    elif ui is not None:
        rows.append([f"chat UI: open a channel of {ui['messages']:,} (ms, median of 3)", "-",
                     f"{ui['open_median_ms']:.0f}", "-", "<= 500 ms",
                     "PASS" if ui["budgets"]["open_median_ms<=500"] else "OVER BUDGET"])
        rows.append(["chat UI: lines drawn on a page scroll / visible", "-",
                     f"{ui['distinct_lines_drawn']} / {ui['visible_lines']}", "-",
                     "only visible",
                     "PASS" if ui["budgets"]["scroll_renders_only_visible"] else "OVER BUDGET"])
    return [*_table(rows), "", *notes]


def _load_line(machine: dict[str, Any]) -> str:
    start, end = machine.get("loadavg_start"), machine.get("loadavg_end")
    line = "machine load: "
    if start and end:
        line += f"1-min load average {start[0]:g} at the start, {end[0]:g} at the end; "
    share = machine.get("cpu_share") or {}
    busy = share.get("busy_loop_share")
    if busy is not None:
        line += f"a busy loop got {busy:.0%} of the wall clock"
        if busy < 0.95:
            line += (f" ({share['stalls_per_s']:g} stalls/s of ~{share['stall_p50_ms']:g} ms: "
                     "other work shares these CPUs, absolute figures suffer most)")
    return line


def _k(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def format_report(report: dict[str, Any]) -> str:
    """The report as an aligned, human-readable table."""
    machine = report.get("machine", {})
    results = report["results"]
    where = ("server side in a child process" if report.get("server") == "child-process"
             else "server side in this process")
    header = [
        f"p2pchat bench ({'quick' if report.get('quick') else 'full'} run): "
        f"p2pchat {report.get('version')}, aioquic {report.get('aioquic')}, "
        f"{machine.get('implementation', 'Python')} {machine.get('python')}, "
        f"{machine.get('cpus')} CPUs",
        f"{where}, loopback 127.0.0.1; raw aioquic and node interleaved in one run",
    ]

    rows = [["", "raw p50", "raw p99", "node p50", "node p99", "node/raw p50", "budget",
             "verdict"]]
    labels = {"handshake_ms": "handshake (ms)", "rtt_ms": "round trip (ms)"}
    for key, label in labels.items():
        r = results[key]
        rows.append([
            f"{label}, n={r['node']['n']}",
            f"{r['raw_p50']:.3f}", f"{r['raw_p99']:.3f}",
            f"{r['node_p50']:.3f}", f"{r['node_p99']:.3f}",
            f"{r['ratio']:.2f}x", f"<= {r['budget']:.2f}x",
            "PASS" if r["ok"] else "OVER BUDGET",
        ])
    lines = [*header, "", *_table(rows), ""]

    hs, rtt = results["handshake_ms"], results["rtt_ms"]
    lines.append(f"p99 ratios (information only): handshake {hs['p99_ratio']:.2f}x, "
                 f"round trip {rtt['p99_ratio']:.2f}x")
    lines.append(f"node RTT as measured by its core: p50 {rtt['node_core_p50']:.3f} ms, "
                 f"p99 {rtt['node_core_p99']:.3f} ms")
    lines.append("handshake: raw = QUIC+TLS until wait_connected(); "
                 "node = connect() until the link's DID proof is done")
    lines.append(f"round trip: raw = {rtt['raw_frame_bytes']}-byte frame echoed on a stream; "
                 "node = ping() through core and codec")
    lines += ["", *_channel_lines(report)]
    lines += ["", *summary_lines(report)]
    lines.append(_load_line(machine))
    left = report.get("open_fds_left")
    if left:
        lines.append(f"warning: {left} file descriptors were still open after the run")
    lines.append(f"took {report.get('duration_s')} s; "
                 + ("all budgets met" if report.get("ok") else "OVER BUDGET"))
    return "\n".join(lines)
