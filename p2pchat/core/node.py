"""The chat node's protocol core, without I/O: the link layer with the chat on top.

Theory of operation
-------------------
``NodeCore.handle(event, now) -> [effects]`` is the only way in. The runtime (or
the simulator) feeds it transport events and user requests, carries out the
effects in order, and calls ``handle(TimerExpired(), now)`` once
:meth:`NodeCore.next_deadline` has passed. Time and randomness are inputs, so a
run is reproducible from its event sequence and RNG seed.

NodeCore is the composition of two machines. The link layer,
:class:`~p2pchat.core.links.LinkCore` (links, handshakes, wanted peers, dialing and
backoff, connect / disconnect / ping requests, the duplicate-link tie-break,
shutdown of the links), takes the link events; see :mod:`p2pchat.core.links`.
NodeCore itself is the chat application over it, and owns:

* :attr:`hub` (:class:`~p2pchat.core.channels.ChannelHub`): channels, their
  replication over peer links, group keys and prekeys, DMs and their relay;
* :attr:`bootstrap` (:class:`~p2pchat.core.bootstrap.BootstrapClient`): the node's
  side of its bootstrap servers;
* :attr:`batcher` (:class:`~p2pchat.core.batching.WriteBatcher`): when app writes
  are sealed and their held pushes leave.

It implements the link layer's port (:class:`~p2pchat.core.links.LinkApp`): a link
to a configured bootstrap server goes to the bootstrap client, every other link to the
hub; a closed link is forgotten by both. Around every event NodeCore lets held pushes
leave before anything else happens on the links (unless the event is another write or
a batcher tick with nothing else due), then keeps prekeys, sweeps expired epochs,
relays DMs beyond a direct link and uploads its own new envelopes and mailbox items to
the servers.

The wall clock is ``ms(now)`` plus an offset learnt from ``Started`` (or, for a core
driven without a runtime as in the simulator, from the first request that carries a
wall time); the link layer's port is handed that wall time with ``now``.
"""

from __future__ import annotations

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
    ConnectRequested,
    DataReceived,
    DialFailed,
    DisconnectRequested,
    DmRequested,
    Effect,
    Event,
    JoinRequested,
    LinkEstablished,
    LinkLost,
    MessageOpRequested,
    ModRequested,
    PeerDiscovered,
    PingRequested,
    RandomSource,
    SavePeer,
    SendRequested,
    ShutdownRequested,
    Started,
    SyncChanged,
    TimerExpired,
    WantedPeersLoaded,
)
from p2pchat.core.link import Link
from p2pchat.core.links import LinkCore, PeerInfo
from p2pchat.identity import Identity
from p2pchat.wire import Frame, Offer
from p2pchat.wire.frames import Relay


class NodeCore:
    """Sans-IO chat node: :class:`LinkCore` + the chat application. See the module
    docstring."""

    def __init__(
        self, identity: Identity, config: NodeConfig, rng: RandomSource, agent: str = "p2pchat",
        verify_batch: BatchVerifier = verify_in_order, bootstrap: tuple[Address, ...] = (),
        *, persists: bool = True,
    ) -> None:
        """``persists``: something stores what the core asks to persist; without it the
        core makes no snapshots and no search rows (nothing would keep them)."""
        self.identity = identity
        self.config = config
        self.agent = agent
        #: the link layer; this node is its application (:class:`LinkApp`)
        self.links: LinkCore[Effect] = LinkCore(identity, config, rng, self, agent)
        self._channels_started: set[bytes] = set()
        self._wall_offset_ms = 0
        #: the wall clock is known: from Started, or (a core driven without a runtime,
        #: as in the simulator) from the first request that carries a wall time
        self._wall_known = False
        self._last_now = 0.0
        self.hub = ChannelHub(identity, rng.randbytes, verify_batch)
        if not persists:
            self.hub.snapshot_every = 0
            self.hub.index_messages = False
        #: when app writes are sealed and their pushes leave (one event per user action)
        self.batcher = WriteBatcher()
        self.bootstrap = BootstrapClient(identity, bootstrap)

    # --- queries -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._next_deadline(with_batcher=True)

    def _next_deadline(self, with_batcher: bool) -> float | None:
        times = [d for d in (self.links.next_deadline(), self.bootstrap.next_deadline())
                 if d is not None]
        if with_batcher and (batch := self.batcher.deadline()) is not None:
            times.append(batch)
        keys = self.hub.key_deadline()
        if keys is not None:
            times.append(clock.at_ms(keys - self._wall_offset_ms))
        return min(times, default=None)

    def wants_lag(self, now: float, posting: bool = False) -> bool:
        """Whether the next event needs to know if a peer lags: a timer when a seal may
        linger, a post when lag would batch it (the transport's check walks every link)."""
        return self.batcher.lag_matters(now, posting)

    def peers(self, now: float) -> list[PeerInfo]:
        return self.links.peers(now)

    def link_count(self) -> int:
        return self.links.link_count()

    def wanted(self) -> list[tuple[Address, str | None]]:
        return self.links.wanted()

    # --- the one entry point ----------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Effect]:
        self._last_now = now
        if not self._wall_known:
            wall = getattr(event, "wall_ms", None)
            if isinstance(wall, int):
                self._wall_offset_ms = wall - clock.ms(now)
                self._wall_known = True
        tick = self.batcher.deadline()
        if isinstance(event, TimerExpired) and tick is not None and tick <= now \
                and self._only_batcher_due(now):
            # a tick of the write batcher (several per app write): its seal and flush only
            effects = self._on_batcher_timer(now, event.lagging)
        else:
            effects = self._handle_fully(event, now)
        effects += self._housekeeping(event, now)
        effects += self.hub.dm_relay.after(effects)  # DMs beyond a direct link (§10.15)
        if self.hub.dm_relay.mailbox_new:
            items, self.hub.dm_relay.mailbox_new = self.hub.dm_relay.mailbox_new, []
            effects += self.bootstrap.upload_mailbox(items)
        if self.hub.sync_changed:  # for the runtime's ``sync`` watch events
            changed, self.hub.sync_changed = self.hub.sync_changed, set()
            effects += [SyncChanged(channel, self.hub.sync_progress(channel))
                        for channel in sorted(changed)]
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

    def _handle_fully(self, event: Event, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.hub.holding and not self._keeps_held(event, now):
            # held pushes leave before anything else happens on the links, so frames keep
            # the order they would have had without holding
            effects = self.hub.flush_held()
        return effects + self._handle(event, now)

    def _housekeeping(self, event: Event, now: float) -> list[Effect]:
        """Prekey renewal and the sweep of old epoch secrets, looked at after any event."""
        effects: list[Effect] = []
        if isinstance(event, ShutdownRequested):
            return effects
        if self.hub.prekeys_on and self.hub.prekey_work(self._wall_ms(now)):
            if self.hub.holding:  # a prekey goes out at once: what is held goes first
                effects += self.hub.flush_held()
            effects += self.hub.maintain_prekeys(self._wall_ms(now))
        return effects + self.hub.sweep_epochs(self._wall_ms(now))

    def _only_batcher_due(self, now: float) -> bool:
        other = self._next_deadline(with_batcher=False)
        return other is None or other > now

    def _keeps_held(self, event: Event, now: float) -> bool:
        """Whether ``event`` leaves held pushes held: another app write, or a tick of the
        write batcher with nothing else due (design.md §5)."""
        match event:
            case SendRequested() | MessageOpRequested() | ModRequested():
                return True
            case TimerExpired():
                return self._only_batcher_due(now)
            case _:
                return False

    def _handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case Started():
                return self._on_started(event, now)
            case TimerExpired():
                effects = self._on_batcher_timer(now, event.lagging)
                effects += self.links.handle(event, now, self._wall_ms(now))
                deadline = self.bootstrap.next_deadline()
                if deadline is not None and deadline <= now:
                    effects += self.bootstrap.on_timer(now, self._wall_ms(now))
                return effects + self.hub.key_timer(self._wall_ms(now))
            case ShutdownRequested():
                self.batcher = WriteBatcher()  # what it held was flushed before this event
                effects = self.hub.snapshots(force=True)
                return effects + self.links.handle(event, now, self._wall_ms(now))
            case LinkEstablished() | DataReceived() | LinkLost() | DialFailed() \
                    | ConnectRequested() | PingRequested() | DisconnectRequested() \
                    | PeerDiscovered() | WantedPeersLoaded():
                return self.links.handle(event, now, self._wall_ms(now))
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
                return self._on_join(event)
            case ChannelsLoaded():
                return self.hub.on_loaded(event, 0)
            case _:
                assert_never(event)

    # --- the link layer's port (LinkApp) -------------------------------------------

    def link_opened(self, link: Link, now: float, wall_ms: int) -> list[Effect]:
        if self.bootstrap.is_server(link):
            return self.bootstrap.on_server_open(
                link, sorted(self.hub.channels), self.hub.own_envelopes, now, wall_ms,
                self.hub.dm_relay.mailbox_items())
        return self.hub.on_link_open(link)

    def frame_received(self, link: Link, frame: Frame, now: float, wall_ms: int
                       ) -> list[Effect]:
        if self.bootstrap.is_server_link(link.link_id):
            return self.bootstrap.on_frame(
                link, frame, wall_ms,
                lambda c, raws: self.hub.receive_stored(c, raws, wall_ms),
                lambda did, address: self.links.handle(
                    PeerDiscovered(did, address, "bootstrap"), now, wall_ms),
                lambda raws: self.hub.dm_relay.on_mailbox(raws, wall_ms)
                + self._start_new_channels())
        effects = self.hub.on_frame(link, frame, wall_ms)
        if isinstance(frame, (Offer, Relay)):  # a DM joined: servers too
            effects += self._start_new_channels()
        return effects

    def link_closed(self, link: Link, now: float, wall_ms: int) -> list[Effect]:
        self.hub.on_link_closed(link.link_id)
        self.bootstrap.on_link_closed(link.link_id, link.close_reason or "closed")
        return []

    # --- handlers -----------------------------------------------------------------

    def _start_new_channels(self) -> list[Effect]:
        effects: list[Effect] = []
        for channel in sorted(set(self.hub.channels) - self._channels_started):
            effects += self._channel_started(channel)
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
            effects += self.links.want(address, None, "bootstrap-server")
        return effects

    def _on_join(self, ev: JoinRequested) -> list[Effect]:
        effects = self.hub.join(ev)
        if ev.channel not in self._channels_started:
            effects += self._channel_started(ev.channel)
        for did, address in ev.peers:
            if did == self.identity.did or self.links.connected_to(did):
                continue
            # invite peers are kept, stored and retried: the user asked to reach this
            # channel, and a restart before the first contact must not lose the way there
            dial = self.links.want(address, did, "invite")
            if dial:
                effects += [SavePeer(address, did), *dial]
        return effects


__all__ = ["NodeCore", "PeerInfo"]
