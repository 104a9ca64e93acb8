"""The node runtime: one asyncio pump around :class:`~p2pchat.core.NodeCore`.

Transport callbacks and control requests become core events, run through the shared
driver loop (:mod:`p2pchat.core.driver`): ``handle`` runs synchronously, its effects
are carried out in order, one timer handle tracks the next deadline. Store writes go
through one ordered queue (:mod:`~p2pchat.runtime.writes`); an answer that depends on
a write is released only after that write committed (:mod:`~p2pchat.runtime.answers`).
Watch events: :mod:`~p2pchat.runtime.watch`; adapters read the core through
:class:`~p2pchat.core.query.NodeQuery` (``node.query``).

One user action is one event: when app writes are sealed and their pushes leave is
the core's write batcher (:mod:`p2pchat.core.batching`); the runtime only tells it
whether the transport has a lagging peer (``lagging`` on sends and timers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any, assert_never

from p2pchat import __version__
from p2pchat.channel.invite import MAX_INVITE_PEERS, Invite, format_channel_id
from p2pchat.core import NodeConfig, NodeCore
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
    DisconnectRequested,
    DmRequested,
    Effect,
    Event,
    JoinRequested,
    LinkEstablished,
    LinkLost,
    MessageOpRequested,
    ModRequested,
    PeerConnected,
    PeerDisconnected,
    PeerDiscovered,
    Persistence,
    PingFinished,
    PingRequested,
    SendRequested,
    ShutdownRequested,
    Started,
    SyncChanged,
    TimerExpired,
    Transmit,
    WantedPeersLoaded,
    format_address,
)
from p2pchat.core.query import NodeQuery
from p2pchat.errors import LocalError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.runtime.answers import Answers
from p2pchat.runtime.verify import ParallelVerifier
from p2pchat.runtime.views import PeerView, peer_view
from p2pchat.runtime.watch import Watchers
from p2pchat.runtime.writes import StoreWriter
from p2pchat.store import Store
from p2pchat.transport.port import Transport, TransportFactory
from p2pchat.transport.quic import QuicTransport

log = logging.getLogger("p2pchat.node")
AGENT = f"p2pchat/{__version__}"
#: Upper bound on how long ``connect`` waits beyond the dial and handshake timeouts.
CONNECT_GRACE = 5.0
#: How long ``dm`` waits for the peer's receipt (or a server's acknowledgement) before it
#: answers with the best status it has (design.md §10.15).
DM_STATUS_WAIT = 3.0

class _SystemRandom(random.SystemRandom):
    """CSPRNG for nonces and jitter in production (the simulator passes a seeded Random)."""


class Node:
    """A running node: core + QUIC transport + store. Not thread-safe; one event loop."""

    def __init__(self, identity: Identity, config: NodeConfig, store: Store | None = None,
                 *, bootstrap: tuple[Address, ...] = (),
                 transport: TransportFactory = QuicTransport) -> None:
        self.identity = identity
        #: bootstrap servers to keep links to (DESIGN §8)
        self.bootstrap = bootstrap
        #: the last run may have lost stored writes (``crashmark``): channels start with
        #: their own chain head unsure (design.md §10.5)
        self.head_unsure = False
        #: the mDNS adapter, if running (``doctor`` reports its status)
        self.mdns: Any = None
        self.config = config
        self.store = store
        self._verify_batch = ParallelVerifier()  # catch-up batches on worker threads
        self.core = NodeCore(identity, config, _SystemRandom(), agent=AGENT,
                             verify_batch=self._verify_batch, bootstrap=bootstrap,
                             persists=store is not None)
        #: what adapters read of the core (the control server, the TUI through it)
        self.query = NodeQuery(self.core)
        self.transport: Transport = transport(
            identity, self, handshake_timeout=config.link.handshake_timeout,
            idle_timeout=config.link.idle_timeout)
        self.listen_address: Address | None = None
        self.started_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.Handle | None = None
        self._driver: Driver[Event, Effect] = Driver(self.core, self._execute, self._arm,
                                                     self._timer_event, self._spun)
        self._answers = Answers(self._loop)
        #: ``dm`` calls waiting for a receipt: each is woken after every dispatch
        self._dm_waiters: set[asyncio.Event] = set()
        self.writes = StoreWriter(store, self._loop)
        self._stopped = asyncio.Event()
        self.peer_listeners: list[Callable[[Effect], None]] = []
        #: control clients watching for changes (``watch``): one bounded queue each
        self.watchers = Watchers(self._loop, self.query.has_channel)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> Address:
        self.listen_address = await self.transport.listen(host, port)
        if self.store is not None:
            stored = await self.store.load_channels()
            if stored:
                started = time.perf_counter()
                self._dispatch(ChannelsLoaded(tuple(stored), head_unsure=self.head_unsure))
                for ch in stored:
                    restored, replayed = self.query.load_report(ch.channel)
                    log.info("loaded channel %s (#%s): snapshot covers %d of %d envelopes, "
                             "%d replayed", format_channel_id(ch.channel), ch.name, restored,
                             len(ch.envelopes), replayed)
                log.info("channels loaded in %.3f s", time.perf_counter() - started)
            peers = await self.store.load_peers()
            if peers:
                self._dispatch(WantedPeersLoaded(tuple(peers)))
        cursors = await self.store.load_cursors() if self.store is not None else []
        prekeys = await self.store.load_prekeys(_wall_ms()) if self.store is not None else []
        self._dispatch(Started(self.listen_address, _wall_ms(), tuple(cursors),
                               tuple(prekeys)))
        return self.listen_address

    async def stop(self, reason: str = "node shutting down") -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._dispatch(ShutdownRequested(reason))
        await self.transport.stop()
        if self._timer is not None:
            self._timer.cancel()
        self.watchers.stop()
        await self.writes.stop()
        self._verify_batch.shutdown()
        if self.store is not None:
            await self.store.close()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --- API used by the control server and the benchmark ---------------------------

    async def connect(self, address: Address, expected_did: str | None = None) -> str:
        """Dial ``address`` and return the authenticated peer DID, or raise LocalError."""
        if expected_did is not None:
            public_key_from_did(expected_did)  # IdentityError is a LocalError
        request_id, future = self._answers.new()
        self._dispatch(ConnectRequested(request_id, address, expected_did))
        limit = self.config.dial_timeout + self.config.link.handshake_timeout + CONNECT_GRACE
        try:
            return str(await asyncio.wait_for(future, limit))
        except TimeoutError:
            raise LocalError(f"connecting to {format_address(address)} timed out") from None
        finally:
            self._answers.forget(request_id)

    async def ping(self, did: str, limit: float = 5.0) -> float:
        """Round-trip time to a connected peer, in seconds."""
        request_id, future = self._answers.new()
        self._dispatch(PingRequested(request_id, did))
        try:
            return float(await asyncio.wait_for(future, limit))
        except TimeoutError:
            raise LocalError(f"no pong from {did} within {limit:g} s") from None
        finally:
            self._answers.forget(request_id)

    async def disconnect(self, did: str | None = None, address: Address | None = None
                         ) -> DisconnectFinished:
        """Close links to a peer and forget it as a reconnect target (committed first)."""
        request_id, future = self._answers.new()
        self._dispatch(DisconnectRequested(request_id, did, address))
        try:
            finished: DisconnectFinished = await future
            return finished
        finally:
            self._answers.forget(request_id)

    # --- channels ------------------------------------------------------------------------

    async def _request(self, make: Callable[[int], Event]) -> dict[str, Any]:
        request_id, future = self._answers.new()
        self._dispatch(make(request_id))
        try:
            result: dict[str, Any] = await future
            return result
        finally:
            self._answers.forget(request_id)

    async def create_channel(self, name: str, policy: str = "history") -> dict[str, Any]:
        return await self._request(lambda r: ChannelCreateRequested(r, name, _wall_ms(),
                                                                    policy))

    async def join(self, invite: Invite) -> dict[str, Any]:
        peers = tuple((did, (host, port)) for did, host, port in invite.peers)
        return await self._request(lambda r: JoinRequested(
            r, invite.channel, invite.name, peers, _wall_ms(), invite.cap, invite.grant,
            invite.grant_signature, invite.genesis))

    async def dm(self, did: str, text: str, wait: float = DM_STATUS_WAIT) -> dict[str, Any]:
        """Post ``text`` to ``did``'s direct-message channel (made and offered on first use).

        Once committed, waits up to ``wait`` seconds while a receipt or a server's
        acknowledgement may still come, and adds ``status``: ``delivered`` (the peer's
        receipt covers it), ``stored`` (a bootstrap server holds it), ``relayed`` (handed
        to a link: the peer's, or a member's that forwards it) or ``pending``."""
        result = await self._request(lambda r: DmRequested(r, did, text, _wall_ms()))
        channel, seq, own = result["channel"], result["seq"], result["own"]
        deadline = self._loop.time() + wait
        woken = asyncio.Event()
        self._dm_waiters.add(woken)
        try:
            while True:
                status, more = self.dm_status(channel, seq, own)
                remaining = deadline - self._loop.time()
                if not more or remaining <= 0:
                    break
                woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), remaining)
        finally:
            self._dm_waiters.discard(woken)
        return {**result, "status": status}

    def dm_status(self, channel: bytes, seq: int, own: int) -> tuple[str, bool]:
        """(status of our envelope ``seq``, the ``own``-th of ours in ``channel``; whether
        a better one may still come without anything new happening)."""
        query = self.query
        if query.dm_delivered(channel, seq):
            return "delivered", False
        handed = query.dm_handed(channel) >= seq
        if query.acknowledged(channel) >= own:
            return "stored", handed  # a receipt may still come through the link
        if handed:
            return "relayed", True
        servers = any(s.linked for s in query.servers())
        return "pending", servers  # an open server link acknowledges the upload soon

    async def send(self, channel: bytes, text: str, reply_to: str = "") -> dict[str, Any]:
        """Post ``text``; returns once the envelope is committed to the store."""
        now = self._loop.time()
        lagging = self.core.wants_lag(now, posting=True) and self.transport.lagging(now)
        return await self._request(lambda r: SendRequested(r, channel, text, _wall_ms(),
                                                           reply_to, lagging))

    async def message_op(self, channel: bytes, op: str, msg_id: str, *, text: str = "",
                         emoji: str = "", on: bool = True) -> dict[str, Any]:
        return await self._request(lambda r: MessageOpRequested(
            r, channel, op, msg_id, _wall_ms(), text, emoji, on))

    async def moderate(self, channel: bytes, action: str, *, target: str = "", value: str = "",
                       on: bool = True, reason: str = "") -> dict[str, Any]:
        """Publish a moderation action (refused with the reason if it would not count)."""
        return await self._request(lambda r: ModRequested(
            r, channel, action, _wall_ms(), target, value, on, reason))

    def discovered(self, did: str, address: Address, source: str) -> None:
        """A discovery adapter (mDNS, bootstrap lookup) found ``did`` at ``address``."""
        if not self._stopped.is_set():
            self._dispatch(PeerDiscovered(did, address, source))

    def make_invite(self, channel: bytes, with_peers: bool = True) -> str:
        peers: list[tuple[str, str, int]] = []
        if not with_peers:
            pass  # found through mDNS or bootstrap servers instead
        elif self.listen_address and self.listen_address[0] not in ("0.0.0.0", "::"):
            # the inviter vouches for itself; its own address is the one to give out
            peers.append((self.identity.did, *self.listen_address))
        else:
            # listening on every interface: we cannot tell which address the invitee
            # reaches, so give the peers we dialled (they have reachable addresses)
            for p in self.query.peers(self._loop.time()):
                if p.outbound and len(peers) < MAX_INVITE_PEERS:
                    peers.append((p.did, p.address[0], p.address[1]))
        try:
            invite = self.query.invite_for(channel, _wall_ms(), peers)
        except ValueError as exc:
            raise LocalError(str(exc)) from None
        return invite.to_uri(self.identity)

    def peers(self) -> list[PeerView]:
        now = self._loop.time()
        return [peer_view(p) for p in self.query.peers(now)]

    def status(self) -> dict[str, Any]:
        return {
            "did": self.identity.did,
            "name": self.identity.name,
            "listen": format_address(self.listen_address) if self.listen_address else None,
            "peers": len(self.query.peers(self._loop.time())),
            "bootstrap_servers": len(self.query.servers()),
            "links": self.query.link_count(),
            "wanted": [{"address": format_address(a), "did": d}
                       for a, d in self.query.wanted()],
            "uptime_s": round(time.time() - self.started_at, 1),
            "version": __version__,
        }


    # --- LinkEvents (called by the transport) -------------------------------------------

    def established(self, link_id: int, outbound: bool, address: Address,
                    cert_fingerprint: bytes, peer_cert_key: bytes | None,
                    dial_id: int | None) -> None:
        self._dispatch(LinkEstablished(link_id, outbound, address, cert_fingerprint,
                                       peer_cert_key, dial_id))

    def data(self, link_id: int, data: bytes) -> None:
        self._dispatch(DataReceived(link_id, data))

    def lost(self, link_id: int, reason: str) -> None:
        self._dispatch(LinkLost(link_id, reason))

    def _dial_failed(self, dial_id: int, reason: str) -> None:
        self._dispatch(DialFailed(dial_id, reason))

    # --- the pump ------------------------------------------------------------------------

    def _dispatch(self, event: Event) -> None:
        self._after(event, self._driver.dispatch(event, self._loop.time()))

    def _on_timer(self) -> None:
        self._timer = None
        self._after(None, self._driver.fire(self._loop.time()))

    def _after(self, event: Event | None, effects: list[Effect]) -> None:
        for woken in self._dm_waiters:
            woken.set()
        self.watchers.tell(effects, self._loop.time())
        if not isinstance(event, (SendRequested, MessageOpRequested, ModRequested)) and (
                event is not None or any(isinstance(e, Transmit) for e in effects)):
            self.transport.flush()  # to the network at once (a timer's only if it sent)

    def _timer_event(self) -> TimerExpired:
        now = self._loop.time()
        lagging = self.core.wants_lag(now) and self.transport.lagging(now)
        return TimerExpired(lagging)

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None or self._stopped.is_set():
            return
        if deadline <= self._loop.time():  # a tick: the next turn, after what is queued
            self._timer = self._loop.call_soon(self._on_timer)
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    @staticmethod
    def _spun(what: str) -> None:
        log.warning("core timer: %s", what)

    def _execute(self, effect: Effect) -> None:
        if isinstance(effect, Persistence):
            self.writes.write(effect)  # in order, one transaction per batch
            return
        match effect:
            case Transmit(link_id=link_id, data=data):
                if effect.after_store and self.writes.pending:
                    transport = self.transport

                    def send_stored(ok: bool) -> None:
                        if ok:  # never hand out what we failed to store
                            transport.send(link_id, data)
                            transport.flush()

                    self.writes.after(send_stored)
                else:
                    self.transport.send(link_id, data)
            case CloseLink():
                log.info("closing link %d: %s (%s)", effect.link_id, effect.reason,
                         effect.code.name)
                self.transport.close(effect.link_id, effect.code, effect.reason)
            case Dial():
                log.debug("dialling %s", format_address(effect.address))
                self.transport.dial(effect.dial_id, effect.address, effect.timeout,
                                    self._dial_failed)
            case PeerConnected():
                log.info("peer connected %s at %s (%s)", effect.did,
                         format_address(effect.address),
                         "outbound" if effect.outbound else "inbound")
                self._notify(effect)
            case PeerDisconnected():
                log.info("peer disconnected %s: %s", effect.did, effect.reason)
                self._notify(effect)
            case DisconnectFinished():
                if self._answers.waits(effect.request_id):
                    done = effect
                    self.writes.after(lambda ok: self._answers.disconnected(done, ok))
            case ChannelAnswer():
                if self._answers.waits(effect.request_id):
                    told = effect
                    self.writes.after(lambda ok: self._answers.answered(told, ok))
            case ConnectFinished():
                finished = effect
                self.writes.after(lambda ok: self._answers.connected(finished, ok))
            case SyncChanged():
                pass  # the watchers take it from the dispatch's effects (_after)
            case PingFinished():
                self._answers.pinged(effect)
            case _:
                assert_never(effect)

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of change events for a control client (:mod:`p2pchat.runtime.watch`);
        the caller passes it to :meth:`Watchers.unwatch` when done."""
        return self.watchers.watch()

    def _notify(self, effect: Effect) -> None:
        for listener in self.peer_listeners:
            listener(effect)


def _wall_ms() -> int:
    return int(time.time() * 1000)
