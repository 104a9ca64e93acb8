"""A deterministic, seeded network simulator for :class:`~p2pchat.core.NodeCore`.

Theory of operation
-------------------
The iroh-gossip ``proto/sim.rs`` idea in Python: every node is a real
``NodeCore`` (real Ed25519, XChaCha20-Poly1305 and Automerge), only the network
and the clock are simulated, and one seed decides everything.

*Determinism.* All randomness comes from ``random.Random`` instances derived
from ``(seed, purpose, node name)``: a node's identity and device salt, its core
RNG (one per incarnation) and the network's fault RNG. Work waits in one
priority queue ordered by ``(time, sequence number)``; a node's timer (from
``next_deadline()``) runs after queued work due at the same instant, and timers
due together run in sorted node-name order. Every event handed to a core is
appended to :attr:`SimNetwork.trace` as a small tuple of strings, so "same seed,
same trace" is a plain list comparison. Set the ``SEED`` environment variable
to replay a seed (:func:`seed_from_env`); every :class:`SimError` names it.

*Links are QUIC connections: reliable, ordered byte streams.* A ``Dial`` effect
(or :meth:`SimNetwork.link`) opens one after a handshake of one round trip;
the TLS server hears ``LinkEstablished`` first, then the client, which also gets
``peer_cert_key`` (the server's identity key, as its certificate carries it).
Both ends get the same per-link fake certificate fingerprint. Each direction
of a link is a FIFO pipe:

* **latency** -- every ``Transmit`` draws a one-way delay from
  :attr:`Faults.latency`, but never overtakes earlier bytes on the same pipe
  (``arrival = max(now + delay, previous arrival)``), so jitter reorders
  nothing inside a link, only across links;
* **packet loss** becomes what QUIC makes of it: retransmission, i.e. a
  *stall* -- with probability :attr:`Faults.stall_prob` a pipe stops for a
  drawn time and everything behind waits (head-of-line blocking);
* **stream reads** -- bytes due at the same time are delivered together, and
  with probability :attr:`Faults.split_prob` a delivery is cut into several
  ``DataReceived`` pieces at random offsets (frames straddle reads);
* **link breaks** -- a link lives an exponentially distributed time (mean
  :attr:`Faults.link_lifetime`). A break is a *reset* (both ends get
  ``LinkLost`` at once, bytes in flight are lost) or, with probability
  :attr:`Faults.silent_break`, a *black hole* (nothing arrives any more and
  nobody is told: each core's own idle timeout must notice). Nodes redial
  through their own backoff ``Dial`` effects; nothing is resent for them;
* **close** -- a ``CloseLink`` effect ends that side at once; the peer gets
  ``LinkLost("closed by peer: …")`` after the bytes already in flight to it
  (as iroh-gossip delivers disconnects after queued messages).

*Message-level duplication and reordering* come from the topology, as in the
real system: an envelope forwarded along several paths (several links) reaches
a node several times and in different orders relative to others, and a
summary answer races live pushes. With :attr:`Faults.frame_duplicate` and
:attr:`Faults.frame_reorder` the sim also re-delivers a whole ``envelopes``
frame later on the same link, or holds one back so later frames overtake it.
QUIC never does that; it models an honest-but-sloppy peer (overlapping or
out-of-causal-order batches), which the receiver must tolerate anyway. Only
frame-aligned ``Transmit`` payloads that hold nothing but ``envelopes`` frames
are touched, so a stream is never corrupted.

*Partitions* (:meth:`SimNetwork.partition`) split the nodes into groups. Dials
across groups fail with ``DialFailed`` after the dial timeout. Links across
groups either break at once (``mode="reset"``) or *stall* (``mode="stall"``):
their bytes wait, as QUIC keeps retransmitting, until :meth:`SimNetwork.heal`
releases them or the cores' idle timeouts close the link first.

*Crashes* (:meth:`SimNetwork.crash`) stop a node: its links go silent for
its peers (they notice by idle timeout) and its in-memory state is lost.
:meth:`SimNetwork.restart` builds a new core from what the node persisted
(``PersistChannel``/``PersistEnvelopes``/``SavePeer`` effects, kept in a
perfect in-memory "disk"), as the runtime does at start; ``lose_last=n``
models a crash that lost the newest ``n`` envelope writes of each channel, and
``crash(name, lose_own_last=n)`` one that lost exactly the newest ``n``
envelopes the node itself wrote in each channel (its peers may hold them).

*Strictness.* A ``Transmit`` on a link its core already closed is ignored, as
the QUIC transport ignores it, and recorded in :attr:`SimNetwork.violations`
(``strict=True`` raises instead). An exception out of ``NodeCore.handle``, or a
timer that leaves ``next_deadline()`` in the past (a runtime would spin), is a
:class:`SimError`. :attr:`SimNetwork.on_transmit` and
:attr:`SimNetwork.on_deliver` observe the byte streams (trio ``FakeNet`` hooks).

*Quiet.* Keepalive pings never stop, so :meth:`SimNetwork.run_until_quiet`
runs until nothing but ping/pong (and failing dials, and the periodic announce,
lookup and peers frames of bootstrap servers) has happened for a while, long
enough for any backoff redial to have come due.

*Bootstrap servers* (:meth:`SimNetwork.add_server`) are blind stores
(:mod:`p2pchat.testing.blindstore`) behind NodeCore's link layer; nodes added
with ``servers=[…]`` are started as the runtime starts them (``Started``, with
the cursors and prekeys they persisted) and use them through their own
``BootstrapClient``.

*Per-link faults and one-way cuts.* :meth:`SimNetwork.set_link` gives one
direction of a node pair its own latency and loss; :meth:`SimNetwork.block`
stops one direction only (a one-way partition); :meth:`SimNetwork.isolate`
cuts a live node off from everyone (it keeps writing: offline authoring).
:meth:`SimNetwork.fired` counts what each fault did, in all or per link.

*Hostile members.* :meth:`SimNetwork.hostile` puts forged, backdated,
equivocating or malformed envelopes on a node's links.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
import itertools
import math
import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

import msgpack

from p2pchat.channel.envelope import Envelope, channel_topic, decode_envelope
from p2pchat.channel.state import MessageView
from p2pchat.channel.ulid import make_ulid
from p2pchat.core import NodeConfig, NodeCore
from p2pchat.core.channels import topic_for
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    Address,
    ChannelAnswer,
    ChannelCreateRequested,
    ChannelsLoaded,
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    DataReceived,
    Dial,
    DialFailed,
    DisconnectFinished,
    Effect,
    Event,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
    JoinRequested,
    LinkEstablished,
    LinkLost,
    MessageOpRequested,
    ModRequested,
    PeerConnected,
    PeerDisconnected,
    PersistChannel,
    PersistCursor,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    PingFinished,
    SavePeer,
    SendRequested,
    Started,
    StoredChannel,
    SyncChanged,
    TimerExpired,
    Transmit,
    WantedPeersLoaded,
)
from p2pchat.core.link import Link
from p2pchat.crypto import secret_key_from_seed
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity
from p2pchat.testing.blindstore import BlindStore, BlindStoreHub
from p2pchat.wire import LENGTH_PREFIX_SIZE, Envelopes, encode_frame

#: Wall-clock milliseconds at simulated time 0 (2026-01-01T00:00:00Z).
WALL_BASE_MS = 1_767_225_600_000
#: The port every simulated node listens on.
SIM_PORT = 7445
#: What :meth:`SimNetwork.hostile` can do.
HOSTILE_KINDS = ("forged", "backdated", "equivocate", "garbage", "bad_change")
#: How far in the past a ``backdated`` post is stamped by default (30 days).
BACKDATE_MS = 30 * 24 * 3600 * 1000
#: Size of a ``garbage`` envelope, bytes.
GARBAGE_BYTES = 120

End = tuple[str, int]  # (node name, link id at that node)


class SimError(AssertionError):
    """A simulation went wrong: a core raised, a run did not settle, replicas diverged.

    The message always names the seed, so the run can be replayed with ``SEED=…``.
    """


def seed_from_env(default: int) -> int:
    """``SEED`` from the environment (decimal or 0x-hex) if set, else ``default``."""
    value = os.environ.get("SEED", "").strip()
    return int(value, 0) if value else default


def derive_rng(seed: int, *parts: object) -> random.Random:
    """An independent ``random.Random`` for ``(seed, *parts)``; stable across runs and hosts."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


# --- time ----------------------------------------------------------------------------------


class FakeClock:
    """Simulated time: monotonic seconds (``now``) plus a derived wall clock in ms."""

    def __init__(self, start: float = 0.0, wall_base_ms: int = WALL_BASE_MS) -> None:
        self.now = float(start)
        self.wall_base_ms = wall_base_ms

    def advance_to(self, t: float) -> None:
        if t < self.now:
            raise ValueError(f"time runs forward only: {t} < {self.now}")
        self.now = t

    def advance(self, dt: float) -> None:
        self.advance_to(self.now + dt)

    def wall_ms(self, skew_ms: int = 0) -> int:
        """Unix-epoch milliseconds as seen by a node whose clock is off by ``skew_ms``."""
        return self.wall_base_ms + round(self.now * 1000) + skew_ms


# --- latency distributions ---------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    seconds: float

    def __call__(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __call__(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogNormal:
    """Median ``median`` seconds, a long right tail (``sigma``), capped at ``cap``."""

    median: float
    sigma: float = 0.5
    cap: float = 2.0

    def __call__(self, rng: random.Random) -> float:
        return min(self.cap, rng.lognormvariate(math.log(self.median), self.sigma))


Latency = Callable[[random.Random], float]


@dataclass
class Faults:
    """What the network does to traffic. See the module docstring for the model."""

    #: One-way delay per ``Transmit``, seconds (never reorders bytes inside a link).
    latency: Latency = field(default_factory=lambda: Uniform(0.002, 0.020))
    #: Per ``Transmit``: the pipe stalls (loss + retransmission), holding later bytes too.
    stall_prob: float = 0.0
    #: Range of a stall, seconds.
    stall_time: tuple[float, float] = (0.2, 2.0)
    #: Per delivery: cut the bytes into several ``DataReceived`` pieces.
    split_prob: float = 0.0
    #: Mean lifetime of a link before it breaks, seconds (exponential); None: never.
    link_lifetime: float | None = None
    #: Fraction of breaks that are silent black holes instead of resets.
    silent_break: float = 0.0
    #: Per envelopes-only ``Transmit``: also deliver it again later on the same link.
    frame_duplicate: float = 0.0
    #: Per envelopes-only ``Transmit``: hold it back so later frames overtake it.
    frame_reorder: float = 0.0
    #: Extra delay of a duplicated or held-back frame, seconds.
    reorder_delay: tuple[float, float] = (0.01, 0.5)

    @classmethod
    def calm(cls, latency: Latency | None = None) -> Faults:
        """Latency only: no stalls, breaks or frame games."""
        return cls(latency=latency or Uniform(0.002, 0.020))

    @classmethod
    def chaos(cls) -> Faults:
        """Everything at once, at rates that still let a channel make progress."""
        return cls(latency=LogNormal(0.02, 0.8, 1.5), stall_prob=0.01, stall_time=(0.2, 3.0),
                   split_prob=0.2, link_lifetime=30.0, silent_break=0.3,
                   frame_duplicate=0.05, frame_reorder=0.05)


@dataclass(frozen=True)
class LinkFaults:
    """Faults of one direction of the links between two nodes (:meth:`SimNetwork.set_link`):
    they replace :attr:`Faults.latency` and add to :attr:`Faults.stall_prob` there."""

    #: one-way delay per ``Transmit`` on this direction; None: the network's
    latency: Latency | None = None
    #: per ``Transmit``: a lost packet, i.e. a stall of :attr:`Faults.stall_time`
    loss: float = 0.0


#: What :meth:`SimNetwork.fired` can count (``Stats`` fields), by the name a test uses.
FAULT_COUNTERS = {"loss": "stalls", "reset": "resets", "black_hole": "black_holes",
                  "split": "splits", "duplicate": "duplicated", "reorder": "reordered",
                  "dial_failure": "dial_failures", "held": "held", "hostile": "hostile"}


# --- the network ----------------------------------------------------------------------------


@dataclass
class Stats:
    """Counters of what the network did (to check a scenario exercised its faults)."""

    transmits: int = 0
    bytes: int = 0
    links: int = 0
    resets: int = 0
    black_holes: int = 0
    stalls: int = 0
    splits: int = 0
    duplicated: int = 0
    reordered: int = 0
    dials: int = 0
    dial_failures: int = 0
    closes: int = 0
    events: int = 0
    #: transmissions that had to wait at a partition, a one-way block or an isolation
    held: int = 0
    #: frames a hostile step put on the wire (:meth:`SimNetwork.inject`)
    hostile: int = 0


@dataclass
class _Disk:
    """What a node persisted: enough to restart it as the runtime would."""

    channels: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    envelopes: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    envelope_ids: dict[bytes, set[bytes]] = field(default_factory=dict)
    peers: dict[Address, str] = field(default_factory=dict)
    secrets: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    #: bootstrap server cursors: (server DID, server topic) -> seq
    cursors: dict[tuple[str, bytes], int] = field(default_factory=dict)
    #: prekeys: id -> (record, private key, expiry ms)
    prekeys: dict[bytes, tuple[bytes, bytes, int]] = field(default_factory=dict)


@dataclass
class SimNode:
    """One simulated node: its identity, address, current core and persisted state."""

    name: str
    identity: Identity
    address: Address
    skew_ms: int
    core: NodeCore
    incarnation: int = 0
    #: its last crash lost stored writes: the next start has its chain heads unsure
    lost_writes: bool = False
    alive: bool = True
    deadline: float | None = None
    #: the shared driver loop around ``core`` (made anew with each core)
    driver: Driver[Event, Effect] | None = None
    next_link_id: int = 1
    disk: _Disk = field(default_factory=_Disk)
    #: the bootstrap servers (node names) this node uses
    servers: tuple[str, ...] = ()
    #: a bootstrap server's blind store (None: an ordinary node)
    store: BlindStore | None = None

    @property
    def did(self) -> str:
        return self.identity.did

    @property
    def is_server(self) -> bool:
        return self.store is not None


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


def _authored_by(raw: bytes, topic: bytes, author_key: bytes, device: bytes) -> bool:
    """Whether the stored envelope ``raw`` was written by that author's device."""
    try:
        env = decode_envelope(raw, topic)
    except RemoteProtocolError:
        return False
    return env.author_key == author_key and env.device == device


def _describe(frames: list[tuple[str, int]] | None) -> str:
    if frames is None:
        return "?"
    return "+".join(tag if n < 0 else f"{tag}[{n}]" for tag, n in frames)


#: Frames that recur for ever and do not count as activity for ``run_until_quiet``:
#: keepalives, and the periodic peer-record renewals and lookups of bootstrap servers.
_KEEPALIVE = {"ping", "pong", "announce", "lookup", "peers"}


class SimNetwork:
    """Real ``NodeCore`` s on a simulated network. See the module docstring.

    ``seed`` decides identities, core RNGs and every fault. ``nodes`` are added
    at once (more with :meth:`add_node`). ``clock_skew_ms`` gives each node a
    wall clock off by up to that many milliseconds either way.
    """

    def __init__(
        self,
        seed: int,
        nodes: Iterable[str] = (),
        *,
        config: NodeConfig | None = None,
        faults: Faults | None = None,
        clock: FakeClock | None = None,
        clock_skew_ms: int = 0,
        max_events: int = 2_000_000,
        strict: bool = False,
    ) -> None:
        self.seed = seed
        self.config = config or NodeConfig()
        self.faults = faults or Faults()
        self.clock = clock or FakeClock()
        self.clock_skew_ms = clock_skew_ms
        self.max_events = max_events
        #: (node, channel) -> (what had happened when it was computed, its history)
        self._histories: dict[tuple[str, bytes],
                              tuple[tuple[int, int, int], list[MessageView]]] = {}
        #: Raise on a core misstep the runtime would tolerate (see :attr:`violations`).
        self.strict = strict
        #: Such missteps, e.g. a ``Transmit`` on a link the core already closed.
        self.violations: list[str] = []
        self.nodes: dict[str, SimNode] = {}
        self.trace: list[tuple[str, ...]] = []
        self.stats = Stats()
        #: Pairs of nodes that ever had a link (sorted name pairs).
        self.ever_linked: set[tuple[str, str]] = set()
        #: ``ChannelAnswer`` / ``ConnectFinished`` effects by request id.
        self.answers: dict[int, ChannelAnswer] = {}
        self.connects: dict[int, ConnectFinished] = {}
        self.founders: dict[bytes, str] = {}
        #: Observers (``(node, link id, bytes)``) of every ``Transmit`` the network
        #: accepts and every ``DataReceived`` it delivers; for white-box tests.
        self.on_transmit: Callable[[str, int, bytes], None] | None = None
        self.on_deliver: Callable[[str, int, bytes], None] | None = None
        #: Called with ``(node name, core)`` for every core the network builds (at
        #: :meth:`add_node` and each :meth:`restart`) before it handles any event.
        self.on_new_core: Callable[[str, NodeCore], None] | None = None
        #: the signature check bootstrap servers use (None: each checks its own)
        self.server_verify: Callable[[list[Envelope]], list[bool]] | None = None
        self._rng = derive_rng(seed, "network")
        self._names: dict[str, str] = {}  # DID -> node name (see _name_by_did)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._conns: dict[End, _Conn] = {}
        self._serial = 0
        self._by_address: dict[Address, str] = {}
        self._groups: dict[str, int] | None = None
        #: nodes no partition separates from anyone (bootstrap servers "on the Internet")
        self._everywhere: frozenset[str] = frozenset()
        #: directed (src, dst): bytes from src never reach dst (one-way partitions)
        self._blocked: set[tuple[str, str]] = set()
        #: nodes cut off from everyone while alive (offline authoring)
        self._isolated: set[str] = set()
        self._link_faults: dict[tuple[str, str], LinkFaults] = {}
        #: per directed (src, dst) pair and fault name (FAULT_COUNTERS keys): how often
        self.link_stats: dict[tuple[str, str], dict[str, int]] = {}
        self._next_request = 1
        self._last_activity = self.clock.now
        for name in nodes:
            self.add_node(name)

    # --- building ------------------------------------------------------------------------

    def add_node(self, name: str, *, servers: Sequence[str] = ()) -> SimNode:
        """A node; ``servers`` names bootstrap servers (:meth:`add_server`) it uses, as
        ``run --bootstrap`` does: such a node is started as the runtime starts one
        (``Started``: it dials its servers, announces itself, keeps prekeys)."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        for server in servers:
            if server not in self.nodes or not self.nodes[server].is_server:
                raise ValueError(f"{server!r} is not a bootstrap server of this network")
        return self._add(name, tuple(servers), None)

    def add_server(self, name: str) -> SimNode:
        """A bootstrap server (a blind store, :mod:`p2pchat.testing.blindstore`): a node
        with NodeCore's link layer and no channels; nodes use it through their
        BootstrapClient. Its store survives :meth:`crash` and :meth:`restart`."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        verify = self.server_verify
        return self._add(name, (), BlindStore(verify) if verify is not None else BlindStore())

    def _add(self, name: str, servers: tuple[str, ...], store: BlindStore | None) -> SimNode:
        ident_rng = derive_rng(self.seed, "identity", name)
        identity = Identity(secret_key_from_seed(ident_rng.randbytes(32)),
                            ident_rng.randbytes(16), name)
        index = len(self.nodes) + 1
        address = (f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}", SIM_PORT)
        skew = self._rng.randint(-self.clock_skew_ms, self.clock_skew_ms) \
            if self.clock_skew_ms else 0
        core = self._new_core(name, identity, 0, servers, store)
        node = SimNode(name, identity, address, skew, core, servers=servers, store=store)
        self.nodes[name] = node
        self._by_address[address] = name
        self._drive(node)
        self._start(node)
        return node

    def _new_core(self, name: str, identity: Identity, incarnation: int,
                  servers: tuple[str, ...], store: BlindStore | None) -> NodeCore:
        rng = derive_rng(self.seed, "core", name, incarnation)
        addresses = tuple(self.nodes[s].address for s in servers)
        core = NodeCore(identity, self.config, rng, agent="sim", bootstrap=addresses)
        if store is not None:
            store.forget_links()
            core.hub = BlindStoreHub(identity, rng, store)
        if self.on_new_core is not None:
            self.on_new_core(name, core)
        return core

    def _start(self, node: SimNode) -> None:
        """``Started`` for servers and the nodes that use them (see :meth:`add_node`)."""
        if not (node.servers or node.is_server):
            return
        wall = self.wall_ms(node.name)
        prekeys = tuple((record, private) for record, private, expires
                        in sorted(node.disk.prekeys.values()) if expires > wall)
        cursors = tuple((did, topic, seq) for (did, topic), seq
                        in sorted(node.disk.cursors.items()))
        self.request(node.name, Started(node.address, wall, cursors, prekeys))

    def servers(self) -> list[str]:
        """Names of the bootstrap servers."""
        return [n for n, node in sorted(self.nodes.items()) if node.is_server]

    def server_holds(self, server: str, channel: bytes) -> int:
        """How many envelopes of ``channel`` the server ``server`` stores."""
        store = self.nodes[server].store
        if store is None:
            raise ValueError(f"{server!r} is not a bootstrap server")
        return store.held(channel_topic(channel))

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def core(self, name: str) -> NodeCore:
        return self.nodes[name].core

    def did(self, name: str) -> str:
        return self.nodes[name].did

    def name_of(self, did: str) -> str:
        name = self._name_by_did(did)
        if name is None:
            raise KeyError(did)
        return name

    def _name_by_did(self, did: str) -> str | None:
        # identities never change under a name (a restart keeps the node's identity), so
        # the map only needs rebuilding when nodes are added
        if len(self._names) != len(self.nodes):
            self._names = {node.did: node.name for node in self.nodes.values()}
        return self._names.get(did)

    @property
    def now(self) -> float:
        return self.clock.now

    def wall_ms(self, name: str) -> int:
        return self.clock.wall_ms(self.nodes[name].skew_ms)

    def fail(self, message: str) -> SimError:
        """A :class:`SimError` naming the seed and the simulated time."""
        return SimError(f"{message}\n[sim seed={self.seed} (replay: SEED={self.seed}), "
                        f"t={self.clock.now:.6f}]")

    # --- requests (the user's side) -----------------------------------------------------------

    def request(self, name: str, event: Event, *, same_turn: bool = False) -> list[Effect]:
        """Hand ``event`` to ``name``'s core now, as its user or runtime would.

        A request comes in an event-loop turn of its own: the node's ticks still due
        at this instant (``deadline == now``: the turn it asked to see end, as its
        write batcher does) run first, unless ``same_turn`` (a burst: see
        :meth:`post_burst`)."""
        node = self.nodes[name]
        if not node.alive:
            raise self.fail(f"{name} is down")
        self._last_activity = self.clock.now
        if not same_turn:
            self.end_turn(name)
        return self._handle(node, event)

    def end_turn(self, name: str) -> list[Effect]:
        """Run ``name``'s timers that are due now (its ticks), as the runtime's event loop
        does on its next iteration: e.g. the write batcher's seal and flush. Returns
        their effects."""
        node = self.nodes[name]
        effects: list[Effect] = []
        while node.alive and node.deadline is not None and node.deadline <= self.clock.now:
            effects += self._fire(node)
        return effects

    def _request_id(self) -> int:
        rid = self._next_request
        self._next_request += 1
        return rid

    def _answer(self, name: str, event: Event, request_id: int) -> dict[str, Any]:
        self.request(name, event)
        if request_id not in self.answers:  # batched: answered when its seal comes
            self.end_turn(name)
        answer = self.answers.get(request_id)
        if answer is None:
            raise self.fail(f"{name} did not answer {type(event).__name__} {request_id}")
        if answer.error is not None or answer.result is None:
            raise self.fail(f"{name}: {type(event).__name__} failed: {answer.error}")
        return answer.result

    def connect(self, a: str, b: str) -> int:
        """``a``'s user asks to connect to ``b`` (``ConnectRequested``); returns the request id.

        Once that succeeds, ``a`` keeps redialling ``b`` whenever the link is lost.
        """
        rid = self._request_id()
        self.request(a, ConnectRequested(rid, self.nodes[b].address, self.nodes[b].did))
        return rid

    def link(self, a: str, b: str) -> None:
        """Open a bare transport link from ``a`` to ``b`` (no ``Dial``, so no redial after)."""
        self._last_activity = self.clock.now
        if not self._reachable(a, b):
            raise self.fail(f"{a} cannot reach {b}")
        rtt = self._latency(a, b) + self._latency(b, a)

        def establish() -> None:
            if self._reachable(a, b):
                self._establish(a, b, None)

        self._schedule(self.clock.now + rtt, establish)

    def create_channel(self, name: str, channel_name: str) -> bytes:
        rid = self._request_id()
        result = self._answer(name, ChannelCreateRequested(rid, channel_name, self.wall_ms(name)),
                              rid)
        channel = result["channel"]
        assert isinstance(channel, bytes)
        self.founders[channel] = name
        return channel

    def join(self, name: str, channel: bytes, via: str | Sequence[str] | None = None) -> None:
        """``name`` joins ``channel`` with an invite naming ``via`` (default: the founder)."""
        founder = self.nodes[self.founders[channel]]
        hub = founder.core.hub
        vias = [self.founders[channel]] if via is None else [via] if isinstance(via, str) \
            else list(via)
        peers = tuple((self.nodes[v].did, self.nodes[v].address) for v in vias)
        invite = hub.invite_for(channel, self.wall_ms(self.founders[channel]))
        rid = self._request_id()
        self._answer(name, JoinRequested(rid, channel, invite.name, peers, self.wall_ms(name),
                                         invite.cap, invite.grant, invite.grant_signature,
                                         invite.genesis), rid)

    def post(self, name: str, channel: bytes, text: str, *, wall_ms: int | None = None) -> str:
        """``name`` posts ``text`` (stamped ``wall_ms``, default its clock); returns the
        message id."""
        rid = self._request_id()
        wall = self.wall_ms(name) if wall_ms is None else wall_ms
        result = self._answer(name, SendRequested(rid, channel, text, wall), rid)
        msg_id = result["id"]
        assert isinstance(msg_id, str)
        return msg_id

    def post_burst(self, name: str, channel: bytes, texts: Sequence[str]) -> list[str]:
        """``name`` posts ``texts`` in one event-loop turn (a script calling ``send`` in a
        loop, pipelined control requests): its write batcher seals them together (up to
        MAX_POSTS_PER_ENVELOPE per envelope) when the turn ends. Returns the message ids;
        a refused post fails the run with its reason."""
        rids = []
        for i, text in enumerate(texts):
            rids.append(self._request_id())
            self.request(name, SendRequested(rids[-1], channel, text, self.wall_ms(name)),
                         same_turn=i > 0)
        self.end_turn(name)
        ids: list[str] = []
        for rid in rids:
            answer = self.answers.get(rid)
            if answer is None or answer.error is not None or answer.result is None:
                why = "no answer" if answer is None else answer.error
                raise self.fail(f"{name}: SendRequested failed: {why}")
            ids.append(str(answer.result["id"]))
        return ids

    def flush(self, name: str) -> list[Effect]:
        """End ``name``'s turn now: held writes are pushed (one frame per link) once its
        write batcher's cork sees the burst is over, at this instant."""
        return self.end_turn(name)

    def message_op(self, name: str, channel: bytes, op: str, msg_id: str, *, text: str = "",
                   emoji: str = "", on: bool = True) -> None:
        """``name`` edits (``op="edit"``, ``text``) or deletes one of its messages, or reacts
        (``op="react"``, ``emoji``, ``on``) to any message."""
        rid = self._request_id()
        self._answer(name, MessageOpRequested(rid, channel, op, msg_id, self.wall_ms(name),
                                              text, emoji, on), rid)

    def rotate(self, name: str, channel: bytes) -> None:
        """``name`` rotates ``channel``'s group key now, as its hub does after a removal or
        every ``ROTATE_EVERY`` envelopes (there is no user request for it): the bundle is
        stored and pushed like any local write."""
        node = self.nodes[name]
        if not node.alive:
            raise self.fail(f"{name} is down")
        hub = node.core.hub
        state = hub.get(channel)
        before = len(state.log)
        rng = derive_rng(self.seed, "rotate", name, node.incarnation, before)
        try:
            hub._took(state, state.rotate(self.wall_ms(name), rng.randbytes))
        except ValueError as exc:
            raise self.fail(f"{name}: rotate failed: {exc}") from exc
        self._note("rotate", name, channel.hex()[:12])
        effects = hub._after_local(state, before)  # the hub's own path for local writes
        for effect in effects:
            self._carry_out(node, effect)
        self._driver(node).rearm()

    def moderate(self, name: str, channel: bytes, action: str, target: str = "", *,
                 value: str = "", on: bool = True, reason: str = "") -> str:
        """``name`` publishes a moderation action (``target``: a node name); returns its id."""
        rid = self._request_id()
        did = self.nodes[target].did if target else ""
        result = self._answer(name, ModRequested(rid, channel, action, self.wall_ms(name), did,
                                                 value, on, reason), rid)
        entry = result["id"]
        assert isinstance(entry, str)
        return entry

    # --- faults ------------------------------------------------------------------------------

    def calm(self) -> None:
        """Keep the latency distribution, switch every other fault off."""
        self.faults = Faults.calm(self.faults.latency)

    def partition(self, *groups: Iterable[str], mode: str = "reset",
                  everywhere: Iterable[str] = ()) -> None:
        """Split the network; nodes named in no group form one more group together,
        except those in ``everywhere``, which every group still reaches.

        ``mode="reset"`` breaks links across groups now; ``mode="stall"`` holds
        their bytes until :meth:`heal` (or until the cores give up on them).
        """
        if mode not in ("reset", "stall"):
            raise ValueError(f"unknown partition mode {mode!r}")
        assignment: dict[str, int] = {}
        for index, group in enumerate(groups):
            for name in group:
                if name not in self.nodes:
                    raise KeyError(name)
                if name in assignment:
                    raise ValueError(f"{name} is in two groups")
                assignment[name] = index
        spread = frozenset(everywhere) - set(assignment)
        for name in self.nodes:
            if name not in spread:
                assignment.setdefault(name, len(groups))
        self.heal()
        self._groups = assignment
        self._everywhere = spread
        self._note("partition", mode, " | ".join(
            ",".join(sorted(n for n, g in assignment.items() if g == i))
            for i in sorted(set(assignment.values()))))
        if mode == "reset":
            for conn in self._open_conns():
                a, b = conn.names()
                if not self._same_side(a, b):
                    self._break(conn, silent=False, why="partition")

    def heal(self) -> None:
        """End the partition and every one-way block (:meth:`block`): stalled links flow
        again, dials succeed again. Isolated nodes stay isolated (:meth:`reconnect`)."""
        if self._groups is None and not self._blocked:
            return
        self._groups = None
        self._everywhere = frozenset()
        self._blocked.clear()
        self._note("heal", "", "")
        self._release()

    def block(self, src: str, dst: str) -> None:
        """A one-way partition: bytes from ``src`` no longer reach ``dst`` (``src`` still
        hears ``dst``). Links between them stall in that direction only; new ones cannot
        open (a QUIC handshake needs both ways). Until :meth:`unblock` or :meth:`heal`."""
        for name in (src, dst):
            if name not in self.nodes:
                raise KeyError(name)
        if src == dst:
            raise ValueError("a node cannot be blocked from itself")
        self._blocked.add((src, dst))
        self._note("block", f"{src}->{dst}", "")

    def unblock(self, src: str, dst: str) -> None:
        """End :meth:`block` ``(src, dst)``: the held bytes flow again."""
        if (src, dst) in self._blocked:
            self._blocked.discard((src, dst))
            self._note("unblock", f"{src}->{dst}", "")
            self._release()

    def isolate(self, name: str, mode: str = "reset") -> None:
        """Cut ``name`` off from every other node while it keeps running (and writing):
        offline authoring, unlike :meth:`crash`. ``mode`` as for :meth:`partition`.
        Until :meth:`reconnect`."""
        if mode not in ("reset", "stall"):
            raise ValueError(f"unknown isolation mode {mode!r}")
        if name not in self.nodes:
            raise KeyError(name)
        self._isolated.add(name)
        self._note("isolate", name, mode)
        if mode == "reset":
            for conn in self._open_conns():
                if name in conn.names():
                    self._break(conn, silent=False, why="isolated")

    def reconnect(self, name: str) -> None:
        """End :meth:`isolate`: ``name``'s stalled links flow again, its dials succeed."""
        if name in self._isolated:
            self._isolated.discard(name)
            self._note("reconnect", name, "")
            self._release()

    def set_link(self, a: str, b: str, *, latency: Latency | None = None, loss: float = 0.0,
                 both_ways: bool = True) -> None:
        """Per-link faults from ``a`` to ``b`` (and back unless ``both_ways=False``):
        ``latency`` replaces the network's, ``loss`` adds stalls (see :class:`LinkFaults`).
        Both None/0: back to the network's faults."""
        for name in (a, b):
            if name not in self.nodes:
                raise KeyError(name)
        if not 0.0 <= loss <= 1.0:
            raise ValueError("loss must be in 0..1")
        faults = LinkFaults(latency, loss)
        for pair in ((a, b), (b, a)) if both_ways else ((a, b),):
            if latency is None and not loss:
                self._link_faults.pop(pair, None)
            else:
                self._link_faults[pair] = faults
        self._note("set-link", f"{a}{'<' if both_ways else ''}->{b}",
                   f"loss={loss:g} latency={'net' if latency is None else latency}")

    def fired(self, fault: str, between: tuple[str, str] | None = None) -> int:
        """How often ``fault`` (a :data:`FAULT_COUNTERS` name) happened: in all, or on the
        links between the two nodes ``between`` (either direction)."""
        if fault not in FAULT_COUNTERS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULT_COUNTERS)})")
        if between is None:
            return int(getattr(self.stats, FAULT_COUNTERS[fault]))
        a, b = between
        return sum(self.link_stats.get(pair, {}).get(fault, 0) for pair in ((a, b), (b, a)))

    def _count(self, fault: str, src: str, dst: str) -> None:
        counts = self.link_stats.setdefault((src, dst), {})
        counts[fault] = counts.get(fault, 0) + 1

    def _release(self) -> None:
        """Restart the pipes that were held and no longer are."""
        for conn in self._open_conns():
            for src in sorted(conn.pipes):
                pipe = conn.pipes[src]
                if pipe.items and not pipe.pumping and not self._pipe_stalled(conn, src):
                    base = self.clock.now + self._latency(src[0], pipe.dst[0])
                    pipe.items = deque((max(at, base), item, label)
                                       for at, item, label in pipe.items)
                    pipe.last_arrival = max(pipe.last_arrival, base)
                    self._start_pump(conn, src)

    def break_link(self, a: str, b: str, *, silent: bool = False) -> int:
        """Break every open link between ``a`` and ``b``; returns how many."""
        broken = 0
        for conn in self._open_conns():
            if sorted(conn.names()) == sorted((a, b)):
                self._break(conn, silent=silent, why="break_link")
                broken += 1
        return broken

    def crash(self, name: str, *, lose_own_last: int = 0) -> dict[bytes, int]:
        """Stop ``name`` without a goodbye: its peers notice only by idle timeout.

        ``lose_own_last=n``: the crash also loses the newest ``n`` envelopes *this node
        wrote* in each channel from its store (a disk that acknowledged writes it never
        made durable); envelopes of other authors stay, and so do copies its peers (or a
        bootstrap server) already received. The channel's genesis is never lost. Returns,
        per channel, how many envelopes the store lost (channels that lost none are left
        out). A node that is already down cannot crash again (``SimError``).
        """
        node = self.nodes[name]
        if lose_own_last < 0:
            raise ValueError("lose_own_last must not be negative")
        if not node.alive:
            if lose_own_last:
                raise self.fail(f"{name} is already down; it cannot lose writes in a crash")
            return {}
        lost = self._lose_own(node, lose_own_last) if lose_own_last else {}
        node.lost_writes |= bool(lost)
        node.alive = False
        node.deadline = None
        self._note("crash", name, "")
        for conn in self._open_conns():
            if name in conn.names():
                conn.silent = True
                conn.open_ends = {e for e in conn.open_ends if e[0] != name}
                for pipe in conn.pipes.values():
                    pipe.items.clear()
        return lost

    def _lose_own(self, node: SimNode, count: int) -> dict[bytes, int]:
        """Drop the newest ``count`` envelopes ``node`` authored from each channel's log
        on its disk (the genesis stays)."""
        me, device = node.identity.public_key.raw, node.identity.device_salt
        lost: dict[bytes, int] = {}
        for cid in sorted(node.disk.envelopes):
            log = node.disk.envelopes[cid]
            topic = channel_topic(cid)
            own = [i for i, (_, raw) in enumerate(log) if i > 0
                   and _authored_by(raw, topic, me, device)]
            drop = set(own[-count:])
            if not drop:
                continue
            for i in sorted(drop):
                node.disk.envelope_ids[cid].discard(log[i][0])
            node.disk.envelopes[cid] = [e for i, e in enumerate(log) if i not in drop]
            lost[cid] = len(drop)
        self._note("lose-writes", node.name, ",".join(
            f"{cid.hex()[:12]}:{n}" for cid, n in lost.items()) or "none")
        return lost

    def restart(self, name: str, *, lose_last: int = 0) -> None:
        """Start ``name`` again from what it persisted (channels, envelopes, peers).

        ``lose_last`` drops that many of the newest stored envelopes per channel
        first: a crash that lost writes still in flight.
        """
        node = self.nodes[name]
        if node.alive:
            self.crash(name)
        if lose_last:
            for cid, log in node.disk.envelopes.items():
                for env_id, _ in log[max(1, len(log) - lose_last):]:  # genesis survives
                    node.disk.envelope_ids[cid].discard(env_id)
                del log[max(1, len(log) - lose_last):]
        node.incarnation += 1
        node.alive = True
        node.core = self._new_core(name, node.identity, node.incarnation, node.servers,
                                   node.store)
        self._drive(node)
        self._note("restart", name, str(node.incarnation))
        disk = node.disk
        stored = self._stored(node)
        if stored:
            # a loss of stored writes is what a power cut does: the runtime then starts
            # with every channel's own chain head unsure (design.md §10.5)
            self.request(name, ChannelsLoaded(stored,
                                              head_unsure=bool(lose_last) or node.lost_writes))
        node.lost_writes = False
        if disk.peers:
            self.request(name, WantedPeersLoaded(tuple(sorted(disk.peers.items()))))
        self._start(node)

    @staticmethod
    def _stored(node: SimNode) -> tuple[StoredChannel, ...]:
        disk = node.disk
        return tuple(
            StoredChannel(channel=cid, name=cname, key=key,
                          envelopes=tuple(raw for _, raw in disk.envelopes.get(cid, ())),
                          secrets=tuple(sorted(disk.secrets.get(cid, {}).items())))
            for cid, (cname, key) in sorted(disk.channels.items()))

    # --- hostile members -------------------------------------------------------------------

    def hostile(self, name: str, channel: bytes, kind: str, *, text: str = "hostile",
                to: Sequence[str] | None = None, age_ms: int = BACKDATE_MS) -> str:
        """``name`` misbehaves in ``channel``; returns the id of the message involved ("" for
        garbage). ``kind`` (see :data:`HOSTILE_KINDS`):

        * ``forged``: an envelope of the node's next seq whose signature does not verify;
        * ``backdated``: a correctly signed post stamped ``age_ms`` in the past;
        * ``equivocate``: the node posts ``text``, and a second, different envelope for
          the same seq (written by a copy of the node restored from its store) goes out too;
        * ``garbage``: bytes that are no envelope at all;
        * ``bad_change``: a signed, correctly encrypted envelope whose change is not one.

        Injected envelopes go, in an ``envelopes`` frame, on every open link of ``name``
        (or those to ``to``) as if its core had sent them; ``backdated`` goes through its
        core. Each frame counts in :attr:`Stats.hostile`.
        """
        if kind not in HOSTILE_KINDS:
            raise ValueError(f"unknown hostile kind {kind!r} (known: {', '.join(HOSTILE_KINDS)})")
        node = self.nodes[name]
        if not node.alive:
            raise self.fail(f"{name} is down")
        self._note("hostile", name, kind)
        if kind == "backdated":
            self.stats.hostile += 1
            return self.post(name, channel, text, wall_ms=self.wall_ms(name) - age_ms)
        rng = derive_rng(self.seed, "hostile", name, self.stats.hostile, len(self.trace))
        msg_id = ""
        if kind == "garbage":
            raws = [rng.randbytes(GARBAGE_BYTES)]
        elif kind == "bad_change":
            raws = [self._bad_change(node, channel, text, rng)]
        else:
            raws, msg_id = self._fork_post(node, channel, text, rng)
            if kind == "forged":  # only the post, broken: the copy's other writes would fork
                raws = [raws[-1][:-1] + bytes([raws[-1][-1] ^ 0x01])]
            else:
                self.post(name, channel, f"{text} (the other branch)")
        self.inject(name, channel, raws, to=to)
        return msg_id

    def inject(self, name: str, channel: bytes, raws: Sequence[bytes],
               to: Sequence[str] | None = None) -> int:
        """Put ``raws`` on the wire from ``name`` in one ``envelopes`` frame per open link
        that shares ``channel`` (only links to ``to`` if given); returns how many."""
        sent = 0
        for link_id, link in self._open_links(name):
            peer = self._name_by_did(link.peer_did or "")
            if peer is None or (to is not None and peer not in to):
                continue
            end = (name, link_id)
            conn = self._conns.get(end)
            if conn is None or end not in conn.open_ends:
                continue
            frame = Envelopes(topic=topic_for(channel, link.session_id), items=tuple(raws))
            self.stats.hostile += 1
            self._count("hostile", name, peer)
            self._transmit(end, encode_frame(frame))
            sent += 1
        return sent

    def _open_links(self, name: str) -> list[tuple[int, Link]]:
        # NodeCore has no public accessor for its links; a hostile peer needs their
        # session ids (the per-link channel topics). Read-only.
        links = self.nodes[name].core._links
        return [(i, link) for i, link in sorted(links.items()) if link.is_open]

    def _clone(self, node: SimNode, rng: random.Random) -> NodeCore:
        """A second core of ``node``'s device, restored from its store (a forked copy)."""
        clone = NodeCore(node.identity, self.config, rng, agent="sim-clone",
                         bootstrap=tuple(self.nodes[s].address for s in node.servers))
        if self.on_new_core is not None:
            self.on_new_core(node.name, clone)
        stored = self._stored(node)
        if stored:
            clone.handle(ChannelsLoaded(stored), self.clock.now)
        return clone

    def _fork_post(self, node: SimNode, channel: bytes, text: str, rng: random.Random
                   ) -> tuple[list[bytes], str]:
        clone = self._clone(node, rng)
        rid = self._request_id()
        effects = clone.handle(SendRequested(rid, channel, text, self.wall_ms(node.name)),
                               self.clock.now)
        raws = [raw for e in effects if isinstance(e, PersistEnvelopes) and e.channel == channel
                for _, raw in e.items]
        answer = next((e for e in effects if isinstance(e, ChannelAnswer)
                       and e.request_id == rid), None)
        if not raws or answer is None or answer.result is None:
            why = answer.error if answer is not None else "no answer"
            raise self.fail(f"{node.name}: a forked copy cannot write: {why}")
        return raws, str(answer.result["id"])

    def _bad_change(self, node: SimNode, channel: bytes, text: str, rng: random.Random
                    ) -> bytes:
        state = self._clone(node, rng).hub.get(channel)
        wall = self.wall_ms(node.name)
        op = {"op": "post", "id": make_ulid(wall, rng.randbytes(10)), "text": text,
              "reply_to": "", "ts": wall}
        # ChannelState has no public way to seal an arbitrary change (a hostile peer's
        # whole point); the copy is thrown away.
        env = state.writer.seal(op, rng.randbytes(48), rng.randbytes, now_ms=wall)
        return env.encode()

    # --- running -------------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Run everything due up to time ``t``, then set the clock to ``t``."""
        while self._step(t):
            pass
        if t > self.clock.now:
            self.clock.advance_to(t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.clock.now + dt)

    def run_until_quiet(self, idle: float | None = None, timeout: float = 3600.0) -> float:
        """Run until nothing but keepalives and failing dials happened for ``idle`` seconds.

        ``idle`` defaults to twice (longest reconnect backoff + dial timeout), so
        any redial that was due has happened. Returns the time activity stopped.
        Raises :class:`SimError` if the network is still busy after ``timeout``.
        """
        if idle is None:
            idle = 2 * (self.config.reconnect_max + self.config.dial_timeout)
        limit = self.clock.now + timeout
        while True:
            target = self._last_activity + idle
            if target > limit:
                raise self.fail(f"network not quiet after {timeout:g} s "
                                f"(last activity at {self._last_activity:.3f}); "
                                f"recent trace:\n{self.format_trace(-30)}")
            self.run_until(target)
            if self._last_activity + idle <= self.clock.now:
                return self._last_activity

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 600.0,
                 what: str = "condition") -> None:
        """Run event by event until ``predicate()`` holds; SimError after ``timeout`` seconds."""
        limit = self.clock.now + timeout
        while not predicate():
            if not self._step(limit):
                raise self.fail(f"timed out after {timeout:g} s waiting for {what}")

    def synced(self, name: str, channel: bytes) -> bool:
        """Whether ``name`` holds ``channel``, has its genesis and (with group keys) has been
        admitted: it holds a valid epoch, so it can post."""
        state = self.nodes[name].core.hub.channels.get(channel)
        if state is None or state.genesis_id is None:
            return False
        return not state.e2ee or self.nodes[name].did in state.group.view().members

    # --- channel views ----------------------------------------------------------------------------

    def history(self, name: str, channel: bytes) -> list[MessageView]:
        """``name``'s history of ``channel`` (computed once until anything happens: the
        assertions at the end of a run ask for every node's several times)."""
        state = self.nodes[name].core.hub.get(channel)
        stamp = (self.stats.events, len(state.log), id(state))
        cached = self._histories.get((name, channel))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        views = state.history()
        self._histories[(name, channel)] = (stamp, views)
        return views

    def members(self, channel: bytes) -> list[str]:
        """Names of live nodes that hold ``channel``."""
        return [n for n, node in sorted(self.nodes.items())
                if node.alive and channel in node.core.hub.channels]

    def replica_lines(self, name: str, channel: bytes) -> list[str]:
        """A readable, comparable rendering of one replica: history, vector, log, pending."""
        state = self.nodes[name].core.hub.get(channel)
        lines = [f"msg {m.id} {self._who(m.author)} {m.text!r} reply={m.reply_to or '-'} "
                 f"edited={m.edited} deleted={m.deleted} reactions={sorted(m.reactions.items())}"
                 for m in self.history(name, channel)]
        lines += [f"vector {self._who(author)}/{device.hex()[:8]} = {seq}"
                  for (author, device), seq in sorted(state.vector.items())]
        lines.append(f"envelopes {len(state.envs)} digest "
                     f"{hashlib.sha256(b''.join(sorted(state.envs))).hexdigest()[:16]}")
        lines.append(f"pending {len(state.pending)}")
        return lines

    def assert_converged(self, channel: bytes, names: Iterable[str] | None = None) -> None:
        """Every member (or each of ``names``) holds the identical replica of ``channel``:
        the same messages (ids, authors, texts, order), vectors and envelope set, and
        nothing left pending. Raises :class:`SimError` with a diff and the seed."""
        members = sorted(names) if names is not None else self.members(channel)
        if not members:
            raise self.fail(f"no node holds channel {channel.hex()[:12]}")
        missing = [n for n in members if channel not in self.nodes[n].core.hub.channels]
        if missing:
            raise self.fail(f"{', '.join(missing)} do not hold channel {channel.hex()[:12]}")
        reference = members[0]
        expected = self.replica_lines(reference, channel)
        problems: list[str] = []
        for name in members[1:]:
            actual = self.replica_lines(name, channel)
            if actual != expected:
                diff = list(difflib.unified_diff(expected, actual, reference, name, n=1,
                                                 lineterm=""))
                shown = diff[:60] + ([f"... {len(diff) - 60} more diff lines"]
                                     if len(diff) > 60 else [])
                problems.append("\n".join(shown))
        pending = [n for n in members if self.nodes[n].core.hub.get(channel).pending]
        if problems or pending:
            counts = ", ".join(f"{n}: {len(self.history(n, channel))} msgs" for n in members)
            raise self.fail(f"channel {channel.hex()[:12]} has not converged ({counts}; "
                            f"pending at {pending or 'none'}):\n" + "\n".join(problems))

    def _who(self, did: str) -> str:
        name = self._name_by_did(did)
        return did[:20] if name is None else name

    # --- inspection ----------------------------------------------------------------------------

    def links(self) -> list[tuple[str, str]]:
        """(client, server) names of links open at both ends, sorted."""
        return sorted(c.names() for c in self._open_conns() if len(c.open_ends) == 2)

    def peer_end(self, name: str, link_id: int) -> tuple[str, int]:
        """The other end ``(node, link id)`` of ``name``'s link ``link_id``."""
        return self._conns[(name, link_id)].other((name, link_id))

    def format_trace(self, start: int = 0, end: int | None = None) -> str:
        return "\n".join(" ".join(entry) for entry in self.trace[start:end])

    def trace_digest(self) -> str:
        h = hashlib.sha256()
        for entry in self.trace:
            h.update("\x1f".join(entry).encode())
            h.update(b"\x1e")
        return h.hexdigest()

    # --- the event loop ---------------------------------------------------------------------------

    def _schedule(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, action))

    def _next_timer(self) -> tuple[float, SimNode] | None:
        best: tuple[float, SimNode] | None = None
        for name in sorted(self.nodes):
            node = self.nodes[name]
            if node.alive and node.deadline is not None \
                    and (best is None or node.deadline < best[0]):
                best = (node.deadline, node)
        return best

    def _step(self, until: float) -> bool:
        """Run the next queued action or timer if due by ``until``; False if none is."""
        t_queue = self._queue[0][0] if self._queue else math.inf
        timer = self._next_timer()
        t_timer = timer[0] if timer is not None else math.inf
        t = min(t_queue, t_timer)
        if t > until or t == math.inf:
            return False
        self.stats.events += 1
        if self.stats.events > self.max_events:
            raise self.fail(f"more than {self.max_events} events: livelock?")
        if t > self.clock.now:
            self.clock.advance_to(t)
        if t_queue <= t_timer:
            _, _, action = heapq.heappop(self._queue)
            action()
        else:
            assert timer is not None
            self._fire(timer[1])
        return True

    def _violation(self, what: str) -> None:
        """A core did something a runtime tolerates but should not happen."""
        self.violations.append(f"t={self.clock.now:.6f} {what}")
        if self.strict:
            raise self.fail(what)

    def _note(self, kind: str, a: str, b: str) -> None:
        self._last_activity = self.clock.now
        self.trace.append((f"{self.clock.now:.6f}", "*", kind, a, b))

    def _drive(self, node: SimNode) -> Driver[Event, Effect]:
        """A new driver loop for ``node``'s (new) core, armed."""
        def arm(deadline: float | None) -> None:
            node.deadline = deadline

        def spun(what: str) -> None:
            raise self.fail(f"{node.name}: {what}")

        node.driver = Driver(node.core, lambda effect: self._carry_out(node, effect), arm,
                             TimerExpired, spun)
        node.driver.rearm()
        return node.driver

    def _driver(self, node: SimNode) -> Driver[Event, Effect]:
        return node.driver if node.driver is not None and node.driver.machine is node.core \
            else self._drive(node)

    def _handle(self, node: SimNode, event: Event, label: str = "") -> list[Effect]:
        self.trace.append((f"{self.clock.now:.6f}", node.name, *self._event_entry(event, label)))
        driver = self._driver(node)
        try:
            return driver.dispatch(event, self.clock.now)
        except SimError:
            raise
        except Exception as exc:
            raise self.fail(f"{node.name}: core raised {type(exc).__name__}: {exc} on "
                            f"{' '.join(self.trace[-1][2:])}") from exc

    def _fire(self, node: SimNode) -> list[Effect]:
        """``node``'s timer is due: its driver fires it (and checks it moves on)."""
        self.trace.append((f"{self.clock.now:.6f}", node.name, "timer", ""))
        driver = self._driver(node)
        try:
            return driver.fire(self.clock.now)
        except SimError:
            raise
        except Exception as exc:
            raise self.fail(f"{node.name}: core raised {type(exc).__name__}: {exc} on "
                            "timer") from exc

    def _event_entry(self, event: Event, label: str) -> tuple[str, str]:
        if isinstance(event, DataReceived):
            digest = hashlib.blake2b(event.data, digest_size=4).hexdigest()
            return "data", f"L{event.link_id} {len(event.data)}B {digest} {label}"
        if isinstance(event, TimerExpired):
            return "timer", ""
        if isinstance(event, LinkEstablished):
            self._last_activity = self.clock.now
            side = "out" if event.outbound else "in"
            return "established", f"L{event.link_id} {side} {label} dial={event.dial_id}"
        if isinstance(event, LinkLost):
            self._last_activity = self.clock.now
            return "lost", f"L{event.link_id} {event.reason}"
        if isinstance(event, DialFailed):
            return "dial-failed", f"D{event.dial_id} {event.reason}"
        if isinstance(event, SendRequested):
            return "send", event.text[:40]
        return type(event).__name__, ""

    def _carry_out(self, node: SimNode, effect: Effect) -> None:
        disk = node.disk
        match effect:
            case Transmit():
                self._transmit((node.name, effect.link_id), effect.data)
            case CloseLink():
                self._close((node.name, effect.link_id), effect)
            case Dial():
                self._dial(node, effect)
            case ChannelAnswer():
                self.answers[effect.request_id] = effect
            case ConnectFinished():
                self.connects[effect.request_id] = effect
            case PersistChannel():
                disk.channels[effect.channel] = (effect.name, effect.key)
            case PersistEpochKey():
                disk.secrets.setdefault(effect.channel, {})[effect.epoch] = effect.secret
            case ForgetEpochKey():
                disk.secrets.get(effect.channel, {}).pop(effect.epoch, None)
            case PersistEnvelopes():
                ids = disk.envelope_ids.setdefault(effect.channel, set())
                log = disk.envelopes.setdefault(effect.channel, [])
                for env_id, raw in effect.items:
                    if env_id not in ids:
                        ids.add(env_id)
                        log.append((env_id, raw))
            case PersistCursor():
                disk.cursors[(effect.server_did, effect.topic)] = effect.cursor
            case PersistPrekey():
                disk.prekeys[effect.prekey_id] = (effect.record, effect.private,
                                                  effect.expires_ms)
            case SavePeer():
                disk.peers[effect.address] = effect.did
            case ForgetPeer():
                disk.peers.pop(effect.address, None)
            case PeerConnected() | PeerDisconnected():
                sign = "+" if isinstance(effect, PeerConnected) else "-"
                self.trace.append((f"{self.clock.now:.6f}", node.name, f"peer{sign}",
                                   self._who(effect.did), f"L{effect.link_id}"))
            case PersistSnapshot() | IndexMessages() | PingFinished() | DisconnectFinished() \
                    | SyncChanged():
                pass  # replay from the envelopes is the sim's restart; no search, no pings
            case _:
                assert_never(effect)

    # --- links -----------------------------------------------------------------------------------

    def _latency(self, src: str = "", dst: str = "") -> float:
        own = self._link_faults.get((src, dst))
        model = own.latency if own is not None and own.latency is not None \
            else self.faults.latency
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

    def _reachable(self, a: str, b: str) -> bool:
        if not (self.nodes[a].alive and self.nodes[b].alive):
            return False
        return self._hears(a, b) and self._hears(b, a)

    def _pipe_stalled(self, conn: _Conn, src: End) -> bool:
        return not self._hears(src[0], conn.pipes[src].dst[0])

    def _open_conns(self) -> list[_Conn]:
        seen: dict[int, _Conn] = {}
        for conn in self._conns.values():
            if not conn.dead:
                seen[conn.serial] = conn
        return [seen[s] for s in sorted(seen)]

    def _dial(self, node: SimNode, dial: Dial) -> None:
        self.stats.dials += 1
        incarnation, started = node.incarnation, self.clock.now
        target = self._by_address.get(dial.address)

        def fail(reason: str) -> None:
            if node.alive and node.incarnation == incarnation:
                self.stats.dial_failures += 1
                self._handle(node, DialFailed(dial.dial_id, reason))

        def complete() -> None:
            if not (node.alive and node.incarnation == incarnation):
                return
            if target is None or not self._reachable(node.name, target):
                self._schedule(max(self.clock.now, started + dial.timeout),
                               lambda: fail("timed out"))
                return
            self._establish(node.name, target, dial.dial_id)

        if target is not None and self._reachable(node.name, target):
            rtt = self._latency(node.name, target) + self._latency(target, node.name)
            if rtt < dial.timeout:
                self._schedule(self.clock.now + rtt, complete)
                return
        self._schedule(self.clock.now + dial.timeout, lambda: fail("timed out"))

    def _establish(self, client: str, server: str, dial_id: int | None) -> None:
        c_node, s_node = self.nodes[client], self.nodes[server]
        self._serial += 1
        serial = self._serial
        client_end = (client, c_node.next_link_id)
        c_node.next_link_id += 1
        server_end = (server, s_node.next_link_id)
        s_node.next_link_id += 1
        fingerprint = hashlib.sha256(b"p2pchat-sim-cert:%d:%d" % (self.seed, serial)).digest()
        conn = _Conn(serial, client_end, server_end, fingerprint,
                     {client_end: _Pipe(server_end, last_arrival=self.clock.now),
                      server_end: _Pipe(client_end, last_arrival=self.clock.now)},
                     {client_end, server_end})
        self._conns[client_end] = self._conns[server_end] = conn
        self.stats.links += 1
        self.ever_linked.add((min(client, server), max(client, server)))
        ephemeral = (c_node.address[0], 40_000 + client_end[1] % 20_000)
        self._handle(s_node, LinkEstablished(server_end[1], False, ephemeral, fingerprint),
                     f"from {client}")
        if client_end in conn.open_ends:
            self._handle(c_node, LinkEstablished(
                client_end[1], True, s_node.address, fingerprint,
                peer_cert_key=s_node.identity.public_key.raw, dial_id=dial_id), f"to {server}")
        lifetime = self.faults.link_lifetime
        if lifetime is not None:
            self._schedule(self.clock.now + self._rng.expovariate(1.0 / lifetime),
                           lambda: self._random_break(conn))

    def _random_break(self, conn: _Conn) -> None:
        if conn.dead or self.faults.link_lifetime is None:
            return
        self._break(conn, silent=self._rng.random() < self.faults.silent_break, why="fault")

    def _break(self, conn: _Conn, *, silent: bool, why: str) -> None:
        if conn.dead:
            return
        a, b = conn.names()
        self._note("black-hole" if silent else "reset", f"{a}-{b}#{conn.serial}", why)
        for pipe in conn.pipes.values():
            pipe.items.clear()
        if silent:
            conn.silent = True
            self.stats.black_holes += 1
            return
        conn.broken = True
        self.stats.resets += 1
        self._count("reset", a, b)
        for end in sorted(conn.open_ends):
            reason = f"connection reset ({why})"
            self._schedule(self.clock.now, self._lost_action(conn, end, reason))

    def _lost_action(self, conn: _Conn, end: End, reason: str) -> Callable[[], None]:
        return lambda: self._tell_lost(conn, end, reason)

    def _tell_lost(self, conn: _Conn, end: End, reason: str) -> None:
        if end not in conn.open_ends:
            return
        conn.open_ends.discard(end)
        conn.why[end] = f"told LinkLost: {reason}"
        node = self.nodes[end[0]]
        if node.alive:
            self._handle(node, LinkLost(end[1], reason))

    def _close(self, end: End, effect: CloseLink) -> None:
        conn = self._conns.get(end)
        if conn is None:
            raise self.fail(f"{end[0]} closes link {end[1]}, which the network never opened")
        if end not in conn.open_ends:
            return
        self.stats.closes += 1
        conn.open_ends.discard(end)
        conn.why[end] = f"it closed the link: {effect.reason}"
        self._push(conn, end, _Lost(f"closed by peer: {effect.reason} (code {int(effect.code)})"),
                   "close")

    def _transmit(self, src: End, data: bytes) -> None:
        conn = self._conns.get(src)
        if conn is None:
            raise self.fail(f"{src[0]} transmits on link {src[1]}, which the network never opened")
        if src not in conn.open_ends:
            # The QUIC transport ignores sends on a closed link; so do we, but take note.
            how = conn.why.get(src, "?")
            self._violation(f"{src[0]} transmits on link {src[1]} after it was closed ({how})")
            return
        self.stats.transmits += 1
        if self.on_transmit is not None:
            self.on_transmit(src[0], src[1], data)
        self.stats.bytes += len(data)
        frames = _frames(data)
        pipe = conn.pipes[src]
        if frames is None:
            pipe.aligned = False
        label = _describe(frames)
        if frames is None or any(tag not in _KEEPALIVE for tag, _ in frames):
            self._last_activity = self.clock.now
        envelopes_only = pipe.aligned and bool(frames) and all(
            tag == "envelopes" for tag, _ in frames or ())
        faults = self.faults
        if envelopes_only and faults.frame_reorder and self._rng.random() < faults.frame_reorder:
            self.stats.reordered += 1
            self._count("reorder", src[0], conn.other(src)[0])
            self._side_delivery(conn, src, data, label + " (held back)")
            return
        self._push(conn, src, data, label)
        if envelopes_only and faults.frame_duplicate \
                and self._rng.random() < faults.frame_duplicate:
            self.stats.duplicated += 1
            self._count("duplicate", src[0], conn.other(src)[0])
            self._side_delivery(conn, src, data, label + " (duplicate)")

    def _push(self, conn: _Conn, src: End, item: _Item, label: str) -> None:
        """Queue ``item`` on the pipe from ``src``: FIFO, after everything already in it."""
        if conn.broken or conn.silent:
            return
        pipe = conn.pipes[src]
        if pipe.dst not in conn.open_ends:
            return
        now = self.clock.now
        a, b = src[0], pipe.dst[0]
        own = self._link_faults.get((a, b))
        if (self.faults.stall_prob and self._rng.random() < self.faults.stall_prob) or \
                (own is not None and own.loss and self._rng.random() < own.loss):
            self.stats.stalls += 1
            self._count("loss", a, b)
            pipe.last_arrival = max(pipe.last_arrival, now + self._rng.uniform(
                *self.faults.stall_time))
        arrival = max(now + self._latency(a, b), pipe.last_arrival)
        pipe.last_arrival = arrival
        pipe.items.append((arrival, item, label))
        if self._pipe_stalled(conn, src):
            self.stats.held += 1
            self._count("held", a, b)
        elif not pipe.pumping:
            self._start_pump(conn, src)

    def _start_pump(self, conn: _Conn, src: End) -> None:
        pipe = conn.pipes[src]
        pipe.pumping = True
        self._schedule(pipe.items[0][0], lambda: self._pump(conn, src))

    def _pump(self, conn: _Conn, src: End) -> None:
        pipe = conn.pipes[src]
        pipe.pumping = False
        if conn.broken or conn.silent or pipe.dst not in conn.open_ends:
            pipe.items.clear()
            return
        if self._pipe_stalled(conn, src):
            return  # heal(), unblock() or reconnect() restarts the pump
        now = self.clock.now
        node = self.nodes[pipe.dst[0]]
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
        if self.faults.split_prob and len(data) > 1 and self._rng.random() < self.faults.split_prob:
            self.stats.splits += 1
            cuts = sorted({self._rng.randrange(1, len(data))
                           for _ in range(self._rng.randint(1, 3))})
            bounds = [0, *cuts, len(data)]
            pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
        for index, piece in enumerate(pieces):
            if conn.dead or dst not in conn.open_ends or not node.alive:
                return
            part = label if len(pieces) == 1 else f"{label} ({index + 1}/{len(pieces)})"
            if self.on_deliver is not None:
                self.on_deliver(dst[0], dst[1], piece)
            self._handle(node, DataReceived(dst[1], piece), part)

    def _side_delivery(self, conn: _Conn, src: End, data: bytes, label: str) -> None:
        """Deliver whole frames outside the FIFO (frame duplicate / reorder faults)."""
        pipe = conn.pipes[src]
        at = max(self.clock.now, pipe.last_arrival) + self._rng.uniform(*self.faults.reorder_delay)

        def deliver() -> None:
            if conn.dead or pipe.dst not in conn.open_ends:
                return
            if self._pipe_stalled(conn, src):
                self._push(conn, src, data, label)  # keep frame boundaries: join the queue
                return
            self._deliver(conn, self.nodes[pipe.dst[0]], pipe.dst, data, label)

        self._schedule(at, deliver)
