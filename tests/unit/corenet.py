"""An in-memory network of :class:`NodeCore` instances, without sockets.

Theory of operation
-------------------
This is the h11 ``ConnectionPair`` idea grown to a small discrete-event
simulator (trio ``FakeNet``, iroh-gossip ``sim``):

* Every node is a real ``NodeCore`` with a seeded ``random.Random``; the clock
  is one float (:attr:`Net.now`) that only moves when the test or
  :meth:`Net.run_until` moves it.
* A link is two *ends* ``(node, link_id)``; each direction is a byte pipe.
  ``Transmit`` effects append to the pipe and schedule one *flush* ``latency``
  seconds later; the flush hands the pipe's whole content to the receiver as
  ``DataReceived``, split by :attr:`Net.chunker`. Bytes of consecutive
  transmits can therefore arrive merged or split anywhere, as on a stream.
* ``CloseLink`` from one end delivers ``LinkLost`` to both ends after the bytes
  already in flight (QUIC reason phrase style: ``closed by peer: …``).
* ``Dial`` effects are kept in :attr:`Net.dials` for the test to complete or
  fail, unless :attr:`Net.auto_dial` is set.
* :attr:`Net.route` is a fault-injection hook ``(src, dst, data) -> bool``;
  returning False drops the bytes (trio ``route_packet``).

Events due at the same time run in the order they were scheduled; timers run
after deliveries due at the same instant.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, assert_never

from p2pchat.core import NodeConfig, NodeCore
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    Address,
    Answer,
    CloseLink,
    DataReceived,
    Dial,
    DialFailed,
    Effect,
    Event,
    LinkEstablished,
    LinkLost,
    Notice,
    Persistence,
    TimerExpired,
    Transmit,
)
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity
from p2pchat.wire import Frame, FrameDecoder, encode_frame

E = TypeVar("E", bound=Effect)
End = tuple[str, int]  # (node name, link id)

START = 1000.0


def make_identity(seed: int, name: str = "") -> Identity:
    """A deterministic identity: the same seed gives the same DID on every run."""
    key_seed = hashlib.sha256(b"p2pchat-test-identity:%d" % seed).digest()
    salt = hashlib.sha256(b"p2pchat-test-salt:%d" % seed).digest()[:16]
    return Identity(secret_key_from_seed(key_seed), salt, name)


def identities_in_order(seed_a: int = 1, seed_b: int = 2) -> tuple[Identity, Identity]:
    """Two identities, the first with the lexicographically smaller DID."""
    a, b = make_identity(seed_a, "a"), make_identity(seed_b, "b")
    return (a, b) if a.did < b.did else (b, a)


def cert_fingerprint(identity: Identity) -> bytes:
    """Stands in for SHA-256 of a node's TLS certificate DER."""
    return hashlib.sha256(b"test-certificate:" + identity.public_key.raw).digest()


def decode_frames(data: bytes) -> list[Frame]:
    return FrameDecoder().feed(data)


def sent_frames(effects: list[Effect], link_id: int | None = None) -> list[Frame]:
    """Frames carried by the ``Transmit`` effects in ``effects`` (for one link)."""
    data = b"".join(
        e.data for e in effects
        if isinstance(e, Transmit) and (link_id is None or e.link_id == link_id)
    )
    return decode_frames(data)


def only(effects: list[Any], kind: type[E]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


@dataclass
class _Pipe:
    dst: End
    buffer: bytearray = field(default_factory=bytearray)
    flush_scheduled: bool = False


@dataclass
class _Conn:
    client: End
    server: End
    open: bool = True

    def other(self, end: End) -> End:
        return self.server if end == self.client else self.client


class TimerBusyLoop(AssertionError):
    """A core asked to be woken at a time that has already passed, and did nothing."""


class Net:
    def __init__(
        self,
        config: NodeConfig | None = None,
        *,
        latency: float = 0.0,
        chunker: Callable[[bytes], list[bytes]] | None = None,
        auto_dial: bool = False,
        close_drops_unsent: bool = False,
    ) -> None:
        self.config = config or NodeConfig()
        #: a ``CloseLink`` discards the closing end's bytes not yet flushed, as a QUIC
        #: CONNECTION_CLOSE does with stream data still queued (aioquic)
        self.close_drops_unsent = close_drops_unsent
        self.latency = latency
        self.chunker = chunker
        self.auto_dial = auto_dial
        self.route: Callable[[str, str, bytes], bool] | None = None
        self.now = START
        self.cores: dict[str, NodeCore] = {}
        self._drivers: dict[str, Driver[Event, Effect]] = {}
        self.identities: dict[str, Identity] = {}
        self.addresses: dict[Address, str] = {}
        self.address_of: dict[str, Address] = {}
        self.effects: dict[str, list[Effect]] = {}
        self.dials: list[tuple[str, Dial]] = []
        self.unreachable: set[Address] = set()
        self._conns: dict[End, _Conn] = {}
        self._pipes: dict[End, _Pipe] = {}  # keyed by the sending end
        self._queue: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = 0
        self._next_link_id = 100

    # --- building -------------------------------------------------------------------

    def add(
        self, name: str, identity: Identity | None = None, *, seed: int = 0,
        config: NodeConfig | None = None,
    ) -> NodeCore:
        identity = identity or make_identity(len(self.cores) + 1, name)
        core = NodeCore(identity, config or self.config, random.Random(seed), agent="test")
        address = (f"10.0.0.{len(self.cores) + 1}", 7445)
        self.cores[name] = core
        self.identities[name] = identity
        self.addresses[address] = name
        self.address_of[name] = address
        self.effects[name] = []
        return core

    def did(self, name: str) -> str:
        return self.identities[name].did

    # --- driving ---------------------------------------------------------------------

    def handle(self, name: str, event: Event) -> list[Effect]:
        """``event`` in a turn of its own: ``name``'s ticks due now run first (as in
        ``SimNetwork.request``)."""
        driver = self._driver(name)
        while driver.due(self.now):
            self._fire(name)
        effects = driver.dispatch(event, self.now)
        self.effects[name] += effects
        self.handled(name, effects)
        return effects

    def handled(self, name: str, effects: list[Effect]) -> None:
        """Called after ``name`` handled an event or a timer (a hook for subclasses)."""

    def _driver(self, name: str) -> Driver[Event, Effect]:
        """The shared driver loop around ``name``'s core (made anew if it was replaced)."""
        core = self.cores[name]
        driver = self._drivers.get(name)
        if driver is None or driver.machine is not core:

            def spun(what: str) -> None:
                raise TimerBusyLoop(f"{name}: {what}")

            driver = Driver(core, lambda effect: self._carry_out(name, effect),
                            lambda deadline: None, TimerExpired, spun)
            self._drivers[name] = driver
        return driver

    def establish(
        self,
        client: str,
        server: str,
        *,
        dial_id: int | None = None,
        client_fingerprint: bytes | None = None,
        cert_key: bytes | None = None,
        address: Address | None = None,
    ) -> tuple[int, int]:
        """Open a transport link; returns (client link id, server link id).

        The server side learns of it first, as with QUIC where the server has
        the client's Finished before the client application writes.
        """
        fingerprint = cert_fingerprint(self.identities[server])
        client_end = (client, self._new_link_id())
        server_end = (server, self._new_link_id())
        conn = _Conn(client_end, server_end)
        self._conns[client_end] = self._conns[server_end] = conn
        self._pipes[client_end] = _Pipe(server_end)
        self._pipes[server_end] = _Pipe(client_end)
        client_address = (self.address_of[client][0], 50_000 + client_end[1])
        self.handle(server, LinkEstablished(server_end[1], False, client_address, fingerprint))
        # Delivered even if the server refused at once: the client then hears LinkLost.
        self.handle(client, LinkEstablished(
            client_end[1], True, self.address_of[server] if address is None else address,
            fingerprint if client_fingerprint is None else client_fingerprint,
            peer_cert_key=self.identities[server].public_key.raw if cert_key is None else cert_key,
            dial_id=dial_id,
        ))
        return client_end[1], server_end[1]

    def complete_dial(self, name: str, dial: Dial) -> tuple[int, int]:
        self.dials.remove((name, dial))
        return self.establish(name, self.addresses[dial.address], dial_id=dial.dial_id,
                              address=dial.address)

    def fail_dial(self, name: str, dial: Dial, reason: str = "no route to host") -> None:
        self.dials.remove((name, dial))
        self.handle(name, DialFailed(dial.dial_id, reason))

    def sever(self, end: End, reason: str = "network unreachable") -> None:
        """The transport loses the link (both ends hear of it at once)."""
        conn = self._conns[end]
        if conn.open:
            conn.open = False
            for e in (conn.client, conn.server):
                self.handle(e[0], LinkLost(e[1], reason))

    def settle(self, max_steps: int = 10_000) -> None:
        """Run everything already due, moving the clock only for in-flight bytes."""
        if self._run(None, max_steps) == max_steps:
            raise AssertionError(f"network did not settle within {max_steps} steps")

    def step(self, steps: int) -> int:
        """Like :meth:`settle`, but stop after ``steps`` actions; returns how many ran."""
        return self._run(None, steps)

    def run_until(self, until: float, max_steps: int = 100_000) -> None:
        """Run every delivery and timer due up to ``until``, then set the clock there."""
        if self._run(until, max_steps) == max_steps:
            raise AssertionError(f"network did not settle within {max_steps} steps")
        self.now = max(self.now, until)

    def fire(self, name: str) -> list[Effect]:
        """Jump the clock to ``name``'s next deadline and fire its timer."""
        deadline = self.cores[name].next_deadline()
        assert deadline is not None, f"{name} has no timer"
        self.now = max(self.now, deadline)
        return self._fire(name)

    # --- queries ------------------------------------------------------------------------

    def of(self, name: str, kind: type[E]) -> list[E]:
        return only(self.effects[name], kind)

    def open_links(self, name: str) -> list[int]:
        return sorted(
            end[1] for end, conn in self._conns.items() if end[0] == name and conn.open
        )

    def peer_end(self, name: str, link_id: int) -> End:
        return self._conns[(name, link_id)].other((name, link_id))

    def dialler(self, name: str, link_id: int) -> str:
        """The node that dialled (was the TLS client of) this link."""
        return self._conns[(name, link_id)].client[0]

    # --- internals ---------------------------------------------------------------------

    def _new_link_id(self) -> int:
        self._next_link_id += 1
        return self._next_link_id

    def _schedule(self, at: float, action: Callable[[], object]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, action))

    def _carry_out(self, name: str, effect: Effect) -> None:
        if isinstance(effect, Persistence | Answer | Notice):
            return  # kept in self.effects for the tests to look at
        match effect:
            case Transmit():
                self._transmit((name, effect.link_id), effect.data)
            case CloseLink():
                self._close((name, effect.link_id), effect)
            case Dial():
                if not self.auto_dial:
                    self.dials.append((name, effect))
                elif effect.address in self.addresses \
                        and effect.address not in self.unreachable:
                    server = self.addresses[effect.address]
                    self._schedule(self.now + self.latency, lambda: self.establish(
                        name, server, dial_id=effect.dial_id))
                else:
                    self._schedule(self.now + self.latency, lambda: self.handle(
                        name, DialFailed(effect.dial_id, "no route to host")))
            case _:
                assert_never(effect)

    def _transmit(self, src: End, data: bytes) -> None:
        conn = self._conns.get(src)
        assert conn is not None, f"{src} transmits on a link the network never opened"
        if not conn.open:
            return
        pipe = self._pipes[src]
        if self.route is not None and not self.route(src[0], pipe.dst[0], data):
            return
        pipe.buffer += data
        if not pipe.flush_scheduled:
            pipe.flush_scheduled = True
            self._schedule(self.now + self.latency, lambda: self._flush(src))

    def _flush(self, src: End) -> None:
        pipe = self._pipes[src]
        data = bytes(pipe.buffer)
        pipe.buffer.clear()
        pipe.flush_scheduled = False
        chunks = self.chunker(data) if self.chunker else [data]
        assert data == b"".join(chunks), "a chunker must not change the bytes"
        for chunk in chunks:
            if chunk:
                self.handle(pipe.dst[0], DataReceived(pipe.dst[1], chunk))

    def _close(self, end: End, effect: CloseLink) -> None:
        conn = self._conns.get(end)
        if conn is None or not conn.open:
            return
        conn.open = False
        if self.close_drops_unsent:
            self._pipes[end].buffer.clear()
        other = conn.other(end)
        code = int(effect.code)
        self._schedule(self.now + self.latency, lambda: self.handle(
            other[0], LinkLost(other[1], f"closed by peer: {effect.reason} (code {code})")))
        self._schedule(self.now, lambda: self.handle(
            end[0], LinkLost(end[1], f"closed: {effect.reason} (code {code})")))

    def _next_timer(self) -> tuple[float, str] | None:
        best: tuple[float, str] | None = None
        for name in sorted(self.cores):
            deadline = self.cores[name].next_deadline()
            if deadline is not None and (best is None or deadline < best[0]):
                best = (deadline, name)
        return best

    def _fire(self, name: str) -> list[Effect]:
        effects = self._driver(name).fire(self.now)
        self.effects[name] += effects
        self.handled(name, effects)
        return effects

    def _run(self, until: float | None, max_steps: int) -> int:
        """Carry out due deliveries and timers; returns how many (max_steps: maybe more due)."""
        for done in range(max_steps):
            t_msg = self._queue[0][0] if self._queue else math.inf
            timer = self._next_timer()
            t_timer = timer[0] if timer else math.inf
            # settle (until=None): keep delivering; fire only timers due before the next delivery
            horizon = (t_msg if self._queue else self.now) if until is None else until
            if self._queue and t_msg <= t_timer and t_msg <= horizon:
                at, _, action = heapq.heappop(self._queue)
                self.now = max(self.now, at)
                action()
            elif timer is not None and t_timer <= horizon:
                self.now = max(self.now, t_timer)
                self._fire(timer[1])
            else:
                return done
        return max_steps


class Solo:
    """One ``NodeCore`` driven by hand; the test plays the peer frame by frame."""

    def __init__(
        self, identity: Identity | None = None, config: NodeConfig | None = None, seed: int = 0
    ) -> None:
        self.identity = identity or make_identity(1, "solo")
        self.core = NodeCore(self.identity, config or NodeConfig(), random.Random(seed),
                             agent="test")
        self.now = START
        self.fingerprint = cert_fingerprint(self.identity)

    def handle(self, event: Event) -> list[Effect]:
        return self.core.handle(event, self.now)

    def accept(self, link_id: int = 1, address: Address = ("192.0.2.9", 40000)) -> list[Effect]:
        """An inbound link: this node is the TLS server."""
        return self.handle(LinkEstablished(link_id, False, address, self.fingerprint))

    def dial_out(
        self, server: Identity, link_id: int = 1, *, fingerprint: bytes | None = None,
        dial_id: int | None = None, address: Address = ("192.0.2.7", 7445),
    ) -> list[Effect]:
        """An outbound link to ``server``: this node is the TLS client."""
        return self.handle(LinkEstablished(
            link_id, True, address,
            cert_fingerprint(server) if fingerprint is None else fingerprint,
            peer_cert_key=server.public_key.raw, dial_id=dial_id,
        ))

    def feed(self, link_id: int, *items: Frame | bytes) -> list[Effect]:
        data = b"".join(i if isinstance(i, bytes) else encode_frame(i) for i in items)
        return self.handle(DataReceived(link_id, data))
