"""Fan-out: one sender, ten receivers, one channel (issue 8), and the same on ngircd.

The workload
------------
One sender posts to one channel that ``receivers`` (10) others have joined.
Every message text is a :func:`~p2pchat.bench.pipeline.bench_text` carrying its
sequence number and the sender's ``time.monotonic_ns()`` just before it was
authored; each receiver timestamps every message when it has it (one
system-wide clock), so one message gives one delivery latency per receiver.

- **latency**: paced open loop at an offered ``rate`` (1,000 msg/s) with
  :func:`~p2pchat.bench.pipeline.drive`; the first ``warmup`` messages are not
  recorded; p50/p99 over every (message, receiver) delivery.
- **saturated**: ``saturate`` messages back to back (yielding to the event loop
  once after each); msgs/s = messages / (the last delivery at the slowest
  receiver - the first send). Also at fewer receivers (``sweep``) for the
  throughput-vs-receivers chart.

Three systems run exactly that workload, with the same processes:

- **node**: the sender is a :class:`~p2pchat.runtime.node.Node` (no store) in
  the runner's process, listening on 127.0.0.1; it creates a fresh channel per
  run and each receiver (an :class:`~p2pchat.bench.observed.ObservedNode`, no
  store) joins it through the sender's invite, so each receiver holds one link,
  to the sender, and the sender pushes every envelope to ten links. Each
  envelope is signed and encrypted once by the sender and verified, decrypted
  and applied by every receiver (the receivers forward nothing: their only
  link is the one the envelope came from).
- **floor**: the same envelopes, authored once by
  :class:`~p2pchat.bench.pipeline.FastAuthor` and written to ten raw aioquic
  connections, one per receiver, each ending at a
  :class:`~p2pchat.bench.pipeline.FloorSinkProtocol` that verifies, decrypts
  and applies them (the channel floor of :mod:`p2pchat.bench.channels`, ten
  times over).
- **ircd** (``--compare``, when ngircd is installed): ngircd on loopback
  (:mod:`p2pchat.bench.ircd`); the sender and ten receivers are IRC clients
  (asyncio streams, raw protocol lines) in one channel; the same texts go out
  as ``PRIVMSG``. No signatures, no encryption: the classic plain-text server.

Process layout. The receivers of all three live in ``processes`` (2: one per
core of the development machine) child processes (``python -m
p2pchat.bench.fanout``), spread evenly; the sender is in the runner's process;
ngircd is one more process. A receiver host takes one JSON command per line on
stdin and answers each with one line on stdout (:meth:`ReceiverHost.command`),
and ends when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from aioquic.asyncio.server import QuicServer, serve

from p2pchat.bench.channels import ChildControl
from p2pchat.bench.ircd import IrcClient, Ngircd, find_ngircd
from p2pchat.bench.observed import ObservedNode, Recorder
from p2pchat.bench.pipeline import (
    FastAuthor,
    FloorClient,
    FloorSinkProtocol,
    bench_text,
    drive,
    wall_ms,
)
from p2pchat.bench.server import (
    HOST,
    MAX_COMMAND_LINE,
    bench_identity,
    quic_idle_timeout,
    serve_commands,
)
from p2pchat.bench.stats import cdf, summarize
from p2pchat.channel.invite import parse_invite
from p2pchat.channel.state import ChannelState
from p2pchat.core import NodeConfig
from p2pchat.core.events import Address
from p2pchat.errors import LocalError
from p2pchat.runtime.node import Node
from p2pchat.transport.quic import make_certificate, server_configuration

#: The workload of the issue: one sender, this many receivers, one channel.
RECEIVERS = 10
#: Child processes the receivers are spread over (one per core of a 2-core machine).
RECEIVER_PROCESSES = 2
#: Offered rate of the latency run, msg/s.
FANOUT_RATE = 1000.0
#: Offered rate of the light-load latency run, msg/s.
LIGHT_RATE = 100.0
#: Sends the p2pchat sender keeps in flight (an app handing over messages without
#: waiting for each to be stored; the IRC sender never waits either). The node seals
#: the sends that arrive while it is busy into one envelope (DESIGN §10.2).
SEND_WINDOW = 64
#: The IRC channel.
IRC_CHANNEL = "#bench"
#: How long a receiver host may take to start / to go away.
HOST_START_TIMEOUT = 30.0
HOST_STOP_TIMEOUT = 10.0
#: How long joining (a receiver getting the channel's genesis) may take.
JOIN_TIMEOUT = 15.0


@dataclass(frozen=True)
class FanoutPlan:
    latency_messages: int
    latency_warmup: int
    saturate_messages: int
    #: Receiver counts of the throughput-vs-receivers sweep (node only; 10 is the main run).
    sweep: tuple[int, ...]
    receivers: int = RECEIVERS
    processes: int = RECEIVER_PROCESSES
    rate: float = FANOUT_RATE
    #: A second latency run at a rate every system sustains (the offered 1,000 msg/s
    #: can be beyond the saturation point, and then it measures queueing).
    light_rate: float = LIGHT_RATE
    light_messages: int = 300
    light_warmup: int = 50
    #: sends in flight at the p2pchat sender (the floor's sender sends one at a time)
    send_window: int = SEND_WINDOW


def wait_limit(messages: int, receivers: int) -> float:
    """How long the receivers may take to have ``messages`` (a limit, not a goal)."""
    return 20.0 + messages * receivers / 1000.0


# --- receiver host (child process) -----------------------------------------------------


class ReceiverHost:
    """Receivers of all three kinds in one process: p2pchat nodes, IRC clients, floor sinks."""

    def __init__(self, floor: QuicServer, floor_address: Address) -> None:
        self.floor = floor
        self.floor_address = floor_address
        self.nodes: list[ObservedNode] = []
        self.irc: list[IrcClient] = []
        self.armed: list[Recorder] = []

    @classmethod
    async def start(cls) -> ReceiverHost:
        cert = make_certificate(bench_identity("bench-fanout-floor"))
        config = server_configuration(cert, idle_timeout=quic_idle_timeout(NodeConfig()))
        floor = await serve(HOST, 0, configuration=config, create_protocol=FloorSinkProtocol)
        assert floor._transport is not None
        bound = floor._transport.get_extra_info("sockname")
        return cls(floor, (str(bound[0]), int(bound[1])))

    async def close(self) -> None:
        await self._irc_close()
        for node in self.nodes:
            await node.stop("benchmark finished")
        self.floor.close()

    async def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """One command; ``{"error": ...}`` if it failed.

        - ``{"op": "p2p_join", "invite": uri, "count": k}``: the first ``k``
          receiver nodes (made on first use) join; the answer waits until each
          holds the channel's genesis.
        - ``{"op": "irc_join", "address": [host, port], "nicks": [...]}``: one IRC
          client per nick connects and joins :data:`IRC_CHANNEL`.
        - ``{"op": "irc_close"}``: those clients quit.
        - ``{"op": "record", "kind": "p2p" | "irc", "count": n, "receivers": k,
          "channel": hex}``: arm a recorder for ``n`` messages on the first ``k``.
        - ``{"op": "wait", "timeout": s, "latencies": bool}``: until every armed
          recorder has its count: ``{"receivers": [{"count", "first_ns",
          "last_ns", "latencies": [[seq, ns], ...]}]}``.
        """
        try:
            op = request.get("op")
            if op == "p2p_join":
                await self._p2p_join(str(request["invite"]), int(request["count"]))
                return {}
            if op == "irc_join":
                address = request["address"]
                await self._irc_join((str(address[0]), int(address[1])),
                                     [str(n) for n in request["nicks"]])
                return {}
            if op == "irc_close":
                await self._irc_close()
                return {}
            if op == "record":
                return self._record(request)
            if op == "wait":
                return await self._wait(float(request["timeout"]), bool(request["latencies"]))
            raise LocalError(f"unknown fan-out command {op!r}")
        except (LocalError, KeyError, ValueError, TypeError, IndexError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def _p2p_join(self, uri: str, count: int) -> None:
        invite = parse_invite(uri)
        while len(self.nodes) < count:
            name = f"bench-receiver-{os.getpid()}-{len(self.nodes)}"
            self.nodes.append(ObservedNode(bench_identity(name), NodeConfig(), store=None))
        await asyncio.gather(*(node.join(invite) for node in self.nodes[:count]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_TIMEOUT
        for node in self.nodes[:count]:
            hub = node.core.hub
            while (state := hub.channels.get(invite.channel)) is None \
                    or state.genesis_id is None:
                if loop.time() > deadline:
                    raise LocalError("a receiver did not get the channel's genesis within "
                                     f"{JOIN_TIMEOUT:g} s")
                await asyncio.sleep(0.002)

    async def _irc_join(self, address: Address, nicks: list[str]) -> None:
        for nick in nicks:
            self.irc.append(await IrcClient.connect(address, nick))
        await asyncio.gather(*(client.join(IRC_CHANNEL) for client in self.irc))

    async def _irc_close(self) -> None:
        clients, self.irc = self.irc, []
        await asyncio.gather(*(client.close() for client in clients))

    def _record(self, request: dict[str, Any]) -> dict[str, Any]:
        count, receivers = int(request["count"]), int(request["receivers"])
        if request["kind"] == "p2p":
            channel = bytes.fromhex(str(request["channel"]))
            if receivers > len(self.nodes):
                raise LocalError(f"{receivers} receivers asked, {len(self.nodes)} joined")
            self.armed = [node.record(channel, count) for node in self.nodes[:receivers]]
        else:
            if receivers > len(self.irc):
                raise LocalError(f"{receivers} IRC receivers asked, {len(self.irc)} joined")
            self.armed = []
            for client in self.irc[:receivers]:
                client.recorder = Recorder(count)
                self.armed.append(client.recorder)
        return {}

    async def _wait(self, limit: float, latencies: bool) -> dict[str, Any]:
        armed, self.armed = self.armed, []
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(*(r.done.wait() for r in armed))
        except TimeoutError:
            counts = ", ".join(f"{r.count}/{r.expected}" for r in armed)
            raise LocalError(f"receivers had {counts} messages after {limit:g} s") from None
        finally:
            for node in self.nodes:
                node.recorders.clear()
            for client in self.irc:
                client.recorder = None
        return {"receivers": [
            {"count": r.count, "first_ns": r.first_ns, "last_ns": r.last_ns,
             "latencies": [list(x) for x in r.latencies] if latencies else []}
            for r in armed]}


async def _serve_until_stdin_closes() -> None:
    host = await ReceiverHost.start()
    try:
        await serve_commands({"floor": list(host.floor_address), "pid": os.getpid()},
                             host.command)
    finally:
        await host.close()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_until_stdin_closes())
    return 0


# --- the runner's side --------------------------------------------------------------------


@dataclass
class _Host:
    proc: asyncio.subprocess.Process
    control: ChildControl
    floor_address: Address


class ReceiverHosts:
    """The receiver processes; receivers are numbered across them round-robin."""

    def __init__(self, hosts: list[_Host]) -> None:
        self.hosts = hosts

    @classmethod
    async def start(cls, processes: int) -> ReceiverHosts:
        started = cls([])
        try:
            for _ in range(processes):
                started.hosts.append(await _start_host())
        except BaseException:
            await started.close()
            raise
        return started

    def split(self, receivers: int) -> list[int]:
        """How many of ``receivers`` each host runs."""
        n = len(self.hosts)
        return [receivers // n + (1 if i < receivers % n else 0) for i in range(n)]

    async def each(self, receivers: int,
                   request: Callable[[int, int], dict[str, Any]], limit: float = 30.0
                   ) -> list[dict[str, Any]]:
        """``request(host index, its share)`` to every host with a share, concurrently."""
        calls = [host.control.call(request(i, share), limit)
                 for i, (host, share) in enumerate(zip(self.hosts, self.split(receivers),
                                                       strict=True)) if share]
        return list(await asyncio.gather(*calls))

    async def close(self) -> None:
        for host in self.hosts:
            await _stop_host(host.proc)
        self.hosts = []


async def _start_host() -> _Host:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pchat.bench.fanout",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=MAX_COMMAND_LINE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(HOST_START_TIMEOUT):
            line = await proc.stdout.readline()
        data = json.loads(line)
        address = (str(data["floor"][0]), int(data["floor"][1]))
    except (TimeoutError, ValueError, KeyError, IndexError, TypeError):
        await _stop_host(proc)
        raise LocalError("a fan-out receiver process did not start") from None
    except BaseException:
        await _stop_host(proc)
        raise
    return _Host(proc, ChildControl(proc), address)


async def _stop_host(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        async with asyncio.timeout(HOST_STOP_TIMEOUT):
            await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.communicate()


@dataclass
class Delivery:
    """One run: ``messages`` from one sender to every receiver."""

    messages: int
    start_ns: int
    send_s: float
    receivers: list[dict[str, Any]]

    @property
    def seconds(self) -> float:
        return (max(int(r["last_ns"]) for r in self.receivers) - self.start_ns) / 1e9

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def latencies_ms(self, warmup: int) -> list[float]:
        out: list[float] = []
        for r in self.receivers:
            if int(r["count"]) != self.messages:
                raise LocalError(f"a receiver got {r['count']} of {self.messages} messages")
            out += [ns / 1e6 for seq, ns in r["latencies"] if seq >= warmup]
        return out


def _flatten(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for answer in answers for r in answer["receivers"]]


async def node_run(sender: Node, hosts: ReceiverHosts, receivers: int, messages: int,
                   rate: float | None, name: str, window: int = SEND_WINDOW) -> Delivery:
    """A fresh channel from the sender, joined by ``receivers`` nodes; ``messages`` to all."""
    created = await sender.create_channel(name)
    channel = created["channel"]
    assert isinstance(channel, bytes)
    invite = sender.make_invite(channel)
    await hosts.each(receivers, lambda i, k: {"op": "p2p_join", "invite": invite, "count": k},
                     limit=JOIN_TIMEOUT + 10.0)
    await hosts.each(receivers, lambda i, k: {"op": "record", "kind": "p2p", "count": messages,
                                              "receivers": k, "channel": channel.hex()})

    async def one(i: int) -> None:
        await sender.send(channel, bench_text(i, time.monotonic_ns()))

    return await _deliver(hosts, receivers, messages, rate, one, window=window)


async def _deliver(hosts: ReceiverHosts, receivers: int, messages: int, rate: float | None,
                   one: Callable[[int], Any], window: int = 1) -> Delivery:
    start_ns = time.monotonic_ns()
    send_s = await drive(messages, one, rate, window)
    limit = wait_limit(messages, receivers)
    answers = await hosts.each(
        receivers, lambda i, k: {"op": "wait", "timeout": limit, "latencies": rate is not None},
        limit=limit + 10.0)
    return Delivery(messages, start_ns, send_s, _flatten(answers))


async def floor_run(hosts: ReceiverHosts, receivers: int, messages: int,
                    rate: float | None) -> Delivery:
    """The same envelopes, authored once, on one raw aioquic connection per receiver."""
    identity = bench_identity("bench-fanout-floor")
    key = os.urandom(32)
    state, genesis = ChannelState.create(identity, "floor", key, wall_ms(), os.urandom)
    assert state.current_epoch is not None
    author = FastAuthor(identity, channel=state.channel_id, key=key, epoch=state.current_epoch,
                        genesis=genesis)
    idle = quic_idle_timeout(NodeConfig())
    clients: list[FloorClient] = []
    try:
        for host, share in zip(hosts.hosts, hosts.split(receivers), strict=True):
            for _ in range(share):
                clients.append(await FloorClient.dial(host.floor_address, idle_timeout=idle))
        for client in clients:
            await client.setup(key, genesis, messages, state.channel_id)

        async def one(i: int) -> None:
            raw, _ = author.post(bench_text(i, time.monotonic_ns()), wall_ms())
            for client in clients:
                await client.send(raw)

        start_ns = time.monotonic_ns()
        send_s = await drive(messages, one, rate)
        limit = wait_limit(messages, receivers)
        reports = await asyncio.gather(*(client.report(limit) for client in clients))
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    # the sink records latencies in apply order: on one connection, that is send order
    return Delivery(messages, start_ns, send_s, [
        {"count": r["count"], "first_ns": r["first_ns"], "last_ns": r["last_ns"],
         "latencies": list(enumerate(r["latencies_ns"]))} for r in reports])


async def irc_run(server: Ngircd, hosts: ReceiverHosts, receivers: int, messages: int,
                  rate: float | None, tag: str) -> Delivery:
    """The same texts as ``PRIVMSG`` through ngircd, fresh IRC clients per run."""
    sender = await IrcClient.connect(server.address, f"s{tag}")
    try:
        await sender.join(IRC_CHANNEL)
        await hosts.each(receivers, lambda i, k: {
            "op": "irc_join", "address": list(server.address),
            "nicks": [f"r{tag}h{i}n{j}" for j in range(k)]})
        await hosts.each(receivers, lambda i, k: {"op": "record", "kind": "irc",
                                                  "count": messages, "receivers": k})

        async def one(i: int) -> None:
            await sender.privmsg(IRC_CHANNEL, bench_text(i, time.monotonic_ns()))

        return await _deliver(hosts, receivers, messages, rate, one)
    finally:
        await hosts.each(receivers, lambda i, k: {"op": "irc_close"})
        await sender.close()


# --- the phase ----------------------------------------------------------------------------


def _latency(run: Delivery, warmup: int) -> dict[str, Any]:
    samples = run.latencies_ms(warmup)
    summary = summarize(samples)
    return {"p50_ms": round(summary.p50, 4), "p99_ms": round(summary.p99, 4),
            "sent_rate": round(run.messages / run.send_s, 1),
            "deliveries": summary.n, "latency_ms": summary.to_json(), "cdf_ms": cdf(samples)}


def _saturated(run: Delivery) -> dict[str, Any]:
    return {"rate": round(run.rate, 1), "seconds": round(run.seconds, 4),
            "sender_rate": round(run.messages / run.send_s, 1)}


async def _system(name: str, run: Callable[[int, float | None], Any],
                  plan: FanoutPlan) -> dict[str, Any]:
    """The latency run, the light-load latency run and the saturated run of one system."""
    out: dict[str, Any] = {}
    try:
        out.update(_latency(await run(plan.latency_messages, plan.rate), plan.latency_warmup))
    except LocalError as exc:
        out["latency_error"] = f"{name}: {exc}"
    try:
        light = _latency(await run(plan.light_messages, plan.light_rate), plan.light_warmup)
        out["light"] = {k: light[k] for k in ("p50_ms", "p99_ms", "sent_rate", "deliveries")}
        out["light"]["offered_rate"] = plan.light_rate
    except LocalError as exc:
        out["light_error"] = f"{name}: {exc}"
    try:
        out.update(_saturated(await run(plan.saturate_messages, None)))
    except LocalError as exc:
        out["saturated_error"] = f"{name}: {exc}"
    return out


async def bench_fanout(plan: FanoutPlan, compare: bool) -> dict[str, Any]:
    """Node and floor fan-out; with ``compare`` also ngircd (skipped if not installed)."""
    out: dict[str, Any] = {"plan": asdict(plan)}
    binary = find_ngircd() if compare else None
    if compare and binary is None:
        out["ircd"] = {"skipped": "ngircd is not installed (e.g. apt-get install ngircd): "
                                  "comparison skipped"}
    hosts = await ReceiverHosts.start(plan.processes)
    sender = Node(bench_identity("bench-fanout-sender"), NodeConfig(), store=None)
    try:
        await sender.start(HOST, 0)
        n, sat_n = plan.receivers, plan.saturate_messages
        out["floor"] = await _system(
            "floor", lambda count, rate: floor_run(hosts, n, count, rate), plan)
        out["node"] = await _system(
            "node", lambda count, rate: node_run(sender, hosts, n, count, rate,
                                                 f"fanout-{count}-{rate}", plan.send_window),
            plan)
        if binary is not None:
            out["ircd"] = await bench_ircd(binary, hosts, plan)
        sweep: list[dict[str, Any]] = []
        for count in plan.sweep:
            if count == n and "rate" in out["node"]:
                sweep.append({"receivers": n, "rate": out["node"]["rate"]})
                continue
            try:
                run = await node_run(sender, hosts, count, sat_n, None, f"fanout-sweep-{count}",
                                     plan.send_window)
                sweep.append({"receivers": count, "rate": round(run.rate, 1)})
            except LocalError as exc:
                sweep.append({"receivers": count, "error": str(exc)})
        out["sweep"] = sweep
    finally:
        await sender.stop("benchmark finished")
        await hosts.close()
    return out


async def bench_ircd(binary: str, hosts: ReceiverHosts, plan: FanoutPlan) -> dict[str, Any]:
    try:
        server = await Ngircd.start(binary)
    except LocalError as exc:
        return {"error": str(exc)}
    try:
        n = plan.receivers
        tags = iter("abcdefgh")
        result = await _system(
            "ngircd", lambda count, rate: irc_run(server, hosts, n, count, rate, next(tags)),
            plan)
        if server.proc.returncode is not None:
            result["error"] = f"ngircd exited during the run: {server.log_tail()}"
        return {"server": f"ngircd {server.version}", **result}
    finally:
        await server.stop()


if __name__ == "__main__":
    sys.exit(main())
