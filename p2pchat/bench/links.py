"""Link handshake and round trip: the node against raw aioquic, interleaved in one run.

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

The runner (:mod:`p2pchat.bench.runner`) compares the samples with
:func:`p2pchat.bench.budgets.comparison`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from p2pchat.bench.rawquic import RawClient, make_frame, timed_dial
from p2pchat.bench.server import ServerInfo, bench_identity, quic_idle_timeout
from p2pchat.core import NodeConfig
from p2pchat.errors import LocalError
from p2pchat.runtime.node import Node

#: Raw echo frame size on the wire, length prefix included.
FRAME_SIZE = 200


@dataclass(frozen=True)
class LinkPlan:
    """Iterations of the link phase (from the run's :class:`~p2pchat.bench.runner.Plan`)."""

    handshakes: int
    handshake_warmup: int
    round_trips: int
    rtt_warmup: int
    #: Round trips per block when interleaving raw and node.
    rtt_block: int


@dataclass
class LinkSamples:
    """Seconds per iteration: raw aioquic, the node, and the RTT the node's core measured."""

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


async def bench_handshakes(info: ServerInfo, plan: LinkPlan) -> LinkSamples:
    config = NodeConfig()
    idle = quic_idle_timeout(config)
    closing: set[asyncio.Task[None]] = set()
    samples = LinkSamples([], [], [])

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


async def bench_round_trips(info: ServerInfo, plan: LinkPlan) -> LinkSamples:
    config = NodeConfig()
    frame = make_frame(FRAME_SIZE)
    samples = LinkSamples([], [], [])
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

