"""``p2pchat bench``: the link and channel budgets, each against a floor from the same run.

Theory of operation
-------------------
DESIGN §13 sets the performance budgets as ratios to a floor measured *in the
same run*, because absolute figures on a shared 2-core machine drift from run to
run. So every figure here comes in a pair: raw aioquic doing the minimal
equivalent work (:mod:`p2pchat.bench.rawquic`, :mod:`p2pchat.bench.pipeline`)
and the full node path. The phases, in order:

1. link handshake and round trip (this module, described below);
2. channels across the two processes (:mod:`p2pchat.bench.channels`):
   end-to-end throughput against the channel floor, one-way latency at an
   offered 1,000 msg/s, a new member's initial sync of a 10,000-message channel;
3. channels in this process once the server side is gone
   (:mod:`p2pchat.bench.replicas`): reconciliation of two diverged replicas
   (round trips and bytes) and the apply cost at two channel sizes.

A channel section that fails (a timeout, a link that closed) is reported as
FAILED with its reason; the other sections still run. Before anything else a
0.25 s busy loop measures how much of the wall clock this process gets
(``machine.cpu_share``): other load on the machine shows up there.

Process layout. The server side (a raw aioquic echo server, the channel floor
sink and a listening node) runs in a child process
(``python -m p2pchat.bench.server``), the client side in this process, both on
127.0.0.1 — like two real nodes, each with its own interpreter and event loop,
and identical for the floor and the node. ``run_benchmarks(isolate=False)``
runs both sides in this process's loop instead (faster start, no second
process; the ratios then also carry the server's CPU cost in series).

Handshake. Each iteration dials afresh, so nothing is reused:

- raw: a new ``QuicConnection`` (``client_configuration`` from
  :mod:`p2pchat.transport.quic`, so TLS settings and ALPN ``p2pchat/1`` match)
  on a new connected UDP socket, timed until ``wait_connected()`` returns; the
  server's certificate comes from ``make_certificate`` and
  ``server_configuration`` (a self-signed Ed25519 certificate, like a node's).
- node: a new client ``Node`` with a fresh identity (built untimed, not
  listening); only ``await node.connect(address, expected_did)`` is timed: it
  returns when the DID-authenticated link is open (QUIC + TLS, then
  Hello/Auth/Auth/Ready on the link stream: two more round trips, two
  signatures and two verifications). The node is then stopped (untimed).

Closed client sockets are released as connections end (the node's transport
closes an outbound socket as soon as its link closes; a raw client after its
connection drained), and the runner waits for the process's open file count to
come back to where it started before the next phase and at the end.

Round trip. One raw connection and one node link stay open through the phase:

- raw: a 200-byte frame (4-byte big-endian length prefix + 196 bytes) written
  on stream 0, echoed whole by the server; timed until the echo is complete.
- node: ``await node.ping(peer_did)``: a Ping frame through the runtime, the
  core's link state machine and the msgpack codec, answered by the peer node's
  core with a Pong. The wall time around the await is the figure compared; the
  RTT the core itself measured is reported alongside.

Fairness. Raw and node iterations are interleaved (handshakes alternate one by
one, round trips in blocks, the order flipping every time), so drift in machine
load hits both alike. Each side gets a warm-up that is not recorded. Timing is
``time.perf_counter``. The budgets compare medians (p50); p99 ratios are shown
for information only, since tails on a shared machine are mostly noise.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import aioquic

from p2pchat import __version__
from p2pchat.bench.channels import (
    ChannelPlan,
    ChildControl,
    LocalControl,
    ServerControl,
    bench_channels,
)
from p2pchat.bench.fanout import RECEIVERS, FanoutPlan, bench_fanout
from p2pchat.bench.floors import bench_floors, receive_floor_us
from p2pchat.bench.groupkeys import bench_group_keys
from p2pchat.bench.rawquic import RawClient, make_frame, timed_dial
from p2pchat.bench.replicas import bench_apply_cost, bench_reconcile
from p2pchat.bench.report import summary_lines
from p2pchat.bench.server import (
    MAX_COMMAND_LINE,
    BenchServers,
    ServerInfo,
    bench_identity,
    quic_idle_timeout,
)
from p2pchat.bench.stats import Summary, cdf, summarize
from p2pchat.bench.tui import bench_tui
from p2pchat.core import NodeConfig
from p2pchat.errors import LocalError
from p2pchat.runtime.node import Node

#: Version of the report's JSON layout (3: floors, fan-out, compare, floor ratios).
REPORT_SCHEMA = 3
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
#: Raw echo frame size on the wire, length prefix included.
FRAME_SIZE = 200
#: How long the server process may take to come up / to go away.
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
#: How long to wait for sockets closed in the background to be released.
SETTLE_TIMEOUT = 3.0


@dataclass(frozen=True)
class Plan:
    handshakes: int
    handshake_warmup: int
    round_trips: int
    rtt_warmup: int
    #: Round trips per block when interleaving raw and node.
    rtt_block: int
    #: Messages per throughput run; the first node run's channel is the initial-sync one.
    channel_messages: int
    #: Throughput runs per side (floor and node alternate).
    channel_rounds: int
    latency_messages: int
    latency_warmup: int
    reconcile_shared: int
    #: Apply cost is measured with ``apply_samples`` envelopes at these channel sizes.
    apply_small: int
    apply_big: int
    apply_samples: int
    fanout_messages: int
    fanout_warmup: int
    fanout_saturate: int
    fanout_sweep: tuple[int, ...]


QUICK = Plan(handshakes=20, handshake_warmup=3, round_trips=300, rtt_warmup=50, rtt_block=50,
             channel_messages=SYNC_MESSAGES, channel_rounds=1, latency_messages=1500,
             latency_warmup=200, reconcile_shared=200, apply_small=1000, apply_big=20_000,
             apply_samples=300, fanout_messages=1000, fanout_warmup=200, fanout_saturate=1500,
             fanout_sweep=(1, RECEIVERS))
FULL = Plan(handshakes=100, handshake_warmup=10, round_trips=3000, rtt_warmup=300, rtt_block=100,
            channel_messages=SYNC_MESSAGES, channel_rounds=3, latency_messages=5000,
            latency_warmup=500, reconcile_shared=1000, apply_small=1000, apply_big=100_000,
            apply_samples=1000, fanout_messages=3000, fanout_warmup=300, fanout_saturate=5000,
            fanout_sweep=(1, 2, 5, RECEIVERS))


# --- server side ----------------------------------------------------------------------


@asynccontextmanager
async def _server_side(isolate: bool) -> AsyncIterator[tuple[ServerInfo, ServerControl]]:
    if not isolate:
        servers = await BenchServers.start()
        try:
            yield servers.info, LocalControl(servers)
        finally:
            await servers.close()
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pchat.bench.server",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_COMMAND_LINE)
    try:
        info = await _read_server_info(proc)
        yield info, ChildControl(proc)
    except BaseException:
        await _stop_server_process(proc)
        raise
    code = await _stop_server_process(proc)
    if code != 0:
        raise LocalError(f"benchmark server process exited with code {code}")


async def _read_server_info(proc: asyncio.subprocess.Process) -> ServerInfo:
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(SERVER_START_TIMEOUT):
            line = await proc.stdout.readline()
    except TimeoutError:
        raise LocalError(
            f"benchmark server did not start within {SERVER_START_TIMEOUT:g} s") from None
    if not line:
        code = await proc.wait()
        raise LocalError(f"benchmark server exited before it was ready (exit code {code})")
    try:
        data = json.loads(line)
    except ValueError:
        raise LocalError(f"benchmark server sent {line[:80]!r} instead of its addresses") from None
    return ServerInfo.from_json(data)


async def _stop_server_process(proc: asyncio.subprocess.Process) -> int:
    """Close its stdin (it then shuts down), drain its stdout, reap it; kill if it hangs."""
    if proc.stdin is not None:
        proc.stdin.close()  # communicate() without input leaves stdin open
    try:
        async with asyncio.timeout(SERVER_STOP_TIMEOUT):
            await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()
    return proc.returncode if proc.returncode is not None else -1


# --- housekeeping ------------------------------------------------------------------------


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


async def _settle(baseline: int | None) -> int | None:
    """Wait until sockets closed in the background are released; return the excess left."""
    if baseline is None:
        await asyncio.sleep(0.6)  # no /proc to count descriptors: give closes a moment
        return None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT
    while True:
        now_open = _open_fds()
        extra = (now_open if now_open is not None else baseline) - baseline
        if extra <= 0 or loop.time() >= deadline:
            return max(extra, 0)
        await asyncio.sleep(0.05)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _machine() -> dict[str, Any]:
    usable: int | None = None
    if hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_start": _loadavg(),
    }


# --- measurements ------------------------------------------------------------------------


@dataclass
class _Samples:
    raw: list[float]
    node: list[float]
    node_core: list[float]


async def _node_handshake(info: ServerInfo, config: NodeConfig) -> float:
    node = Node(bench_identity("bench-client"), config, store=None)
    try:
        start = time.perf_counter()
        did = await node.connect(info.node_address, info.node_did)
        elapsed = time.perf_counter() - start
    finally:
        await node.stop("benchmark iteration done")
    if did != info.node_did:  # pragma: no cover - connect() checks expected_did
        raise LocalError(f"benchmark node connected to {did}, expected {info.node_did}")
    return elapsed


async def _bench_handshakes(info: ServerInfo, plan: Plan) -> _Samples:
    config = NodeConfig()
    idle = quic_idle_timeout(config)
    closing: set[asyncio.Task[None]] = set()
    samples = _Samples([], [], [])

    async def raw() -> float:
        client, elapsed = await timed_dial(info.raw_address, idle_timeout=idle)
        task = asyncio.get_running_loop().create_task(client.close())
        closing.add(task)
        task.add_done_callback(closing.discard)
        return elapsed

    async def node() -> float:
        return await _node_handshake(info, config)

    try:
        for i in range(plan.handshake_warmup + plan.handshakes):
            record = i >= plan.handshake_warmup
            first, second = (raw, node) if i % 2 == 0 else (node, raw)
            for side in (first, second):
                elapsed = await side()
                if record:
                    (samples.raw if side is raw else samples.node).append(elapsed)
    finally:
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
    return samples


async def _bench_round_trips(info: ServerInfo, plan: Plan) -> _Samples:
    config = NodeConfig()
    frame = make_frame(FRAME_SIZE)
    samples = _Samples([], [], [])
    raw = await RawClient.dial(info.raw_address, idle_timeout=quic_idle_timeout(config))
    node: Node | None = None
    try:
        node = Node(bench_identity("bench-client"), config, store=None)
        peer = await node.connect(info.node_address, info.node_did)
        client = node

        async def raw_block(count: int, record: bool) -> None:
            for _ in range(count):
                start = time.perf_counter()
                echoed = await raw.protocol.echo(frame)
                elapsed = time.perf_counter() - start
                if echoed != frame:
                    raise LocalError("raw aioquic echo returned a different frame")
                if record:
                    samples.raw.append(elapsed)

        async def node_block(count: int, record: bool) -> None:
            for _ in range(count):
                start = time.perf_counter()
                rtt = await client.ping(peer)
                elapsed = time.perf_counter() - start
                if record:
                    samples.node.append(elapsed)
                    samples.node_core.append(rtt)

        await _interleave(raw_block, node_block, plan.rtt_warmup, plan.rtt_block, record=False)
        await _interleave(raw_block, node_block, plan.round_trips, plan.rtt_block, record=True)
    finally:
        if node is not None:
            await node.stop("benchmark finished")
        await raw.close()
    return samples


async def _interleave(a: Callable[[int, bool], Awaitable[None]],
                      b: Callable[[int, bool], Awaitable[None]],
                      total: int, block: int, *, record: bool) -> None:
    done, flip = 0, False
    while done < total:
        count = min(block, total - done)
        for run in ((b, a) if flip else (a, b)):
            await run(count, record)
        done += count
        flip = not flip


# --- report --------------------------------------------------------------------------------


def _comparison(raw: Summary, node: Summary, budget: float) -> dict[str, Any]:
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


def _throughput_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["ratio"] >= THROUGHPUT_MIN_RATIO and raw["node_rate"] >= THROUGHPUT_MIN_RATE
    return {**raw, "min_ratio": THROUGHPUT_MIN_RATIO, "min_rate": THROUGHPUT_MIN_RATE, "ok": ok}


def _latency_result(raw: dict[str, Any]) -> dict[str, Any]:
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


def _sync_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["messages"] >= SYNC_MESSAGES and raw["seconds"] <= SYNC_BUDGET_S
    return {**raw, "budget": SYNC_BUDGET_S, "ok": ok}


def _in_process(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return run()
    except LocalError as exc:
        return {"error": f"{name}: {exc}"}


def _reconcile_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    ok = raw["round_trips"] <= RECONCILE_ROUND_TRIPS and raw["overhead"] <= RECONCILE_OVERHEAD
    return {**raw, "budget_round_trips": RECONCILE_ROUND_TRIPS,
            "budget_overhead": RECONCILE_OVERHEAD, "ok": ok}


def _apply_result(raw: dict[str, Any]) -> dict[str, Any]:
    failed = _failed(raw)
    if failed:
        return failed
    return {**raw, "budget": APPLY_FLAT_BUDGET, "ok": raw["ratio"] <= APPLY_FLAT_BUDGET}


def _group_result(raw: dict[str, Any]) -> dict[str, Any]:
    if "error" in raw:
        return {**raw, "ok": False}
    ok = raw["bundle_build_ms_p50"] <= BUNDLE_BUILD_BUDGET_MS \
        and raw["bundle_bytes"] <= BUNDLE_SIZE_BUDGET
    overhead_ok = raw["envelope_overhead_bytes"] <= ENVELOPE_OVERHEAD_BUDGET
    return {**raw, "budget_build_ms": BUNDLE_BUILD_BUDGET_MS,
            "budget_bytes": BUNDLE_SIZE_BUDGET, "budget_overhead": ENVELOPE_OVERHEAD_BUDGET,
            "bundle_ok": ok, "overhead_ok": overhead_ok, "ok": ok and overhead_ok}


def _with_floors(results: dict[str, Any], floors: dict[str, Any]) -> None:
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


def _fanout_result(raw: dict[str, Any]) -> dict[str, Any]:
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


def _cpu_duty(seconds: float = 0.25) -> dict[str, float]:
    """How much of the wall clock a busy loop gets here (shared or throttled CPUs get less)."""
    stalls: list[float] = []
    start = last = time.perf_counter()
    while last - start < seconds:
        now = time.perf_counter()
        if now - last > 0.0005:
            stalls.append(now - last)
        last = now
    wall = last - start
    return {"busy_loop_share": round(1.0 - sum(stalls) / wall, 3),
            "stalls_per_s": round(len(stalls) / wall, 1),
            "stall_p50_ms": round(summarize(stalls).p50 * 1000.0, 2) if stalls else 0.0}


async def run_benchmarks(quick: bool = False, *, isolate: bool = True,
                         compare: bool = False) -> dict[str, Any]:
    """Run the suite and return the report (JSON-serialisable; see :func:`format_report`).

    ``quick`` uses fewer iterations and a smaller big channel for the apply cost;
    ``isolate=False`` runs the server side in this event loop instead of a child
    process; ``compare`` also runs the fan-out workload through ngircd (skipped,
    with the reason in the report, when ngircd is not installed).
    """
    plan = QUICK if quick else FULL
    began = time.perf_counter()
    machine = _machine()
    machine["cpu_share"] = _cpu_duty()
    floors = _in_process("floors", bench_floors)
    async with _server_side(isolate) as (info, control):
        baseline = _open_fds()
        gc.collect()
        handshakes = await _bench_handshakes(info, plan)
        await _settle(baseline)
        gc.collect()
        round_trips = await _bench_round_trips(info, plan)
        await _settle(baseline)
        gc.collect()
        channels = await bench_channels(info, control, ChannelPlan(
            throughput_messages=plan.channel_messages, throughput_rounds=plan.channel_rounds,
            latency_rate=LATENCY_RATE, latency_messages=plan.latency_messages,
            latency_warmup=plan.latency_warmup))
        left = await _settle(baseline)
    gc.collect()
    try:
        fanout = await bench_fanout(FanoutPlan(
            latency_messages=plan.fanout_messages, latency_warmup=plan.fanout_warmup,
            saturate_messages=plan.fanout_saturate, sweep=plan.fanout_sweep), compare)
    except LocalError as exc:
        fanout = {"error": f"fan-out: {exc}"}
    # CPU-bound and in one process: run after the server side is gone
    gc.collect()
    reconcile = _in_process("reconcile", lambda: bench_reconcile(plan.reconcile_shared,
                                                                 RECONCILE_DIVERGED))
    gc.collect()
    apply_cost = _in_process("apply cost", lambda: bench_apply_cost(
        plan.apply_small, plan.apply_big, plan.apply_samples))
    gc.collect()
    group_keys = _in_process("group keys", lambda: bench_group_keys(BUNDLE_MEMBERS))
    gc.collect()
    # the chat UI runs its own event loop (Textual, headless): on a thread of its own
    chat_ui = await asyncio.to_thread(_in_process, "chat UI",
                                      lambda: bench_tui(TUI_MESSAGES))
    gc.collect()

    handshake = _comparison(summarize(handshakes.raw).scaled(1000.0),
                            summarize(handshakes.node).scaled(1000.0), HANDSHAKE_BUDGET)
    rtt = _comparison(summarize(round_trips.raw).scaled(1000.0),
                      summarize(round_trips.node).scaled(1000.0), RTT_BUDGET)
    core = summarize(round_trips.node_core).scaled(1000.0)
    rtt["node_core_p50"] = round(core.p50, 4)
    rtt["node_core_p99"] = round(core.p99, 4)
    rtt["node_core"] = core.to_json()
    rtt["raw_frame_bytes"] = FRAME_SIZE
    results = {
        "handshake_ms": handshake,
        "rtt_ms": rtt,
        "channel_throughput": _throughput_result(channels["throughput"]),
        "channel_latency_ms": _latency_result(channels["latency"]),
        "initial_sync_s": _sync_result(channels["sync"]),
        "reconcile": _reconcile_result(reconcile),
        "apply_cost_us": _apply_result(apply_cost),
        "group_keys": _group_result(group_keys),
        "chat_ui": {**chat_ui, "ok": bool(chat_ui.get("ok"))},
        "fanout": _fanout_result(fanout),
        "floors": {**floors, "ok": "error" not in floors},
    }
    _with_floors(results, floors)
    machine["loadavg_end"] = _loadavg()
    return {
        "schema": REPORT_SCHEMA,
        "version": __version__,
        "aioquic": aioquic.__version__,
        "quick": quick,
        "compare": compare,
        "server": "child-process" if isolate else "in-process",
        "machine": machine,
        "parameters": asdict(plan),
        "results": results,
        "ok": all(bool(r["ok"]) for r in results.values()),
        "open_fds_left": left,
        "duration_s": round(time.perf_counter() - began, 2),
    }


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
