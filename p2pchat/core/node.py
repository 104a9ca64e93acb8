"""The node's protocol core: links, peers, dialing and reconnects, without I/O.

Theory of operation
-------------------
``NodeCore.handle(event, now) -> [effects]`` is the only way in. The runtime (or
the simulator) feeds it transport events and user requests, carries out the
effects in order, and calls ``handle(TimerExpired(), now)`` once
:meth:`NodeCore.next_deadline` has passed. Time and randomness are inputs, so a
run is reproducible from its event sequence and RNG seed.

Peers the user asked for are *wanted*: an entry per address. A wanted entry is
kept (and redialled with jittered exponential backoff whenever no link to its
DID is open) once it has connected successfully at least once, or when it was
loaded from the store. A first ``connect`` that fails is forgotten again, with
the reason reported to the user.

At most one open link per peer DID. When a second one opens, both sides keep
the same one, so simultaneous dials settle without a round of negotiation:
if both links were dialled by the same side the newer wins (the old one is
probably dead), otherwise the link dialled by the lexicographically smaller DID.
Losing the tie is not a failed dial: a request waiting on a link the peer closed
as a duplicate succeeds through the link that survives (``_lost_before_open``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

from p2pchat.core import clock
from p2pchat.core.batching import WriteBatcher
from p2pchat.core.bootstrap import BootstrapClient
from p2pchat.core.channels import BatchVerifier, ChannelHub, verify_in_order
from p2pchat.core.config import NodeConfig
from p2pchat.core.events import (
    Address,
    ChannelCreateRequested,
    ChannelsLoaded,
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    DataReceived,
    Dial,
    DialFailed,
    DisconnectFinished,
    DisconnectRequested,
    DmRequested,
    Effect,
    Event,
    ForgetPeer,
    JoinRequested,
    LinkEstablished,
    LinkLost,
    MessageOpRequested,
    ModRequested,
    PeerConnected,
    PeerDisconnected,
    PeerDiscovered,
    PingFinished,
    PingRequested,
    RandomSource,
    SavePeer,
    SendRequested,
    ShutdownRequested,
    Started,
    SyncChanged,
    TimerExpired,
    WantedPeersLoaded,
    format_address,
)
from p2pchat.core.link import Link, LinkState
from p2pchat.errors import CloseCode, RemoteProtocolError
from p2pchat.identity import Identity, short_did
from p2pchat.wire import Offer
from p2pchat.wire.frames import NONCE_SIZE, Relay


@dataclass
class _Wanted:
    address: Address
    did: str | None
    persistent: bool
    attempts: int = 0
    next_dial_at: float | None = None
    dial_id: int | None = None
    requests: list[int] = field(default_factory=list)
    #: how the node learnt of this address: manual, invite, stored, mdns, bootstrap
    source: str = "manual"
    #: (DID, reason): this entry's link was closed before it opened (the peer kept
    #: another link to that DID, still in its handshake here); the entry's requests
    #: wait for that link instead of failing with the reason
    parked: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class PeerInfo:
    did: str
    name: str
    address: Address
    outbound: bool
    rtt: float | None
    connected_for: float
    #: how this peer was found (``_Wanted.source``), or ``inbound`` if it dialled us
    found_by: str = "inbound"


class NodeCore:
    """Sans-IO node. See the module docstring."""

    def __init__(
        self, identity: Identity, config: NodeConfig, rng: RandomSource, agent: str = "p2pchat",
        verify_batch: BatchVerifier = verify_in_order, bootstrap: tuple[Address, ...] = (),
    ) -> None:
        self.identity = identity
        self.config = config
        self.agent = agent
        self._rng = rng
        self._links: dict[int, Link] = {}
        self._by_did: dict[str, int] = {}  # the one open link per peer
        self._wanted: dict[Address, _Wanted] = {}
        self._dials: dict[int, Address] = {}
        self._next_dial_id = 1
        self._shutting_down = False
        self._channels_started: set[bytes] = set()
        self._wall_offset_ms = 0
        #: the wall clock is known: from Started, or (a core driven without a runtime,
        #: as in the simulator) from the first request that carries a wall time
        self._wall_known = False
        self._last_now = 0.0
        self.hub = ChannelHub(identity, rng.randbytes, verify_batch)
        #: when app writes are sealed and their pushes leave (one event per user action)
        self.batcher = WriteBatcher()
        self.bootstrap = BootstrapClient(identity, bootstrap)

    # --- queries -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._next_deadline(with_batcher=True)

    def _next_deadline(self, with_batcher: bool) -> float | None:
        times = [d for link in self._links.values() if (d := link.deadline()) is not None]
        if with_batcher and (batch := self.batcher.deadline()) is not None:
            times.append(batch)
        times += [w.next_dial_at for w in self._wanted.values() if w.next_dial_at is not None]
        server = self.bootstrap.next_deadline()
        if server is not None:
            times.append(server)
        keys = self.hub.key_deadline()
        if keys is not None:
            times.append(clock.at_ms(keys - self._wall_offset_ms))
        return min(times, default=None)

    def wants_lag(self) -> bool:
        """Whether the next timer needs to know if a peer lags (a seal may linger)."""
        return self.batcher.sealing()

    def peers(self, now: float) -> list[PeerInfo]:
        out = []
        for did, link_id in sorted(self._by_did.items()):
            link = self._links[link_id]
            assert link.opened_at is not None
            wanted = self._wanted.get(link.address) if link.outbound else None
            found_by = wanted.source if wanted is not None else \
                "manual" if link.outbound else "inbound"
            out.append(
                PeerInfo(did, link.peer_name, link.address, link.outbound, link.rtt,
                         now - link.opened_at, found_by)
            )
        return out

    def link_count(self) -> int:
        return len(self._links)

    def wanted(self) -> list[tuple[Address, str | None]]:
        return sorted((w.address, w.did) for w in self._wanted.values())

    # --- the one entry point ----------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        self._last_now = now
        if not self._wall_known:
            wall = getattr(event, "wall_ms", None)
            if isinstance(wall, int):
                self._wall_offset_ms = wall - clock.ms(now)
                self._wall_known = True
        effects: list[Effect] = []
        if self.hub.holding and not self._keeps_held(event, now):
            # held pushes leave before anything else happens on the links, so frames keep
            # the order they would have had without holding
            effects = self.hub.flush_held()
        effects += self._handle(event, now)
        if self.hub.prekeys_on and self.hub.prekey_work(self._wall_ms(now)) \
                and not isinstance(event, ShutdownRequested):
            if self.hub.holding:  # a prekey goes out at once: what is held goes first
                effects += self.hub.flush_held()
            effects += self.hub.maintain_prekeys(self._wall_ms(now))
        if not isinstance(event, ShutdownRequested):
            effects += self.hub.sweep_epochs(self._wall_ms(now))
        effects += self.hub.dm_relay.after(effects)  # DMs beyond a direct link (§10.15)
        if self.hub.dm_relay.mailbox_new:
            items, self.hub.dm_relay.mailbox_new = self.hub.dm_relay.mailbox_new, []
            effects += self.bootstrap.upload_mailbox(items)
        if self.hub.sync_changed:  # for the runtime's ``sync`` watch events
            changed, self.hub.sync_changed = self.hub.sync_changed, set()
            for channel in sorted(changed):
                progress = self.hub.sync_progress(channel)
                effects.append(SyncChanged(channel, None if progress is None else
                                           (progress.received, progress.expected)))
        if self.hub.own_written:  # own envelopes also go to the bootstrap servers
            written, self.hub.own_written = self.hub.own_written, []
            if not self.bootstrap.servers:
                return effects
            by_channel: dict[bytes, list[bytes]] = {}
            for channel, raw in written:
                by_channel.setdefault(channel, []).append(raw)
            for channel, raws in by_channel.items():
                effects += self.bootstrap.upload(channel, raws)
        return effects

    def _keeps_held(self, event: Event, now: float) -> bool:
        """Whether ``event`` leaves held pushes held: another app write, or a tick of the
        write batcher with nothing else due (design.md §5)."""
        match event:
            case SendRequested() | MessageOpRequested() | ModRequested():
                return True
            case TimerExpired():
                other = self._next_deadline(with_batcher=False)
                return other is None or other > now
            case _:
                return False

    def _handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Started():
                return self._on_started(event, now)
            case DataReceived():
                return self._on_data(event, now)
            case TimerExpired():
                effects = self._on_batcher_timer(now, event.lagging)
                return effects + self._on_timer(now) + self.hub.key_timer(self._wall_ms(now))
            case LinkEstablished():
                return self._on_established(event, now)
            case LinkLost():
                return self._on_lost(event, now)
            case DialFailed():
                return self._on_dial_failed(event, now)
            case ConnectRequested():
                return self._on_connect(event, now)
            case PingRequested():
                return self._on_ping(event, now)
            case DisconnectRequested():
                return self._on_disconnect(event, now)
            case PeerDiscovered():
                return self._on_discovered(event, now)
            case WantedPeersLoaded():
                return self._on_loaded(event, now)
            case ShutdownRequested():
                return self._on_shutdown(event, now)
            case SendRequested():
                effects = self.hub.send(event, batch=self.batcher.post(now, event.lagging))
                self.batcher.wrote(now)
                return effects
            case DmRequested():
                return self.hub.dm(event) + self._start_new_channels()
            case MessageOpRequested():
                effects = self.hub.message_op(event)
                self.batcher.wrote(now)
                return effects
            case ModRequested():
                effects = self.hub.moderate(event)
                self.batcher.wrote(now)
                return effects
            case ChannelCreateRequested():
                return self.hub.create(event) + self._start_new_channels()
            case JoinRequested():
                return self._on_join(event, now)
            case ChannelsLoaded():
                return self.hub.on_loaded(event, 0)
            case _:
                assert_never(event)

    # --- handlers -----------------------------------------------------------------

    def _start_new_channels(self) -> list[Effect]:
        effects: list[Effect] = []
        for channel in sorted(set(self.hub.channels) - self._channels_started):
            effects += self._channel_started(channel)
        return effects

    def _on_established(self, ev: LinkEstablished, now: float) -> list[Effect]:
        if self._shutting_down:
            return [CloseLink(ev.link_id, CloseCode.SHUTDOWN, "node shutting down")]
        if len(self._links) >= self.config.max_links:
            return [CloseLink(ev.link_id, CloseCode.REFUSED, "too many links")]
        expected = None
        if ev.dial_id is not None:
            address = self._dials.pop(ev.dial_id, None)
            wanted = self._wanted.get(address) if address is not None else None
            if wanted is None or wanted.dial_id != ev.dial_id:
                return [CloseLink(ev.link_id, CloseCode.NORMAL, "no longer wanted")]
            wanted.dial_id = None
            expected = wanted.did
        link = Link(
            ev.link_id,
            identity=self.identity,
            config=self.config.link,
            outbound=ev.outbound,
            address=ev.address,
            cert_fingerprint=ev.cert_fingerprint,
            peer_cert_key=ev.peer_cert_key,
            expected_did=expected,
            nonce=self._rng.randbytes(NONCE_SIZE),
            now=now,
            agent=self.agent,
        )
        self._links[ev.link_id] = link
        return self._after(link, link.start(now), now)

    def _on_data(self, ev: DataReceived, now: float) -> list[Effect]:
        link = self._links.get(ev.link_id)
        if link is None:
            return []
        return self._after(link, link.receive(ev.data, now), now)

    def _on_timer(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for link in list(self._links.values()):
            deadline = link.deadline()
            if deadline is not None and deadline <= now:
                effects += self._after(link, link.on_timer(now), now)
        for wanted in list(self._wanted.values()):
            if wanted.next_dial_at is not None and wanted.next_dial_at <= now:
                effects += self._dial(wanted)
        deadline = self.bootstrap.next_deadline()
        if deadline is not None and deadline <= now:
            effects += self.bootstrap.on_timer(now, self._wall_ms(now))
        return effects

    def _on_batcher_timer(self, now: float, lagging: bool) -> list[Effect]:
        effects: list[Effect] = []
        for action in self.batcher.on_timer(now, lagging):
            match action:
                case "seal":
                    effects += self.hub.seal_held()
                case "flush":
                    effects += self.hub.flush_held()
                case _:
                    assert_never(action)
        return effects

    def _on_lost(self, ev: LinkLost, now: float) -> list[Effect]:
        link = self._links.get(ev.link_id)
        if link is None:
            return []
        link.lost(ev.reason)
        return self._after(link, [], now)

    def _on_dial_failed(self, ev: DialFailed, now: float) -> list[Effect]:
        address = self._dials.pop(ev.dial_id, None)
        wanted = self._wanted.get(address) if address is not None else None
        if wanted is None or wanted.dial_id != ev.dial_id:
            return []
        wanted.dial_id = None
        return self._attempt_failed(wanted, f"cannot reach {format_address(wanted.address)}: "
                                    f"{ev.reason}", now)

    def _on_connect(self, ev: ConnectRequested, now: float) -> list[Effect]:
        if self._shutting_down:
            return [ConnectFinished(ev.request_id, None, "node shutting down")]
        if ev.expected_did is not None and ev.expected_did == self.identity.did:
            return [ConnectFinished(ev.request_id, None, "that is this node's own DID")]
        for link in self._links.values():
            if not (link.is_open and link.outbound and link.address == ev.address):
                continue
            if ev.expected_did is None or ev.expected_did == link.peer_did:
                return [ConnectFinished(ev.request_id, link.peer_did, None)]
            # connected there already, and the peer proved a different DID
            return [ConnectFinished(
                ev.request_id, None,
                f"peer at {format_address(ev.address)} is {link.peer_did}, "
                f"expected {ev.expected_did}")]
        wanted = self._wanted.get(ev.address)
        if wanted is None:
            if len(self._wanted) >= self.config.max_wanted_peers:
                return [ConnectFinished(ev.request_id, None, "too many peers configured")]
            wanted = _Wanted(ev.address, ev.expected_did, persistent=False)
            self._wanted[ev.address] = wanted
        elif ev.expected_did is not None:
            wanted.did = ev.expected_did
        wanted.requests.append(ev.request_id)
        if wanted.dial_id is not None:
            return []
        return self._dial(wanted)

    def _on_ping(self, ev: PingRequested, now: float) -> list[Effect]:
        link_id = self._by_did.get(ev.did)
        if link_id is None:
            return [PingFinished(ev.request_id, None, f"not connected to {ev.did}")]
        return [self._links[link_id].ping(now, ev.request_id)]

    def _on_disconnect(self, ev: DisconnectRequested, now: float) -> list[Effect]:
        effects: list[Effect] = []
        forgotten: list[Address] = []
        dids = {ev.did} if ev.did else set()
        for wanted in list(self._wanted.values()):
            if wanted.address == ev.address or (ev.did is not None and wanted.did == ev.did):
                if wanted.did:
                    dids.add(wanted.did)
                del self._wanted[wanted.address]
                forgotten.append(wanted.address)
                effects += [ConnectFinished(r, None, "disconnected by user")
                            for r in wanted.requests]
                effects.append(ForgetPeer(wanted.address))
        closed = 0
        for link in list(self._links.values()):
            if link.peer_did in dids or (link.outbound and link.address == ev.address):
                effects += link.close(CloseCode.NORMAL, "disconnected by user")
                effects += self._after(link, [], now)
                closed += 1
        effects.append(DisconnectFinished(ev.request_id, closed, tuple(sorted(forgotten))))
        return effects

    def _channel_started(self, channel: bytes) -> list[Effect]:
        self._channels_started.add(channel)
        return self.bootstrap.on_channel(channel, self.hub.own_envelopes(channel),
                                         self._wall_ms())

    def _wall_ms(self, now: float | None = None) -> int:
        """Wall-clock milliseconds from the monotonic ``now`` (offset given by Started)."""
        if now is None:
            now = self._last_now
        return clock.ms(now) + self._wall_offset_ms

    def _on_started(self, ev: Started, now: float) -> list[Effect]:
        self._wall_offset_ms = ev.wall_ms - clock.ms(now)
        self._wall_known = True
        self.hub.offer_pending_dms(ev.wall_ms)
        self._channels_started |= set(self.hub.channels)
        host = ev.listen[0]
        if host not in ("0.0.0.0", "::"):
            self.bootstrap.listen = ev.listen
        self.bootstrap.cursors.update({(s, t): c for s, t, c in ev.cursors})
        self.hub.load_prekeys(ev.prekeys, ev.wall_ms)
        effects: list[Effect] = []
        for address in self.bootstrap.servers:
            if address in self._wanted or len(self._wanted) >= self.config.max_wanted_peers:
                continue
            wanted = _Wanted(address, None, persistent=True, source="bootstrap-server")
            self._wanted[address] = wanted
            effects += self._dial(wanted)
        return effects

    def _on_join(self, ev: JoinRequested, now: float) -> list[Effect]:
        effects = self.hub.join(ev)
        if ev.channel not in self._channels_started:
            effects += self._channel_started(ev.channel)
        for did, address in ev.peers:
            if did == self.identity.did or address in self._wanted or did in self._by_did:
                continue
            if len(self._wanted) >= self.config.max_wanted_peers:
                break
            # invite peers are kept, stored and retried: the user asked to reach this
            # channel, and a restart before the first contact must not lose the way there
            wanted = _Wanted(address, did, persistent=True, source="invite")
            self._wanted[address] = wanted
            effects.append(SavePeer(address, did))
            effects += self._dial(wanted)
        return effects

    def _on_discovered(self, ev: PeerDiscovered, now: float) -> list[Effect]:
        if self._shutting_down or ev.did == self.identity.did or ev.did in self._by_did \
                or ev.address in self._wanted \
                or len(self._wanted) >= self.config.max_wanted_peers:
            return []
        # dialled once, with the DID it must prove; forgotten if that fails (discovery
        # will offer it again), and not stored: it is found afresh after a restart
        wanted = _Wanted(ev.address, ev.did, persistent=False, source=ev.source)
        self._wanted[ev.address] = wanted
        return self._dial(wanted)

    def _on_loaded(self, ev: WantedPeersLoaded, now: float) -> list[Effect]:
        effects: list[Effect] = []
        for address, did in ev.peers:
            if address in self._wanted or len(self._wanted) >= self.config.max_wanted_peers:
                continue
            wanted = _Wanted(address, did, persistent=True, source="stored")
            self._wanted[address] = wanted
            effects += self._dial(wanted)
        return effects

    def _on_shutdown(self, ev: ShutdownRequested, now: float) -> list[Effect]:
        self._shutting_down = True
        self.batcher = WriteBatcher()  # what it held was flushed before this event
        effects: list[Effect] = self.hub.snapshots(force=True)
        for wanted in self._wanted.values():
            wanted.next_dial_at = None
            effects += [ConnectFinished(r, None, ev.reason) for r in wanted.requests]
            wanted.requests.clear()
        for link in list(self._links.values()):
            effects += link.close(CloseCode.SHUTDOWN, ev.reason)
            effects += self._after(link, [], now)
        return effects

    # --- helpers ---------------------------------------------------------------------

    def _dial(self, wanted: _Wanted) -> list[Effect]:
        dial_id = self._next_dial_id
        self._next_dial_id += 1
        wanted.dial_id = dial_id
        wanted.next_dial_at = None
        self._dials[dial_id] = wanted.address
        return [Dial(dial_id, wanted.address, self.config.dial_timeout)]

    def _backoff(self, attempts: int) -> float:
        """Jittered exponential backoff: uniform in [d/2, d], d = base·2^(n-1), capped."""
        cfg = self.config
        delay = min(cfg.reconnect_max, cfg.reconnect_base * 2 ** min(max(attempts - 1, 0), 30))
        return float(delay * (0.5 + 0.5 * self._rng.random()))

    def _attempt_failed(self, wanted: _Wanted, reason: str, now: float) -> list[Effect]:
        wanted.parked = None
        effects: list[Effect] = [ConnectFinished(r, None, reason) for r in wanted.requests]
        wanted.requests.clear()
        if not wanted.persistent:
            del self._wanted[wanted.address]
        elif not self._shutting_down and not (wanted.did and wanted.did in self._by_did):
            wanted.attempts += 1
            wanted.next_dial_at = now + self._backoff(wanted.attempts)
        return effects

    def _forget(self, link: Link) -> None:
        self._links.pop(link.link_id, None)
        self.hub.on_link_closed(link.link_id)
        if link.peer_did is not None and self._by_did.get(link.peer_did) == link.link_id:
            del self._by_did[link.peer_did]

    def _wanted_for(self, link: Link) -> _Wanted | None:
        if not link.outbound:
            return None
        wanted = self._wanted.get(link.address)
        return wanted

    def _after(self, link: Link, effects: list[Effect], now: float) -> list[Effect]:
        """Bookkeeping after a link changed: opened, closed, pings answered."""
        for request_id, rtt in link.finished_pings:
            error = None if rtt is not None else "too many pings in flight"
            effects.append(PingFinished(request_id, rtt, error))
        link.finished_pings.clear()
        if link.is_open and not link.announced:
            effects += self._on_link_open(link, now)
            if link.announced and link.is_open:
                if self.bootstrap.is_server(link):
                    effects += self.bootstrap.on_server_open(
                        link, sorted(self.hub.channels), self.hub.own_envelopes, now,
                        self._wall_ms(now), self.hub.dm_relay.mailbox_items())
                else:
                    effects += self.hub.on_link_open(link)
        if link.inbox:
            frames, link.inbox = link.inbox, []
            server = self.bootstrap.is_server_link(link.link_id)
            for frame in frames:
                if not link.is_open:
                    break
                try:
                    if server:
                        effects += self.bootstrap.on_frame(
                            link, frame, self._wall_ms(now),
                            lambda c, raws: self.hub.receive_stored(c, raws, self._wall_ms(now)),
                            lambda did, address: self._on_discovered(
                                PeerDiscovered(did, address, "bootstrap"), now),
                            lambda raws: self.hub.dm_relay.on_mailbox(raws, self._wall_ms(now))
                            + self._start_new_channels())
                    else:
                        effects += self.hub.on_frame(link, frame, self._wall_ms(now))
                        if isinstance(frame, (Offer, Relay)):  # a DM joined: servers too
                            effects += self._start_new_channels()
                except RemoteProtocolError as exc:
                    effects += link.close(exc.code, str(exc))
        if link.state.value == "closed" and link.link_id in self._links:
            self.hub.on_link_closed(link.link_id)
            self.bootstrap.on_link_closed(link.link_id, link.close_reason or "closed")
            effects += self._on_link_closed(link, now)
        return effects

    def _on_link_open(self, link: Link, now: float) -> list[Effect]:
        assert link.peer_did is not None
        did = link.peer_did
        link.announced = True
        effects: list[Effect] = []
        wanted = self._wanted_for(link)
        if wanted is not None:
            effects += self._reached(wanted, did)
        current_id = self._by_did.get(did)
        if current_id is not None:
            current = self._links[current_id]
            keep, drop = self._choose(current, link)
            dialer = self.identity.did if keep.outbound else did
            effects += drop.close(
                CloseCode.DUPLICATE_LINK,
                f"duplicate link to {short_did(did)}; "
                f"keeping the one dialled by {short_did(dialer)}",
            )
            self._forget(drop)
            if keep is current:
                return effects
            # The old link goes quietly: the peer stays connected through the new one.
        self._by_did[did] = link.link_id
        if current_id is None:
            effects.append(PeerConnected(did, link.peer_name, link.link_id, link.address,
                                         link.outbound))
        for w in self._wanted.values():
            if w.did == did:
                w.next_dial_at = None
            if w.parked is not None and w.parked[0] == did:
                effects += self._reached(w, did)  # the link its peer kept is open now
        return effects

    def _reached(self, wanted: _Wanted, did: str) -> list[Effect]:
        """``wanted``'s address answered as ``did`` and a link to ``did`` is open (its own
        link, or the one kept when simultaneous dials settled): its requests succeed."""
        wanted.did = did
        wanted.attempts = 0
        wanted.persistent = True
        wanted.parked = None
        effects: list[Effect] = []
        if wanted.source not in ("mdns", "bootstrap", "bootstrap-server"):
            effects.append(SavePeer(wanted.address, did))  # found again after a restart
        effects += [ConnectFinished(r, did, None) for r in wanted.requests]
        wanted.requests.clear()
        return effects

    def _handshaking(self, did: str) -> bool:
        """Whether a link dialled to ``did`` (proven by its TLS certificate) is still in
        its handshake. Inbound links do not count: before their proof, a DID in a hello
        is only a claim."""
        return any(link.outbound and link.peer_did == did and link.state is not LinkState.CLOSED
                   for link in self._links.values())

    def _lost_before_open(self, wanted: _Wanted, link: Link, reason: str,
                          now: float) -> list[Effect]:
        """``wanted``'s own link closed during its handshake. When the peer closed it as a
        duplicate, a link to the same DID survives: the attempt succeeded through that
        one, whichever direction it was dialled in. Otherwise the attempt failed."""
        # an outbound link knows its peer's DID from the TLS certificate, which the
        # transport handshake proved: this address does answer as that DID
        did = link.peer_did if link.outbound else None
        if did is not None and did in self._by_did:
            return self._reached(wanted, did)
        if did is not None and self._handshaking(did):
            wanted.parked = (did, reason)  # settled when that link opens or closes
            return []
        return self._attempt_failed(wanted, reason, now)

    def _choose(self, old: Link, new: Link) -> tuple[Link, Link]:
        if old.outbound == new.outbound:
            return new, old
        me, peer = self.identity.did, new.peer_did or ""
        smaller_is_me = me < peer
        # keep the link dialled by the smaller DID
        keep = (old if old.outbound else new) if smaller_is_me else (new if old.outbound else old)
        drop = new if keep is old else old
        return keep, drop

    def _on_link_closed(self, link: Link, now: float) -> list[Effect]:
        was_current = link.peer_did is not None and self._by_did.get(link.peer_did) == link.link_id
        self._forget(link)
        reason = link.close_reason or "closed"
        effects: list[Effect] = [
            PingFinished(request_id, None, f"link closed: {reason}")
            for _, request_id in link.pings.values() if request_id is not None
        ]
        if was_current:
            assert link.peer_did is not None
            effects.append(PeerDisconnected(link.peer_did, link.link_id, reason))
            for wanted in self._wanted.values():
                if wanted.did == link.peer_did and wanted.persistent and wanted.dial_id is None \
                        and not self._shutting_down:
                    wanted.attempts += 1
                    wanted.next_dial_at = now + self._backoff(wanted.attempts)
        elif link.opened_at is None:
            target = self._wanted_for(link)
            if target is not None and target.dial_id is None and target.next_dial_at is None \
                    and target.parked is None:
                effects += self._lost_before_open(target, link, reason, now)
        did = link.peer_did
        if did is not None and did not in self._by_did and not self._handshaking(did):
            for wanted in list(self._wanted.values()):  # no link to that DID is left
                if wanted.parked is not None and wanted.parked[0] == did:
                    effects += self._attempt_failed(wanted, wanted.parked[1], now)
        return effects
