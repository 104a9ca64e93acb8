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

*Where it lives.* This module is the façade: :class:`SimNetwork` and the names
tests import. It owns building nodes and bootstrap servers, crashes and
restarts, and carrying out the effects the cores return; the rest is in sibling
modules: the models (:mod:`p2pchat.testing.sim_model`: clock, latency, faults,
counters), the nodes and their disks (:mod:`p2pchat.testing.sim_node`), the
kernel and event loop (:mod:`p2pchat.testing.sim_loop`), the links and
reachability (:mod:`p2pchat.testing.sim_links`), the user's requests
(:mod:`p2pchat.testing.sim_requests`), hostile members
(:mod:`p2pchat.testing.sim_hostile`) and the replica views and convergence
checks (:mod:`p2pchat.testing.sim_observe`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import assert_never

from p2pchat.channel.envelope import channel_topic
from p2pchat.channel.state import MessageView
from p2pchat.core import NodeConfig, NodeCore
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelsLoaded,
    CloseLink,
    ConnectFinished,
    Dial,
    DisconnectFinished,
    Effect,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
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
    Started,
    SyncChanged,
    Transmit,
    WantedPeersLoaded,
)
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity
from p2pchat.testing.blindstore import BlindStore, BlindStoreHub
from p2pchat.testing.sim_hostile import BACKDATE_MS, GARBAGE_BYTES, HOSTILE_KINDS, _Hostile
from p2pchat.testing.sim_links import _Links
from p2pchat.testing.sim_model import (
    FAULT_COUNTERS,
    SIM_PORT,
    WALL_BASE_MS,
    Constant,
    End,
    FakeClock,
    Faults,
    Latency,
    LinkFaults,
    LogNormal,
    SimError,
    Stats,
    Uniform,
    derive_rng,
    seed_from_env,
)
from p2pchat.testing.sim_node import SimNode, lose_own, stored_channels
from p2pchat.testing.sim_observe import _Views
from p2pchat.testing.sim_requests import SimRequests

__all__ = [
    "BACKDATE_MS",
    "FAULT_COUNTERS",
    "GARBAGE_BYTES",
    "HOSTILE_KINDS",
    "SIM_PORT",
    "WALL_BASE_MS",
    "Constant",
    "End",
    "FakeClock",
    "Faults",
    "Latency",
    "LinkFaults",
    "LogNormal",
    "SimError",
    "SimNetwork",
    "SimNode",
    "Stats",
    "Uniform",
    "derive_rng",
    "seed_from_env",
]


class SimNetwork(SimRequests):
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
        super().__init__(seed, config=config, faults=faults, clock=clock,
                         clock_skew_ms=clock_skew_ms, max_events=max_events, strict=strict)
        self._wire = _Links(self)
        self._views = _Views(self)
        self._hostile = _Hostile(self, self._wire)
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
        self._wire.by_address[address] = name
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
    def link(self, a: str, b: str) -> None:
        """Open a bare transport link from ``a`` to ``b`` (no ``Dial``, so no redial after)."""
        self._last_activity = self.clock.now
        if not self._wire.reachable(a, b):
            raise self.fail(f"{a} cannot reach {b}")
        rtt = self._wire.latency(a, b) + self._wire.latency(b, a)

        def establish() -> None:
            if self._wire.reachable(a, b):
                self._wire.establish(a, b, None)

        self._schedule(self.clock.now + rtt, establish)

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
        self._wire.partition(*groups, mode=mode, everywhere=everywhere)

    def heal(self) -> None:
        """End the partition and every one-way block (:meth:`block`): stalled links flow
        again, dials succeed again. Isolated nodes stay isolated (:meth:`reconnect`)."""
        self._wire.heal()

    def block(self, src: str, dst: str) -> None:
        """A one-way partition: bytes from ``src`` no longer reach ``dst`` (``src`` still
        hears ``dst``). Links between them stall in that direction only; new ones cannot
        open (a QUIC handshake needs both ways). Until :meth:`unblock` or :meth:`heal`."""
        self._wire.block(src, dst)

    def unblock(self, src: str, dst: str) -> None:
        """End :meth:`block` ``(src, dst)``: the held bytes flow again."""
        self._wire.unblock(src, dst)

    def isolate(self, name: str, mode: str = "reset") -> None:
        """Cut ``name`` off from every other node while it keeps running (and writing):
        offline authoring, unlike :meth:`crash`. ``mode`` as for :meth:`partition`.
        Until :meth:`reconnect`."""
        self._wire.isolate(name, mode)

    def reconnect(self, name: str) -> None:
        """End :meth:`isolate`: ``name``'s stalled links flow again, its dials succeed."""
        self._wire.reconnect(name)

    def set_link(self, a: str, b: str, *, latency: Latency | None = None, loss: float = 0.0,
                 both_ways: bool = True) -> None:
        """Per-link faults from ``a`` to ``b`` (and back unless ``both_ways=False``):
        ``latency`` replaces the network's, ``loss`` adds stalls (see :class:`LinkFaults`).
        Both None/0: back to the network's faults."""
        self._wire.set_link(a, b, latency=latency, loss=loss, both_ways=both_ways)

    def fired(self, fault: str, between: tuple[str, str] | None = None) -> int:
        """How often ``fault`` (a :data:`FAULT_COUNTERS` name) happened: in all, or on the
        links between the two nodes ``between`` (either direction)."""
        if fault not in FAULT_COUNTERS:
            raise ValueError(f"unknown fault {fault!r} (known: {', '.join(FAULT_COUNTERS)})")
        if between is None:
            return int(getattr(self.stats, FAULT_COUNTERS[fault]))
        a, b = between
        return sum(self.link_stats.get(pair, {}).get(fault, 0) for pair in ((a, b), (b, a)))

    def break_link(self, a: str, b: str, *, silent: bool = False) -> int:
        """Break every open link between ``a`` and ``b``; returns how many."""
        return self._wire.break_link(a, b, silent=silent)

    # --- crashes and restarts ----------------------------------------------------------------

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
        for conn in self._wire.open_conns():
            if name in conn.names():
                conn.silent = True
                conn.open_ends = {e for e in conn.open_ends if e[0] != name}
                for pipe in conn.pipes.values():
                    pipe.items.clear()
        return lost

    def _lose_own(self, node: SimNode, count: int) -> dict[bytes, int]:
        lost = lose_own(node, count)
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
        stored = stored_channels(node)
        if stored:
            # a loss of stored writes is what a power cut does: the runtime then starts
            # with every channel's own chain head unsure (design.md §10.5)
            self.request(name, ChannelsLoaded(stored,
                                              head_unsure=bool(lose_last) or node.lost_writes))
        node.lost_writes = False
        if disk.peers:
            self.request(name, WantedPeersLoaded(tuple(sorted(disk.peers.items()))))
        self._start(node)

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
        return self._hostile.hostile(name, channel, kind, text=text, to=to, age_ms=age_ms)

    def inject(self, name: str, channel: bytes, raws: Sequence[bytes],
               to: Sequence[str] | None = None) -> int:
        """Put ``raws`` on the wire from ``name`` in one ``envelopes`` frame per open link
        that shares ``channel`` (only links to ``to`` if given); returns how many."""
        return self._hostile.inject(name, channel, raws, to)

    # --- channel views ----------------------------------------------------------------------------

    def synced(self, name: str, channel: bytes) -> bool:
        """Whether ``name`` holds ``channel``, has its genesis and (with group keys) has been
        admitted: it holds a valid epoch, so it can post."""
        return self._views.synced(name, channel)

    def history(self, name: str, channel: bytes) -> list[MessageView]:
        """``name``'s history of ``channel`` (computed once until anything happens: the
        assertions at the end of a run ask for every node's several times)."""
        return self._views.history(name, channel)

    def members(self, channel: bytes) -> list[str]:
        """Names of live nodes that hold ``channel``."""
        return self._views.members(channel)

    def replica_lines(self, name: str, channel: bytes) -> list[str]:
        """A readable, comparable rendering of one replica: history, vector, log, pending."""
        return self._views.replica_lines(name, channel)

    def assert_converged(self, channel: bytes, names: Iterable[str] | None = None) -> None:
        """Every member (or each of ``names``) holds the identical replica of ``channel``:
        the same messages (ids, authors, texts, order), vectors and envelope set, and
        nothing left pending. Raises :class:`SimError` with a diff and the seed."""
        self._views.assert_converged(channel, names)

    # --- inspection ----------------------------------------------------------------------------

    def links(self) -> list[tuple[str, str]]:
        """(client, server) names of links open at both ends, sorted."""
        return sorted(c.names() for c in self._wire.open_conns() if len(c.open_ends) == 2)

    def peer_end(self, name: str, link_id: int) -> tuple[str, int]:
        """The other end ``(node, link id)`` of ``name``'s link ``link_id``."""
        return self._wire.conns[(name, link_id)].other((name, link_id))

    def _carry_out(self, node: SimNode, effect: Effect) -> None:
        match effect:
            case Transmit():
                self._wire.transmit((node.name, effect.link_id), effect.data)
            case CloseLink():
                self._wire.close((node.name, effect.link_id), effect)
            case Dial():
                self._wire.dial(node, effect)
            case ChannelAnswer():
                self.answers[effect.request_id] = effect
            case ConnectFinished():
                self.connects[effect.request_id] = effect
            case (PersistChannel() | PersistEpochKey() | ForgetEpochKey() | PersistEnvelopes()
                  | PersistCursor() | PersistPrekey() | SavePeer() | ForgetPeer()):
                node.disk.keep(effect)
            case PeerConnected() | PeerDisconnected():
                sign = "+" if isinstance(effect, PeerConnected) else "-"
                self.trace.append((f"{self.clock.now:.6f}", node.name, f"peer{sign}",
                                   self._who(effect.did), f"L{effect.link_id}"))
            case PersistSnapshot() | IndexMessages() | PingFinished() | DisconnectFinished() \
                    | SyncChanged():
                pass  # replay from the envelopes is the sim's restart; no search, no pings
            case _:
                assert_never(effect)
