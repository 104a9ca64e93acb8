"""``p2pchat bench``: the link and channel budgets, each against a floor from the same run.

Theory of operation
-------------------
DESIGN §13 sets the performance budgets as ratios to a floor measured *in the
same run*, because absolute figures on a shared 2-core machine drift from run to
run. So every figure here comes in a pair: raw aioquic doing the minimal
equivalent work (:mod:`p2pchat.bench.rawquic`, :mod:`p2pchat.bench.pipeline`)
and the full node path. The phases, in order:

1. link handshake and round trip (:mod:`p2pchat.bench.links`);
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

Closed client sockets are released as connections end (the node's transport
closes an outbound socket as soon as its link closes; a raw client after its
connection drained), and the runner waits for the process's open file count to
come back to where it started before the next phase and at the end.

This module runs the suite (:func:`run_benchmarks`, with the :data:`QUICK` or
:data:`FULL` plan), starts and stops the server side, and does the housekeeping
between phases (open descriptors, machine load). The budgets and the verdicts on
the figures are :mod:`p2pchat.bench.budgets`; the text report,
:func:`format_report` (importable from here too), is :mod:`p2pchat.bench.text`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import aioquic

from p2pchat import __version__
from p2pchat.bench.budgets import (
    BUNDLE_MEMBERS,
    HANDSHAKE_BUDGET,
    LATENCY_RATE,
    RECONCILE_DIVERGED,
    RTT_BUDGET,
    SYNC_MESSAGES,
    TUI_MESSAGES,
    apply_result,
    comparison,
    fanout_result,
    group_result,
    latency_result,
    reconcile_result,
    sync_result,
    throughput_result,
    with_floors,
)
from p2pchat.bench.channels import (
    ChannelPlan,
    ChildControl,
    LocalControl,
    ServerControl,
    bench_channels,
)
from p2pchat.bench.fanout import RECEIVERS, FanoutPlan, bench_fanout
from p2pchat.bench.floors import bench_floors
from p2pchat.bench.groupkeys import bench_group_keys
from p2pchat.bench.links import FRAME_SIZE, LinkPlan, bench_handshakes, bench_round_trips
from p2pchat.bench.replicas import bench_apply_cost, bench_reconcile
from p2pchat.bench.server import MAX_COMMAND_LINE, BenchServers, ServerInfo
from p2pchat.bench.stats import summarize
from p2pchat.bench.text import format_report
from p2pchat.bench.tui import bench_tui
from p2pchat.errors import LocalError

__all__ = ["FULL", "QUICK", "Plan", "format_report", "run_benchmarks"]

#: Version of the report's JSON layout (3: floors, fan-out, compare, floor ratios).
REPORT_SCHEMA = 3
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


# --- the suite ----------------------------------------------------------------------------


def _in_process(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return run()
    except LocalError as exc:
        return {"error": f"{name}: {exc}"}


async def run_benchmarks(quick: bool = False, *, isolate: bool = True,
                         compare: bool = False) -> dict[str, Any]:
    """Run the suite and return the report (JSON-serialisable; see :func:`format_report`).

    ``quick`` uses fewer iterations and a smaller big channel for the apply cost;
    ``isolate=False`` runs the server side in this event loop instead of a child
    process; ``compare`` also runs the fan-out workload through ngircd (skipped,
    with the reason in the report, when ngircd is not installed).
    """
    plan = QUICK if quick else FULL
    links = LinkPlan(handshakes=plan.handshakes, handshake_warmup=plan.handshake_warmup,
                     round_trips=plan.round_trips, rtt_warmup=plan.rtt_warmup,
                     rtt_block=plan.rtt_block)
    began = time.perf_counter()
    machine = _machine()
    machine["cpu_share"] = _cpu_duty()
    floors = _in_process("floors", bench_floors)
    async with _server_side(isolate) as (info, control):
        baseline = _open_fds()
        gc.collect()
        handshakes = await bench_handshakes(info, links)
        await _settle(baseline)
        gc.collect()
        round_trips = await bench_round_trips(info, links)
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

    handshake = comparison(summarize(handshakes.raw).scaled(1000.0),
                           summarize(handshakes.node).scaled(1000.0), HANDSHAKE_BUDGET)
    rtt = comparison(summarize(round_trips.raw).scaled(1000.0),
                     summarize(round_trips.node).scaled(1000.0), RTT_BUDGET)
    core = summarize(round_trips.node_core).scaled(1000.0)
    rtt["node_core_p50"] = round(core.p50, 4)
    rtt["node_core_p99"] = round(core.p99, 4)
    rtt["node_core"] = core.to_json()
    rtt["raw_frame_bytes"] = FRAME_SIZE
    results = {
        "handshake_ms": handshake,
        "rtt_ms": rtt,
        "channel_throughput": throughput_result(channels["throughput"]),
        "channel_latency_ms": latency_result(channels["latency"]),
        "initial_sync_s": sync_result(channels["sync"]),
        "reconcile": reconcile_result(reconcile),
        "apply_cost_us": apply_result(apply_cost),
        "group_keys": group_result(group_keys),
        "chat_ui": {**chat_ui, "ok": bool(chat_ui.get("ok"))},
        "fanout": fanout_result(fanout),
        "floors": {**floors, "ok": "error" not in floors},
    }
    with_floors(results, floors)
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
