"""``p2pchat bench``: link handshake and round-trip latency against raw aioquic.

Theory of operation
-------------------
DESIGN §13 sets the performance budgets as ratios to a floor measured *in the
same run*, because absolute figures on a shared 2-core machine drift from run to
run. So every figure here comes in a pair: raw aioquic doing the minimal
equivalent work (:mod:`p2pchat.bench.rawquic`) and the full node path.

Process layout. The server side (a raw aioquic echo server and a listening
:class:`~p2pchat.runtime.node.Node`) runs in a child process
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
from p2pchat.bench.rawquic import RawClient, make_frame, timed_dial
from p2pchat.bench.server import BenchServers, ServerInfo, bench_identity, quic_idle_timeout
from p2pchat.bench.stats import Summary, summarize
from p2pchat.core import NodeConfig
from p2pchat.errors import LocalError
from p2pchat.runtime.node import Node

#: Version of the report's JSON layout.
REPORT_SCHEMA = 1
#: Budgets from the issue: node p50 / raw aioquic p50.
HANDSHAKE_BUDGET = 2.0
RTT_BUDGET = 1.5
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


QUICK = Plan(handshakes=20, handshake_warmup=3, round_trips=300, rtt_warmup=50, rtt_block=50)
FULL = Plan(handshakes=100, handshake_warmup=10, round_trips=3000, rtt_warmup=300, rtt_block=100)


# --- server side ----------------------------------------------------------------------


@asynccontextmanager
async def _server_side(isolate: bool) -> AsyncIterator[ServerInfo]:
    if not isolate:
        servers = await BenchServers.start()
        try:
            yield servers.info
        finally:
            await servers.close()
        return
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pchat.bench.server",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        info = await _read_server_info(proc)
        yield info
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


async def run_benchmarks(quick: bool = False, *, isolate: bool = True) -> dict[str, Any]:
    """Run the suite and return the report (JSON-serialisable; see :func:`format_report`).

    ``quick`` uses fewer iterations; ``isolate=False`` runs the server side in this
    event loop instead of a child process.
    """
    plan = QUICK if quick else FULL
    began = time.perf_counter()
    async with _server_side(isolate) as info:
        baseline = _open_fds()
        gc.collect()
        handshakes = await _bench_handshakes(info, plan)
        await _settle(baseline)
        gc.collect()
        round_trips = await _bench_round_trips(info, plan)
        left = await _settle(baseline)

    handshake = _comparison(summarize(handshakes.raw).scaled(1000.0),
                            summarize(handshakes.node).scaled(1000.0), HANDSHAKE_BUDGET)
    rtt = _comparison(summarize(round_trips.raw).scaled(1000.0),
                      summarize(round_trips.node).scaled(1000.0), RTT_BUDGET)
    core = summarize(round_trips.node_core).scaled(1000.0)
    rtt["node_core_p50"] = round(core.p50, 4)
    rtt["node_core_p99"] = round(core.p99, 4)
    rtt["node_core"] = core.to_json()
    rtt["raw_frame_bytes"] = FRAME_SIZE
    return {
        "schema": REPORT_SCHEMA,
        "version": __version__,
        "aioquic": aioquic.__version__,
        "quick": quick,
        "server": "child-process" if isolate else "in-process",
        "machine": _machine(),
        "parameters": asdict(plan),
        "results": {"handshake_ms": handshake, "rtt_ms": rtt},
        "ok": bool(handshake["ok"] and rtt["ok"]),
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
    left = report.get("open_fds_left")
    if left:
        lines.append(f"warning: {left} file descriptors were still open after the run")
    lines.append(f"took {report.get('duration_s')} s; "
                 + ("all budgets met" if report.get("ok") else "OVER BUDGET"))
    return "\n".join(lines)
