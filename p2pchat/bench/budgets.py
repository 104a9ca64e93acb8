"""The budgets of ``p2pchat bench`` and the verdicts on a run's figures (DESIGN §13).

Each ``*_result`` function takes what one section measured (or its ``error``) and
returns it with the budget it is held to and ``ok``; :func:`with_floors` then puts
the floors measured in the same run next to the figures that had none, so every
budget comes with a ratio. The workload sizes the budgets are stated for (the
offered latency rate, the sizes of the synced channel, of the diverged replicas,
of the key bundle and of the channel the chat UI opens) are here too.
"""

from __future__ import annotations

from typing import Any

from p2pchat.bench.floors import receive_floor_us
from p2pchat.bench.stats import Summary, cdf, summarize

#: Budgets from the issue: node p50 / raw aioquic p50.
HANDSHAKE_BUDGET = 2.0
RTT_BUDGET = 1.5
#: Channel budgets (issue 3): end-to-end throughput at least this share of the floor
#: and at least this many messages per second.
THROUGHPUT_MIN_RATIO = 0.5
THROUGHPUT_MIN_RATE = 4000.0
#: One-way latency p50 at the offered rate, in milliseconds.
LATENCY_P50_BUDGET_MS = 2.0
LATENCY_RATE = 1000.0
#: A new member's initial sync of a channel of this many messages, in seconds.
SYNC_MESSAGES = 10_000
SYNC_BUDGET_S = 2.0
#: Two replicas diverged by this many messages each...
RECONCILE_DIVERGED = 1000
#: ...reconcile within this many round trips, with at most this share of extra bytes.
RECONCILE_ROUND_TRIPS = 3.0
RECONCILE_OVERHEAD = 0.10
#: Per-message apply cost at the big size over the small size.
APPLY_FLAT_BUDGET = 2.0
#: Group-key budgets (issue 6): a bundle for 128 members, and what the signed, encrypted
#: envelope adds to the bare Automerge change of a post
BUNDLE_MEMBERS = 128
BUNDLE_BUILD_BUDGET_MS = 20.0
BUNDLE_SIZE_BUDGET = 15_000
ENVELOPE_OVERHEAD_BUDGET = 200
#: Chat UI (issue 7): a channel this big opens within the budget of p2pchat.bench.tui
TUI_MESSAGES = 10_000
#: Fan-out (issue 8): one sender to 10 receivers sustains at least this many msg/s...
FANOUT_MIN_RATE = 2000.0
#: ...and its delivery latency p50 at 1,000 msg/s is within this factor of ngircd's.
FANOUT_VS_IRCD_BUDGET = 1.5
#: The smallest possible envelope overhead over its change: signature + nonce + AEAD tag.
ENVELOPE_FLOOR_BYTES = 64 + 24 + 16


def comparison(raw: Summary, node: Summary, budget: float) -> dict[str, Any]:
    ratio = node.p50 / raw.p50
    return {
        "raw_p50": round(raw.p50, 4),
        "raw_p99": round(raw.p99, 4),
        "node_p50": round(node.p50, 4),
        "node_p99": round(node.p99, 4),
        "ratio": round(ratio, 3),
        "p99_ratio": round(node.p99 / raw.p99, 3),
        "budget": budget,
        "ok": ratio <= budget,
        "raw": raw.to_json(),
        "node": node.to_json(),
    }


def _failed(section: dict[str, Any]) -> dict[str, Any] | None:
    if "error" in section:
        return {"error": section["error"], "ok": False}
    return None


def throughput_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["ratio"] >= THROUGHPUT_MIN_RATIO and raw["node_rate"] >= THROUGHPUT_MIN_RATE
    return {**raw, "min_ratio": THROUGHPUT_MIN_RATIO, "min_rate": THROUGHPUT_MIN_RATE, "ok": ok}


def latency_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    node_ms, floor_ms = raw.pop("node_ms"), raw.pop("floor_ms")
    node, floor = summarize(node_ms), summarize(floor_ms)
    return {
        **raw,
        "node_cdf_ms": cdf(node_ms), "floor_cdf_ms": cdf(floor_ms),
        "node_p50": round(node.p50, 4), "node_p99": round(node.p99, 4),
        "floor_p50": round(floor.p50, 4), "floor_p99": round(floor.p99, 4),
        "ratio": round(node.p50 / floor.p50, 3),
        "budget_p50": LATENCY_P50_BUDGET_MS,
        "ok": node.p50 <= LATENCY_P50_BUDGET_MS,
        "node": node.to_json(), "floor": floor.to_json(),
    }


def sync_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["messages"] >= SYNC_MESSAGES and raw["seconds"] <= SYNC_BUDGET_S
    return {**raw, "budget": SYNC_BUDGET_S, "ok": ok}



def reconcile_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["round_trips"] <= RECONCILE_ROUND_TRIPS and raw["overhead"] <= RECONCILE_OVERHEAD
    return {**raw, "budget_round_trips": RECONCILE_ROUND_TRIPS,
            "budget_overhead": RECONCILE_OVERHEAD, "ok": ok}


def apply_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    return {**raw, "budget": APPLY_FLAT_BUDGET, "ok": raw["ratio"] <= APPLY_FLAT_BUDGET}


def group_result(raw: dict[str, Any]) -> dict[str, Any]:
    if "error" in raw:
        return {**raw, "ok": False}
    ok = raw["bundle_build_ms_p50"] <= BUNDLE_BUILD_BUDGET_MS \
        and raw["bundle_bytes"] <= BUNDLE_SIZE_BUDGET
    overhead_ok = raw["envelope_overhead_bytes"] <= ENVELOPE_OVERHEAD_BUDGET
    return {**raw, "budget_build_ms": BUNDLE_BUILD_BUDGET_MS,
            "budget_bytes": BUNDLE_SIZE_BUDGET, "budget_overhead": ENVELOPE_OVERHEAD_BUDGET,
            "bundle_ok": ok, "overhead_ok": overhead_ok, "ok": ok and overhead_ok}


def with_floors(results: dict[str, Any], floors: dict[str, Any]) -> None:
    """Put the floors next to the figures that had none: a ratio for every budget."""
    tp, sync = results["channel_throughput"], results["initial_sync_s"]
    if "error" not in sync and "error" not in tp:
        # the floor pipeline moving the same messages at its measured rate
        sync["floor_s"] = round(sync["messages"] / tp["floor_rate"], 4)
        sync["floor_ratio"] = round(sync["seconds"] / sync["floor_s"], 3)
    rec = results["reconcile"]
    if "error" not in rec:
        rec["floor_round_trips"] = 1  # one summary exchange is the least any protocol needs
        rec["floor_ratio"] = round(rec["round_trips"] / 1, 3)
    app = results["apply_cost_us"]
    if "error" not in app and "error" not in floors:
        floor = receive_floor_us(floors)
        app["floor_us"] = round(floor, 2)
        app["floor_ratio_small"] = round(app["small_p50_us"] / floor, 3)
        app["floor_ratio_big"] = round(app["big_p50_us"] / floor, 3)
    grp = results["group_keys"]
    if "error" not in grp and "error" not in floors:
        per_member = floors["x25519"]["us"] + floors["xchacha_seal"]["us"]
        grp["floor_build_ms"] = round(grp["members"] * per_member / 1000.0, 3)
        grp["floor_build_ratio"] = round(grp["bundle_build_ms_p50"] / grp["floor_build_ms"], 3)
    if "error" not in grp:
        grp["floor_overhead_bytes"] = ENVELOPE_FLOOR_BYTES
        grp["floor_overhead_ratio"] = round(grp["envelope_overhead_bytes"]
                                            / ENVELOPE_FLOOR_BYTES, 3)


def fanout_result(raw: dict[str, Any]) -> dict[str, Any]:
    """Budgets of the fan-out: the node's rate, and its p50 against ngircd's if measured."""
    if "error" in raw:
        return {**raw, "ok": False}
    node, floor = raw.get("node", {}), raw.get("floor", {})
    out = {**raw, "min_rate": FANOUT_MIN_RATE, "budget_vs_ircd": FANOUT_VS_IRCD_BUDGET}
    rate_ok = bool(node.get("rate", 0.0) >= FANOUT_MIN_RATE)
    if "rate" in node and floor.get("rate"):
        out["rate_ratio"] = round(node["rate"] / floor["rate"], 3)
    if "p50_ms" in node and floor.get("p50_ms"):
        out["p50_ratio"] = round(node["p50_ms"] / floor["p50_ms"], 3)
    ircd = raw.get("ircd", {})
    ok = rate_ok
    if "p50_ms" in ircd and "p50_ms" in node:
        out["p50_vs_ircd"] = round(node["p50_ms"] / ircd["p50_ms"], 3)
        out["p99_vs_ircd"] = round(node["p99_ms"] / ircd["p99_ms"], 3)
        ok = ok and out["p50_vs_ircd"] <= FANOUT_VS_IRCD_BUDGET
    if "rate" in ircd and "rate" in node:
        out["rate_vs_ircd"] = round(node["rate"] / ircd["rate"], 4)
    if "error" in ircd or "latency_error" in ircd or "saturated_error" in ircd:
        ok = False
    out["rate_ok"] = rate_ok
    out["ok"] = ok
    return out

