"""Channel benchmarks across two processes: throughput, latency, initial sync.

Node A (a plain :class:`~p2pchat.runtime.node.Node`, no store, not listening)
runs in the runner's process and dials node B (an
:class:`~p2pchat.bench.observed.ObservedNode` in the server process, see
:mod:`p2pchat.bench.server`) once; the link stays open for the whole phase.
The floor (:mod:`p2pchat.bench.pipeline`) uses its own raw aioquic connection
per run to the floor sink in the same server process. Every message text is a
:func:`~p2pchat.bench.pipeline.bench_text` carrying its sequence number and the
sender's ``time.monotonic_ns()`` taken just before the message was authored;
the receiving side subtracts it from its own clock when it has applied the
message (one system-wide clock: CLOCK_MONOTONIC).

Throughput (per run, a fresh channel)
    node: A creates a channel, B joins through A's invite and the runner waits
    until B holds the genesis envelope; a recorder is armed on B; then A calls
    ``await Node.send`` N times back to back, yielding to the event loop once
    after each. The figure is N / (last message applied at B - first send).
    floor: the same N messages through :class:`~p2pchat.bench.pipeline.FloorClient`.
    Runs alternate floor/node and node/floor; the budget compares medians.
Latency
    the same, paced open loop at a fixed offered rate; the first messages are a
    warm-up that is not recorded; one-way latency = applied at the receiver -
    sent.
Initial sync
    a new node C (in the runner's process, fresh identity, no store) gets B's
    invite to the first throughput channel (exactly N messages) and joins; the
    figure is from the ``join`` call to the last of the N messages applied at C:
    dial, link handshake, subscribe, summary, transfer, verify and apply. Three
    such joins, each by a new node; the budget takes the median one.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Protocol

from p2pchat.bench.observed import ObservedNode
from p2pchat.bench.pipeline import FastAuthor, FloorClient, bench_text, drive, wall_ms
from p2pchat.bench.server import BenchServers, ServerInfo, bench_identity, quic_idle_timeout
from p2pchat.channel.invite import parse_invite
from p2pchat.channel.state import ChannelState
from p2pchat.core import NodeConfig
from p2pchat.core.events import Effect, PeerConnected
from p2pchat.errors import LocalError
from p2pchat.runtime.node import Node


@dataclass(frozen=True)
class ChannelPlan:
    throughput_messages: int
    throughput_rounds: int
    latency_rate: float
    latency_messages: int
    latency_warmup: int
    sync_rounds: int = 3


# --- talking to the server side ---------------------------------------------------------


class ServerControl(Protocol):
    async def call(self, request: dict[str, Any], limit: float = 30.0) -> dict[str, Any]: ...


class ChildControl:
    """Commands to the server process: one JSON line each way (see BenchServers.command)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._lock = asyncio.Lock()
        self._broken: str | None = None

    async def call(self, request: dict[str, Any], limit: float = 30.0) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        async with self._lock:
            if self._broken is not None:
                raise LocalError(self._broken)
            try:
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                await self._proc.stdin.drain()
                async with asyncio.timeout(limit):
                    line = await self._proc.stdout.readline()
            except (TimeoutError, ConnectionError) as exc:
                self._broken = (f"benchmark server did not answer {request.get('op')!r} "
                                f"({type(exc).__name__})")
                raise LocalError(self._broken) from None
            if not line:
                self._broken = "benchmark server process exited"
                raise LocalError(self._broken)
        return _checked(json.loads(line))


class LocalControl:
    """The same commands, to servers running in this event loop."""

    def __init__(self, servers: BenchServers) -> None:
        self._servers = servers

    async def call(self, request: dict[str, Any], limit: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(limit):
            return _checked(await self._servers.command(request))


def _checked(answer: Any) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise LocalError("benchmark server sent a malformed answer")
    if "error" in answer:
        raise LocalError(f"benchmark server: {answer['error']}")
    return answer


# --- one run --------------------------------------------------------------------------


@dataclass
class Run:
    """One burst: N messages from the first send to the last one applied remotely."""

    messages: int
    start_ns: int
    send_s: float
    count: int
    first_ns: int
    last_ns: int
    latencies_ns: list[int]

    @property
    def seconds(self) -> float:
        return (self.last_ns - self.start_ns) / 1e9

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "seconds": round(self.seconds, 4),
                "rate": round(self.rate, 1), "sender_s": round(self.send_s, 4),
                "sender_rate": round(self.messages / self.send_s, 1)}


def _wait_limit(count: int) -> float:
    """How long a receiver may take to apply ``count`` messages (generous: a limit, not a goal)."""
    return 15.0 + count / 500.0


async def node_run(node: Node, control: ServerControl, count: int, name: str,
                   rate: float | None = None) -> tuple[bytes, Run]:
    """A fresh channel from A, joined by B; ``count`` messages A -> B."""
    created = await node.create_channel(name)
    channel = created["channel"]
    assert isinstance(channel, bytes)
    await control.call({"op": "join", "invite": node.make_invite(channel)})
    await control.call({"op": "record", "channel": channel.hex(), "count": count})

    async def one(i: int) -> None:
        await node.send(channel, bench_text(i, time.monotonic_ns()))

    start_ns = time.monotonic_ns()
    send_s = await drive(count, one, rate)
    limit = _wait_limit(count)
    got = await control.call({"op": "wait", "channel": channel.hex(), "timeout": limit},
                             limit=limit + 10.0)
    return channel, Run(count, start_ns, send_s, int(got["count"]), int(got["first_ns"]),
                        int(got["last_ns"]), [int(x) for x in got["latencies_ns"]])


async def floor_run(info: ServerInfo, count: int, rate: float | None = None) -> Run:
    """``count`` messages through the floor pipeline on a fresh raw connection."""
    identity = bench_identity("bench-floor")
    key = os.urandom(32)
    state, genesis = ChannelState.create(identity, "floor", key, wall_ms(), os.urandom)
    assert state.current_epoch is not None
    author = FastAuthor(identity, channel=state.channel_id, key=key, epoch=state.current_epoch,
                        genesis=genesis)
    client = await FloorClient.dial(info.floor_address,
                                    idle_timeout=quic_idle_timeout(NodeConfig()))
    try:
        await client.setup(key, genesis, count, state.channel_id)

        async def one(i: int) -> None:
            raw, _ = author.post(bench_text(i, time.monotonic_ns()), wall_ms())
            await client.send(raw)

        start_ns = time.monotonic_ns()
        send_s = await drive(count, one, rate)
        got = await client.report(_wait_limit(count))
    finally:
        await client.close()
    return Run(count, start_ns, send_s, int(got["count"]), int(got["first_ns"]),
               int(got["last_ns"]), [int(x) for x in got["latencies_ns"]])


# --- the phase ------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


async def _throughput(info: ServerInfo, control: ServerControl, node: Node,
                      plan: ChannelPlan) -> tuple[dict[str, Any], bytes]:
    floor: list[Run] = []
    nodes: list[Run] = []
    first_channel: bytes | None = None
    for r in range(plan.throughput_rounds):
        order = ("floor", "node") if r % 2 == 0 else ("node", "floor")
        for side in order:
            if side == "floor":
                floor.append(await floor_run(info, plan.throughput_messages))
            else:
                channel, run = await node_run(node, control, plan.throughput_messages,
                                              f"throughput-{r}")
                nodes.append(run)
                first_channel = first_channel or channel
    assert first_channel is not None
    floor_rate = _median([run.rate for run in floor])
    node_rate = _median([run.rate for run in nodes])
    return {
        "messages": plan.throughput_messages,
        "rounds": plan.throughput_rounds,
        "floor_rate": round(floor_rate, 1),
        "node_rate": round(node_rate, 1),
        "ratio": round(node_rate / floor_rate, 3),
        "floor_runs": [run.to_json() for run in floor],
        "node_runs": [run.to_json() for run in nodes],
        # how fast A itself got through its sends: close to the end-to-end rate
        # means the sender is the bottleneck
        "node_sender_rate": round(_median([run.messages / run.send_s for run in nodes]), 1),
        "floor_sender_rate": round(_median([run.messages / run.send_s for run in floor]), 1),
    }, first_channel


def _latencies_ms(run: Run, warmup: int) -> list[float]:
    if run.count != run.messages or len(run.latencies_ns) != run.messages:
        raise LocalError(f"latency run: {len(run.latencies_ns)} of {run.messages} "
                         "messages timed")
    return [ns / 1e6 for ns in run.latencies_ns[warmup:]]


async def _latency(info: ServerInfo, control: ServerControl, node: Node,
                   plan: ChannelPlan) -> dict[str, Any]:
    count, rate = plan.latency_messages, plan.latency_rate
    floor = await floor_run(info, count, rate)
    _, run = await node_run(node, control, count, "latency", rate)
    return {
        "offered_rate": rate,
        "messages": count,
        "warmup": plan.latency_warmup,
        "floor_ms": _latencies_ms(floor, plan.latency_warmup),
        "node_ms": _latencies_ms(run, plan.latency_warmup),
        "floor_sent_rate": round(count / floor.send_s, 1),
        "node_sent_rate": round(count / run.send_s, 1),
    }


async def _initial_sync(control: ServerControl, channel: bytes, expected: int
                        ) -> dict[str, Any]:
    answer = await control.call({"op": "invite", "channel": channel.hex()})
    invite = parse_invite(str(answer["invite"]))
    joiner = ObservedNode(bench_identity("bench-joiner"), NodeConfig(), store=None)
    connected: list[int] = []

    def on_peer(effect: Effect) -> None:
        if isinstance(effect, PeerConnected) and not connected:
            connected.append(time.monotonic_ns())

    joiner.peer_listeners.append(on_peer)
    recorder = joiner.record(channel, expected)
    try:
        start_ns = time.monotonic_ns()
        await joiner.join(invite)
        await recorder.wait(_wait_limit(expected))
    finally:
        await joiner.stop("benchmark finished")
    return {
        "messages": recorder.count,
        "seconds": round((recorder.last_ns - start_ns) / 1e9, 4),
        "link_open_s": round((connected[0] - start_ns) / 1e9, 4) if connected else None,
        "first_message_s": round((recorder.first_ns - start_ns) / 1e9, 4),
    }


async def _initial_syncs(control: ServerControl, channel: bytes, expected: int, rounds: int
                         ) -> dict[str, Any]:
    """``rounds`` joins by fresh nodes; the figures are the median run's, all runs listed."""
    runs = [await _initial_sync(control, channel, expected) for _ in range(rounds)]
    median = sorted(runs, key=lambda r: float(r["seconds"]))[len(runs) // 2]
    return {**median, "rounds": rounds, "runs_s": [r["seconds"] for r in runs]}


async def bench_channels(info: ServerInfo, control: ServerControl, plan: ChannelPlan
                         ) -> dict[str, Any]:
    """Throughput, latency and initial sync; a section that failed holds ``{"error"}``."""
    out: dict[str, Any] = {}
    node = Node(bench_identity("bench-sender"), NodeConfig(), store=None)
    try:
        await node.connect(info.node_address, info.node_did)
        channel: bytes | None = None
        try:
            out["throughput"], channel = await _throughput(info, control, node, plan)
        except LocalError as exc:
            out["throughput"] = {"error": str(exc)}
        try:
            out["latency"] = await _latency(info, control, node, plan)
        except LocalError as exc:
            out["latency"] = {"error": str(exc)}
        if channel is None:
            out["sync"] = {"error": "no channel to sync: the throughput runs failed"}
        else:
            try:
                out["sync"] = await _initial_syncs(control, channel, plan.throughput_messages,
                                                   plan.sync_rounds)
            except LocalError as exc:
                out["sync"] = {"error": str(exc)}
    finally:
        await node.stop("benchmark finished")
    return out
