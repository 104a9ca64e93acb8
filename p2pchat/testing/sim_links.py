"""The simulator's links (:mod:`p2pchat.testing.sim`): QUIC-like connections and what cuts them.

Owns every simulated connection (``_Conn``, two FIFO ``_Pipe`` s) and how bytes
cross it: dialling and the handshake, latency that never reorders a pipe,
stalls, split reads, frame duplication and hold-back, resets, black holes and
closes (:class:`_Links`); and what decides who hears whom: partitions, one-way
blocks, isolation and per-direction :class:`~p2pchat.testing.sim_model.LinkFaults`.
Events for the cores go through the kernel (:class:`~p2pchat.testing.sim_loop.SimLoop`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from p2pchat.core.events import (
    Address,
    CloseLink,
    DataReceived,
    Dial,
    DialFailed,
    LinkEstablished,
    LinkLost,
)
from p2pchat.testing.sim_loop import SimLoop
from p2pchat.testing.sim_model import End, Latency, LinkFaults
from p2pchat.testing.sim_node import SimNode
from p2pchat.wire import LENGTH_PREFIX_SIZE


@dataclass
class _Lost:
    reason: str


_Item = bytes | _Lost


@dataclass
class _Pipe:
    """One direction of a link: a FIFO of (arrival time, item)."""

    dst: End
    items: deque[tuple[float, _Item, str]] = field(default_factory=deque)
    last_arrival: float = 0.0
    pumping: bool = False
    aligned: bool = True  # every Transmit so far was whole frames


@dataclass
class _Conn:
    serial: int
    client: End
    server: End
    fingerprint: bytes
    pipes: dict[End, _Pipe]  # keyed by the sending end
    open_ends: set[End]
    broken: bool = False  # reset: in-flight bytes lost, both ends told
    silent: bool = False  # black hole: nothing arrives, nobody is told
    why: dict[End, str] = field(default_factory=dict)  # how each end was closed

    def other(self, end: End) -> End:
        return self.server if end == self.client else self.client

    @property
    def dead(self) -> bool:
        return self.broken or self.silent or not self.open_ends

    def names(self) -> tuple[str, str]:
        return self.client[0], self.server[0]


def _frames(data: bytes) -> list[tuple[str, int]] | None:
    """(tag, item count) per frame if ``data`` is whole frames, else None."""
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < LENGTH_PREFIX_SIZE:
            return None
        size = int.from_bytes(data[pos:pos + LENGTH_PREFIX_SIZE], "big")
        end = pos + LENGTH_PREFIX_SIZE + size
        if end > len(data):
            return None
        try:
            body = msgpack.unpackb(data[pos + LENGTH_PREFIX_SIZE:end], raw=False)
        except Exception:
            return None
        if not isinstance(body, dict):
            return None
        tag = body.get("t")
        items = body.get("items")
        out.append((tag if isinstance(tag, str) else "?",
                    len(items) if isinstance(items, list) else -1))
        pos = end
    return out

def _describe(frames: list[tuple[str, int]] | None) -> str:
    if frames is None:
        return "?"
    return "+".join(tag if n < 0 else f"{tag}[{n}]" for tag, n in frames)


#: Frames that recur for ever and do not count as activity for ``run_until_quiet``:
#: keepalives, and the periodic peer-record renewals and lookups of bootstrap servers.
_KEEPALIVE = {"ping", "pong", "announce", "lookup", "peers"}


class _Links:
    """The links of one network and its reachability (see the module docstring)."""

    def __init__(self, net: SimLoop) -> None:
        self.net = net
        self._rng = net._rng  # the network's fault RNG (one stream: draws stay in order)
        self.conns: dict[End, _Conn] = {}
        self._serial = 0
        self.by_address: dict[Address, str] = {}
        self._groups: dict[str, int] | None = None
        #: nodes no partition separates from anyone (bootstrap servers "on the Internet")
        self._everywhere: frozenset[str] = frozenset()
        #: directed (src, dst): bytes from src never reach dst (one-way partitions)
        self._blocked: set[tuple[str, str]] = set()
        #: nodes cut off from everyone while alive (offline authoring)
        self._isolated: set[str] = set()
        self._link_faults: dict[tuple[str, str], LinkFaults] = {}

    # --- who hears whom ----------------------------------------------------------------------

    def partition(self, *groups: Iterable[str], mode: str = "reset",
                  everywhere: Iterable[str] = ()) -> None:
        """Split the network into groups (:meth:`SimNetwork.partition`)."""
        if mode not in ("reset", "stall"):
            raise ValueError(f"unknown partition mode {mode!r}")
        assignment: dict[str, int] = {}
        for index, group in enumerate(groups):
            for name in group:
                if name not in self.net.nodes:
                    raise KeyError(name)
                if name in assignment:
                    raise ValueError(f"{name} is in two groups")
                assignment[name] = index
        spread = frozenset(everywhere) - set(assignment)
        for name in self.net.nodes:
            if name not in spread:
                assignment.setdefault(name, len(groups))
        self.heal()
        self._groups = assignment
        self._everywhere = spread
        self.net._note("partition", mode, " | ".join(
            ",".join(sorted(n for n, g in assignment.items() if g == i))
            for i in sorted(set(assignment.values()))))
        if mode == "reset":
            for conn in self.open_conns():
                a, b = conn.names()
                if not self._same_side(a, b):
                    self._break(conn, silent=False, why="partition")

    def heal(self) -> None:
        """End the partition and every one-way block (:meth:`SimNetwork.heal`)."""
        if self._groups is None and not self._blocked:
            return
        self._groups = None
        self._everywhere = frozenset()
        self._blocked.clear()
        self.net._note("heal", "", "")
        self._release()

    def block(self, src: str, dst: str) -> None:
        """Bytes from ``src`` no longer reach ``dst`` (:meth:`SimNetwork.block`)."""
        for name in (src, dst):
            if name not in self.net.nodes:
                raise KeyError(name)
        if src == dst:
            raise ValueError("a node cannot be blocked from itself")
        self._blocked.add((src, dst))
        self.net._note("block", f"{src}->{dst}", "")

    def unblock(self, src: str, dst: str) -> None:
        """End :meth:`block` ``(src, dst)``: the held bytes flow again."""
        if (src, dst) in self._blocked:
            self._blocked.discard((src, dst))
            self.net._note("unblock", f"{src}->{dst}", "")
            self._release()

    def isolate(self, name: str, mode: str = "reset") -> None:
        """Cut ``name`` off from every other node (:meth:`SimNetwork.isolate`)."""
        if mode not in ("reset", "stall"):
            raise ValueError(f"unknown isolation mode {mode!r}")
        if name not in self.net.nodes:
            raise KeyError(name)
        self._isolated.add(name)
        self.net._note("isolate", name, mode)
        if mode == "reset":
            for conn in self.open_conns():
                if name in conn.names():
                    self._break(conn, silent=False, why="isolated")

    def reconnect(self, name: str) -> None:
        """End :meth:`isolate`: ``name``'s stalled links flow again, its dials succeed."""
        if name in self._isolated:
            self._isolated.discard(name)
            self.net._note("reconnect", name, "")
            self._release()

    def set_link(self, a: str, b: str, *, latency: Latency | None = None, loss: float = 0.0,
                 both_ways: bool = True) -> None:
        """Per-link faults from ``a`` to ``b`` (:meth:`SimNetwork.set_link`)."""
        for name in (a, b):
            if name not in self.net.nodes:
                raise KeyError(name)
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be in 0..1")
        faults = LinkFaults(latency, loss)
        for pair in ((a, b), (b, a)) if both_ways else ((a, b),):
            if latency is None and not loss:
                self._link_faults.pop(pair, None)
            else:
                self._link_faults[pair] = faults
        self.net._note("set-link", f"{a}{'<' if both_ways else ''}->{b}",
                   f"loss={loss:g} latency={'net' if latency is None else latency}")

    def _release(self) -> None:
        """Restart the pipes that were held and no longer are."""
        for conn in self.open_conns():
            for src in sorted(conn.pipes):
                pipe = conn.pipes[src]
                if pipe.items and not pipe.pumping and not self._pipe_stalled(conn, src):
                    base = self.net.clock.now + self.latency(src[0], pipe.dst[0])
                    pipe.items = deque((max(at, base), item, label)
                                       for at, item, label in pipe.items)
                    pipe.last_arrival = max(pipe.last_arrival, base)
                    self._start_pump(conn, src)

    def break_link(self, a: str, b: str, *, silent: bool = False) -> int:
        """Break every open link between ``a`` and ``b``; returns how many."""
        broken = 0
        for conn in self.open_conns():
            if sorted(conn.names()) == sorted((a, b)):
                self._break(conn, silent=silent, why="break_link")
                broken += 1
        return broken

    def latency(self, src: str = "", dst: str = "") -> float:
        own = self._link_faults.get((src, dst))
        model = own.latency if own is not None and own.latency is not None \
            else self.net.faults.latency
        return max(0.0, float(model(self._rng)))

    def _same_side(self, a: str, b: str) -> bool:
        """Whether no partition separates ``a`` and ``b``."""
        if self._groups is None or a in self._everywhere or b in self._everywhere:
            return True
        return self._groups[a] == self._groups[b]

    def _hears(self, src: str, dst: str) -> bool:
        """Whether bytes from ``src`` can reach ``dst`` now (both alive aside)."""
        return self._same_side(src, dst) and (src, dst) not in self._blocked \
            and src not in self._isolated and dst not in self._isolated

    def reachable(self, a: str, b: str) -> bool:
        if not (self.net.nodes[a].alive and self.net.nodes[b].alive):
            return False
        return self._hears(a, b) and self._hears(b, a)

    def _pipe_stalled(self, conn: _Conn, src: End) -> bool:
        return not self._hears(src[0], conn.pipes[src].dst[0])

    def open_conns(self) -> list[_Conn]:
        seen: dict[int, _Conn] = {}
        for conn in self.conns.values():
            if not conn.dead:
                seen[conn.serial] = conn
        return [seen[s] for s in sorted(seen)]

    def dial(self, node: SimNode, dial: Dial) -> None:
        self.net.stats.dials += 1
        incarnation, started = node.incarnation, self.net.clock.now
        target = self.by_address.get(dial.address)

        def fail(reason: str) -> None:
            if node.alive and node.incarnation == incarnation:
                self.net.stats.dial_failures += 1
                self.net._handle(node, DialFailed(dial.dial_id, reason))

        def complete() -> None:
            if not (node.alive and node.incarnation == incarnation):
                return
            if target is None or not self.reachable(node.name, target):
                self.net._schedule(max(self.net.clock.now, started + dial.timeout),
                               lambda: fail("timed out"))
                return
            self.establish(node.name, target, dial.dial_id)

        if target is not None and self.reachable(node.name, target):
            rtt = self.latency(node.name, target) + self.latency(target, node.name)
            if rtt < dial.timeout:
                self.net._schedule(self.net.clock.now + rtt, complete)
                return
        self.net._schedule(self.net.clock.now + dial.timeout, lambda: fail("timed out"))

    def establish(self, client: str, server: str, dial_id: int | None) -> None:
        c_node, s_node = self.net.nodes[client], self.net.nodes[server]
        self._serial += 1
        serial = self._serial
        client_end = (client, c_node.next_link_id)
        c_node.next_link_id += 1
        server_end = (server, s_node.next_link_id)
        s_node.next_link_id += 1
        fingerprint = hashlib.sha256(b"p2pchat-sim-cert:%d:%d" % (self.net.seed, serial)).digest()
        conn = _Conn(serial, client_end, server_end, fingerprint,
                     {client_end: _Pipe(server_end, last_arrival=self.net.clock.now),
                      server_end: _Pipe(client_end, last_arrival=self.net.clock.now)},
                     {client_end, server_end})
        self.conns[client_end] = self.conns[server_end] = conn
        self.net.stats.links += 1
        self.net.ever_linked.add((min(client, server), max(client, server)))
        ephemeral = (c_node.address[0], 40_000 + client_end[1] % 20_000)
        self.net._handle(s_node, LinkEstablished(server_end[1], False, ephemeral, fingerprint),
                     f"from {client}")
        if client_end in conn.open_ends:
            self.net._handle(c_node, LinkEstablished(
                client_end[1], True, s_node.address, fingerprint,
                peer_cert_key=s_node.identity.public_key.raw, dial_id=dial_id), f"to {server}")
        lifetime = self.net.faults.link_lifetime
        if lifetime is not None:
            self.net._schedule(self.net.clock.now + self._rng.expovariate(1.0 / lifetime),
                           lambda: self._random_break(conn))

    def _random_break(self, conn: _Conn) -> None:
        if conn.dead or self.net.faults.link_lifetime is None:
            return
        self._break(conn, silent=self._rng.random() < self.net.faults.silent_break, why="fault")

    def _break(self, conn: _Conn, *, silent: bool, why: str) -> None:
        if conn.dead:
            return
        a, b = conn.names()
        self.net._note("black-hole" if silent else "reset", f"{a}-{b}#{conn.serial}", why)
        for pipe in conn.pipes.values():
            pipe.items.clear()
        if silent:
            conn.silent = True
            self.net.stats.black_holes += 1
            return
        conn.broken = True
        self.net.stats.resets += 1
        self.net._count("reset", a, b)
        for end in sorted(conn.open_ends):
            reason = f"connection reset ({why})"
            self.net._schedule(self.net.clock.now, self._lost_action(conn, end, reason))

    def _lost_action(self, conn: _Conn, end: End, reason: str) -> Callable[[], None]:
        return lambda: self._tell_lost(conn, end, reason)

    def _tell_lost(self, conn: _Conn, end: End, reason: str) -> None:
        if end not in conn.open_ends:
            return
        conn.open_ends.discard(end)
        conn.why[end] = f"told LinkLost: {reason}"
        node = self.net.nodes[end[0]]
        if node.alive:
            self.net._handle(node, LinkLost(end[1], reason))

    def close(self, end: End, effect: CloseLink) -> None:
        conn = self.conns.get(end)
        if conn is None:
            raise self.net.fail(f"{end[0]} closes link {end[1]}, which the network never opened")
        if end not in conn.open_ends:
            return
        self.net.stats.closes += 1
        conn.open_ends.discard(end)
        conn.why[end] = f"it closed the link: {effect.reason}"
        self._push(conn, end, _Lost(f"closed by peer: {effect.reason} (code {int(effect.code)})"),
                   "close")

    def transmit(self, src: End, data: bytes) -> None:
        conn = self.conns.get(src)
        if conn is None:
            raise self.net.fail(f"{src[0]} transmits on link {src[1]}, "
                                "which the network never opened")
        if src not in conn.open_ends:
            # The QUIC transport ignores sends on a closed link; so do we, but take note.
            how = conn.why.get(src, "?")
            self.net._violation(f"{src[0]} transmits on link {src[1]} after it was closed ({how})")
            return
        self.net.stats.transmits += 1
        if self.net.on_transmit is not None:
            self.net.on_transmit(src[0], src[1], data)
        self.net.stats.bytes += len(data)
        frames = _frames(data)
        pipe = conn.pipes[src]
        if frames is None:
            pipe.aligned = False
        label = _describe(frames)
        if frames is None or any(tag not in _KEEPALIVE for tag, _ in frames):
            self.net._last_activity = self.net.clock.now
        envelopes_only = pipe.aligned and bool(frames) and all(
            tag == "envelopes" for tag, _ in frames or ())
        faults = self.net.faults
        if envelopes_only and faults.frame_reorder and self._rng.random() < faults.frame_reorder:
            self.net.stats.reordered += 1
            self.net._count("reorder", src[0], conn.other(src)[0])
            self._side_delivery(conn, src, data, label + " (held back)")
            return
        self._push(conn, src, data, label)
        if envelopes_only and faults.frame_duplicate \
                and self._rng.random() < faults.frame_duplicate:
            self.net.stats.duplicated += 1
            self.net._count("duplicate", src[0], conn.other(src)[0])
            self._side_delivery(conn, src, data, label + " (duplicate)")

    def _push(self, conn: _Conn, src: End, item: _Item, label: str) -> None:
        """Queue ``item`` on the pipe from ``src``: FIFO, after everything already in it."""
        if conn.broken or conn.silent:
            return
        pipe = conn.pipes[src]
        if pipe.dst not in conn.open_ends:
            return
        now = self.net.clock.now
        a, b = src[0], pipe.dst[0]
        own = self._link_faults.get((a, b))
        if (self.net.faults.stall_prob and self._rng.random() < self.net.faults.stall_prob) or \
                (own is not None and own.loss and self._rng.random() < own.loss):
            self.net.stats.stalls += 1
            self.net._count("loss", a, b)
            pipe.last_arrival = max(pipe.last_arrival, now + self._rng.uniform(
                *self.net.faults.stall_time))
        arrival = max(now + self.latency(a, b), pipe.last_arrival)
        pipe.last_arrival = arrival
        pipe.items.append((arrival, item, label))
        if self._pipe_stalled(conn, src):
            self.net.stats.held += 1
            self.net._count("held", a, b)
        elif not pipe.pumping:
            self._start_pump(conn, src)

    def _start_pump(self, conn: _Conn, src: End) -> None:
        pipe = conn.pipes[src]
        pipe.pumping = True
        self.net._schedule(pipe.items[0][0], lambda: self._pump(conn, src))

    def _pump(self, conn: _Conn, src: End) -> None:
        pipe = conn.pipes[src]
        pipe.pumping = False
        if conn.broken or conn.silent or pipe.dst not in conn.open_ends:
            pipe.items.clear()
            return
        if self._pipe_stalled(conn, src):
            return  # heal(), unblock() or reconnect() restarts the pump
        now = self.net.clock.now
        node = self.net.nodes[pipe.dst[0]]
        while pipe.items and pipe.items[0][0] <= now:
            if isinstance(pipe.items[0][1], _Lost):
                _, lost, _ = pipe.items.popleft()
                assert isinstance(lost, _Lost)
                self._tell_lost(conn, pipe.dst, lost.reason)
                pipe.items.clear()
                return
            chunks: list[bytes] = []
            labels: list[str] = []
            while pipe.items and pipe.items[0][0] <= now and isinstance(pipe.items[0][1], bytes):
                _, data, label = pipe.items.popleft()
                assert isinstance(data, bytes)
                chunks.append(data)
                labels.append(label)
            self._deliver(conn, node, pipe.dst, b"".join(chunks), "+".join(labels))
            if conn.dead or pipe.dst not in conn.open_ends:
                pipe.items.clear()
                return
        if pipe.items:
            self._start_pump(conn, src)

    def _deliver(self, conn: _Conn, node: SimNode, dst: End, data: bytes, label: str) -> None:
        pieces = [data]
        split = self.net.faults.split_prob
        if split and len(data) > 1 and self._rng.random() < split:
            self.net.stats.splits += 1
            cuts = sorted({self._rng.randrange(1, len(data))
                           for _ in range(self._rng.randint(1, 3))})
            bounds = [0, *cuts, len(data)]
            pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
        for index, piece in enumerate(pieces):
            if conn.dead or dst not in conn.open_ends or not node.alive:
                return
            part = label if len(pieces) == 1 else f"{label} ({index + 1}/{len(pieces)})"
            if self.net.on_deliver is not None:
                self.net.on_deliver(dst[0], dst[1], piece)
            self.net._handle(node, DataReceived(dst[1], piece), part)

    def _side_delivery(self, conn: _Conn, src: End, data: bytes, label: str) -> None:
        """Deliver whole frames outside the FIFO (frame duplicate / reorder faults)."""
        pipe = conn.pipes[src]
        at = max(self.net.clock.now, pipe.last_arrival) + self._rng.uniform(
            *self.net.faults.reorder_delay)

        def deliver() -> None:
            if conn.dead or pipe.dst not in conn.open_ends:
                return
            if self._pipe_stalled(conn, src):
                self._push(conn, src, data, label)  # keep frame boundaries: join the queue
                return
            self._deliver(conn, self.net.nodes[pipe.dst[0]], pipe.dst, data, label)

        self.net._schedule(at, deliver)
