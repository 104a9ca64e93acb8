"""The node runtime: one asyncio pump around :class:`~p2pchat.core.NodeCore`.

Transport callbacks and control requests become core events; ``handle`` runs
synchronously and its effects are carried out in order. Store writes go through
one ordered queue; an answer that depends on a write (``connect`` succeeded ->
peer saved) is released only after that write committed. One timer handle
tracks :meth:`NodeCore.next_deadline`.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, assert_never

from p2pchat import __version__
from p2pchat.channel.envelope import Envelope
from p2pchat.channel.invite import MAX_INVITE_PEERS, Invite, format_channel_id
from p2pchat.core import NodeConfig, NodeCore, PeerInfo
from p2pchat.core.channels import SyncProgress, verify_in_order
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
    PeerDiscovered,
    PersistChannel,
    PersistCursor,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    PingFinished,
    PingRequested,
    SavePeer,
    SendRequested,
    ShutdownRequested,
    Started,
    TimerExpired,
    Transmit,
    WantedPeersLoaded,
    format_address,
)
from p2pchat.errors import LocalError
from p2pchat.identity import Identity, public_key_from_did, short_did
from p2pchat.store import Store
from p2pchat.transport.quic import QuicTransport

log = logging.getLogger("p2pchat.node")
AGENT = f"p2pchat/{__version__}"
#: Change events queued per watching control client before it is told it lagged.
MAX_WATCH_EVENTS = 1024
#: Shortest time between two ``sync`` watch events of one channel (its progress while
#: it catches up): at most four a second; the newest figure goes out when it is over.
#: The first event of a sync and the one saying it is done are never held back.
SYNC_EVENT_INTERVAL = 0.25
#: Threads that check envelope signatures of large batches (catch-up sync): the loop's
#: own thread and VERIFY_THREADS - 1 workers.
VERIFY_THREADS = 2
#: Batches smaller than this are checked on the event loop's thread (no hand-off cost).
PARALLEL_VERIFY_MIN = 16
#: Upper bound on how long ``connect`` waits beyond the dial and handshake timeouts.
CONNECT_GRACE = 5.0
#: How long ``dm`` waits for the peer's receipt (or a server's acknowledgement) before it
#: answers with the best status it has (design.md §10.15).
DM_STATUS_WAIT = 3.0

@dataclass(frozen=True)
class PeerView:
    did: str
    name: str
    address: str
    outbound: bool
    rtt_ms: float | None
    connected_for_s: float
    found_by: str = "inbound"
    path: str = "direct"
    via: str = "direct"

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did, "name": self.name, "address": self.address,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "direction": "outbound" if self.outbound else "inbound",
            "connected_for_s": round(self.connected_for_s, 1),
            "found_by": self.found_by, "path": self.path, "via": self.via,
        }


def path_of(address: Address) -> str:
    """How a direct link reaches a peer: ``loopback``, ``lan`` or ``internet``."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return "internet"
    if ip.is_loopback:
        return "loopback"
    if ip.is_private or ip.is_link_local:
        return "lan"
    return "internet"


def via_of(found_by: str, path: str) -> str:
    """The way a peer is reached, as the chat client's status bar counts them:
    ``bootstrap`` (the link is to a bootstrap server, which relays envelopes), ``lan``
    (found by mDNS, or at a private or link-local address), else ``direct``."""
    if found_by == "bootstrap-server":
        return "bootstrap"
    if found_by == "mdns" or path == "lan":
        return "lan"
    return "direct"


def sync_json(progress: SyncProgress | None) -> dict[str, int] | None:
    """A channel's sync progress as ``channel.list`` and the ``sync`` event show it."""
    if progress is None:
        return None
    return {"received": progress.received, "expected": progress.expected}


class _SystemRandom(random.SystemRandom):
    """CSPRNG for nonces and jitter in production (the simulator passes a seeded Random)."""


class Node:
    """A running node: core + QUIC transport + store. Not thread-safe; one event loop."""

    def __init__(self, identity: Identity, config: NodeConfig, store: Store | None = None,
                 *, bootstrap: tuple[Address, ...] = ()) -> None:
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
        # Signature checks of catch-up batches run on worker threads (libsodium releases
        # the GIL); the core just receives the verdicts. (Checking them while the loop
        # applies earlier batches was tried and is slower: the busy loop thread keeps the
        # GIL, and the workers wait up to a switch interval after every signature.)
        self._verifier = ThreadPoolExecutor(max_workers=VERIFY_THREADS - 1,
                                            thread_name_prefix="p2pchat-verify")
        self.core = NodeCore(identity, config, _SystemRandom(), agent=AGENT,
                             verify_batch=self._verify_batch, bootstrap=bootstrap)
        if store is None:  # nothing would keep snapshots or a search index
            self.core.hub.snapshot_every = 0
            self.core.hub.index_messages = False
        self.transport = QuicTransport(
            identity, self, handshake_timeout=config.link.handshake_timeout,
            idle_timeout=config.link.idle_timeout)
        self.listen_address: Address | None = None
        self.started_at = time.time()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._driver: Driver[Event, Effect] = Driver(self.core, self._execute, self._arm,
                                                     self._timer_event, self._spun)
        self._next_request = 1
        self._connects: dict[int, asyncio.Future[str]] = {}
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._disconnects: dict[int, asyncio.Future[DisconnectFinished]] = {}
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: ``dm`` calls waiting for a receipt: each is woken after every dispatch
        self._dm_waiters: set[asyncio.Event] = set()
        # (True, persistence effect) or (False, callback(ok)); None stops the writer
        self._writes: asyncio.Queue[tuple[bool, Any] | None] = asyncio.Queue()
        self._writer = self._loop.create_task(self._write_loop())
        self._pending_write = 0
        self._stopped = asyncio.Event()
        self.peer_listeners: list[Callable[[Effect], None]] = []
        #: control clients watching for changes (``watch``): one bounded queue each
        self.watchers: set[asyncio.Queue[dict[str, Any]]] = set()
        #: per syncing channel, when its last ``sync`` event went out; the channels whose
        #: newest figure waits out SYNC_EVENT_INTERVAL, and the timer that sends them
        self._sync_told: dict[bytes, float] = {}
        self._sync_due: set[bytes] = set()
        self._sync_timer: asyncio.TimerHandle | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, host: str, port: int) -> Address:
        self.listen_address = await self.transport.listen(host, port)
        if self.store is not None:
            stored = await self.store.load_channels()
            if stored:
                started = time.perf_counter()
                self._dispatch(ChannelsLoaded(tuple(stored), head_unsure=self.head_unsure))
                for ch in stored:
                    restored, replayed = self.core.hub.load_report.get(ch.channel, (0, 0))
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
        if self._sync_timer is not None:
            self._sync_timer.cancel()
        await self._writes.put(None)
        await self._writer
        self._verifier.shutdown(wait=True)
        if self.store is not None:
            await self.store.close()

    def _verify_batch(self, envelopes: list[Envelope]) -> list[bool]:
        if len(envelopes) < PARALLEL_VERIFY_MIN:
            return verify_in_order(envelopes)
        # one slice per thread (ThreadPoolExecutor.map would make a future per item)
        slices = [envelopes[i::VERIFY_THREADS] for i in range(VERIFY_THREADS)]
        # the loop's thread checks the first slice itself instead of waiting idle
        futures = [self._verifier.submit(verify_in_order, s) for s in slices[1:]]
        results = [verify_in_order(slices[0])] + [f.result() for f in futures]
        verdicts = [False] * len(envelopes)
        for i, result in enumerate(results):
            verdicts[i::VERIFY_THREADS] = result
        return verdicts

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    # --- API used by the control server and the benchmark ---------------------------

    async def connect(self, address: Address, expected_did: str | None = None) -> str:
        """Dial ``address`` and return the authenticated peer DID, or raise LocalError."""
        if expected_did is not None:
            public_key_from_did(expected_did)  # IdentityError is a LocalError
        request_id = self._new_request()
        future: asyncio.Future[str] = self._loop.create_future()
        self._connects[request_id] = future
        self._dispatch(ConnectRequested(request_id, address, expected_did))
        limit = self.config.dial_timeout + self.config.link.handshake_timeout + CONNECT_GRACE
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise LocalError(f"connecting to {format_address(address)} timed out") from None
        finally:
            self._connects.pop(request_id, None)

    async def ping(self, did: str, limit: float = 5.0) -> float:
        """Round-trip time to a connected peer, in seconds."""
        request_id = self._new_request()
        future: asyncio.Future[float] = self._loop.create_future()
        self._pings[request_id] = future
        self._dispatch(PingRequested(request_id, did))
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise LocalError(f"no pong from {did} within {limit:g} s") from None
        finally:
            self._pings.pop(request_id, None)

    async def disconnect(self, did: str | None = None, address: Address | None = None
                         ) -> DisconnectFinished:
        """Close links to a peer and forget it as a reconnect target (committed first)."""
        request_id = self._new_request()
        future: asyncio.Future[DisconnectFinished] = self._loop.create_future()
        self._disconnects[request_id] = future
        self._dispatch(DisconnectRequested(request_id, did, address))
        try:
            return await future
        finally:
            self._disconnects.pop(request_id, None)

    # --- channels ------------------------------------------------------------------------

    async def _request(self, make: Callable[[int], Event]) -> dict[str, Any]:
        request_id = self._new_request()
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._answers[request_id] = future
        self._dispatch(make(request_id))
        try:
            return await future
        finally:
            self._answers.pop(request_id, None)

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
        router = self.core.hub.dm_relay
        if router.delivered(channel, seq):
            return "delivered", False
        handed = router.handed.get(channel, 0) >= seq
        if self.core.bootstrap.acknowledged(channel) >= own:
            return "stored", handed  # a receipt may still come through the link
        if handed:
            return "relayed", True
        servers = any(s.link_id is not None for s in self.core.bootstrap.servers.values())
        return "pending", servers  # an open server link acknowledges the upload soon

    async def send(self, channel: bytes, text: str, reply_to: str = "") -> dict[str, Any]:
        """Post ``text``; returns once the envelope is committed to the store."""
        lagging = self.transport.lagging(self._loop.time())
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
        hub = self.core.hub
        peers: list[tuple[str, str, int]] = []
        if not with_peers:
            pass  # found through mDNS or bootstrap servers instead
        elif self.listen_address and self.listen_address[0] not in ("0.0.0.0", "::"):
            # the inviter vouches for itself; its own address is the one to give out
            peers.append((self.identity.did, *self.listen_address))
        else:
            # listening on every interface: we cannot tell which address the invitee
            # reaches, so give the peers we dialled (they have reachable addresses)
            for p in self.core.peers(self._loop.time()):
                if p.outbound and len(peers) < MAX_INVITE_PEERS:
                    peers.append((p.did, p.address[0], p.address[1]))
        try:
            invite = hub.invite_for(channel, _wall_ms(), tuple(peers))
        except ValueError as exc:
            raise LocalError(str(exc)) from None
        return invite.to_uri(self.identity)

    def peers(self) -> list[PeerView]:
        now = self._loop.time()
        return [self._view(p) for p in self.core.peers(now)]

    def status(self) -> dict[str, Any]:
        return {
            "did": self.identity.did,
            "name": self.identity.name,
            "listen": format_address(self.listen_address) if self.listen_address else None,
            "peers": len(self.core.peers(self._loop.time())),
            "bootstrap_servers": len(self.core.bootstrap.servers),
            "links": self.core.link_count(),
            "wanted": [{"address": format_address(a), "did": d} for a, d in self.core.wanted()],
            "uptime_s": round(time.time() - self.started_at, 1),
            "version": __version__,
        }

    @staticmethod
    def _view(p: PeerInfo) -> PeerView:
        path = path_of(p.address)
        return PeerView(p.did, p.name, format_address(p.address), p.outbound,
                        None if p.rtt is None else p.rtt * 1000.0, p.connected_for,
                        p.found_by, path, via_of(p.found_by, path))

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

    def _new_request(self) -> int:
        self._next_request += 1
        return self._next_request

    def _dispatch(self, event: Event) -> None:
        self._after(event, self._driver.dispatch(event, self._loop.time()))

    def _on_timer(self) -> None:
        self._timer = None
        self._after(None, self._driver.fire(self._loop.time()))

    def _after(self, event: Event | None, effects: list[Effect]) -> None:
        for woken in self._dm_waiters:
            woken.set()
        sync = self._sync_events(self._loop.time())
        if self.watchers:
            self._tell_watchers(effects, sync)
        if not isinstance(event, (SendRequested, MessageOpRequested, ModRequested)):
            self.transport.flush()  # answers to the network and pings go out at once

    def _timer_event(self) -> TimerExpired:
        lagging = self.core.wants_lag() and self.transport.lagging(self._loop.time())
        return TimerExpired(lagging)

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self._stopped.is_set():
            self._timer = self._loop.call_at(deadline, self._on_timer)

    @staticmethod
    def _spun(what: str) -> None:
        log.warning("core timer: %s", what)

    def _execute(self, effect: Effect) -> None:
        match effect:
            case Transmit(link_id=link_id, data=data):
                if effect.after_store and self._pending_write:
                    transport = self.transport

                    def send_stored(ok: bool) -> None:
                        if ok:  # never hand out what we failed to store
                            transport.send(link_id, data)
                            transport.flush()

                    self._after_writes(send_stored)
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
            case SavePeer() | ForgetPeer() | PersistEnvelopes() | PersistSnapshot() \
                    | IndexMessages() | PersistChannel() | PersistCursor() | PersistPrekey() \
                    | PersistEpochKey() | ForgetEpochKey():
                if self.store is not None:
                    self._enqueue_write(effect)
            case DisconnectFinished():
                waiter = self._disconnects.get(effect.request_id)
                if waiter is not None:
                    done = effect
                    self._after_writes(lambda ok: _resolve(waiter, done) if ok else _fail(
                        waiter, "disconnected, but the node could not forget the peer in "
                        "its store (database error, see the node log)"))
            case ChannelAnswer():
                answer = self._answers.get(effect.request_id)
                if answer is not None:
                    told = effect
                    self._after_writes(lambda ok: _answer(answer, told, ok))
            case ConnectFinished():
                finished = effect
                self._after_writes(lambda ok: self._finish_connect(finished, ok))
            case PingFinished():
                future = self._pings.get(effect.request_id)
                if future is not None and not future.done():
                    if effect.rtt is not None:
                        future.set_result(effect.rtt)
                    else:
                        future.set_exception(LocalError(effect.error or "ping failed"))
            case _:
                assert_never(effect)

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue of change events for a control client (see ``_tell_watchers``);
        the caller removes it from :attr:`watchers` when done."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_WATCH_EVENTS)
        self.watchers.add(queue)
        return queue

    def _tell_watchers(self, effects: list[Effect], sync: list[dict[str, Any]]) -> None:
        """One event per changed channel, key rotation and peer change of this turn, and
        the ``sync`` events due (see :meth:`_sync_events`)."""
        events: dict[tuple[str, str], dict[str, Any]] = {}
        for effect in effects:
            if isinstance(effect, PersistEnvelopes):
                channel = format_channel_id(effect.channel)
                events[("channel", channel)] = {"event": "channel", "channel": channel}
            elif isinstance(effect, PersistEpochKey):
                channel = format_channel_id(effect.channel)
                events[("keys", channel)] = {"event": "keys", "channel": channel}
            elif isinstance(effect, (PeerConnected, PeerDisconnected)):
                events[("peers", "")] = {"event": "peers"}
        self._put_events(list(events.values()) + sync)

    def _put_events(self, events: list[dict[str, Any]]) -> None:
        """Queue ``events`` for every watcher. One that does not keep up gets ``lagged``
        (refresh everything) instead of an unbounded backlog."""
        if not events:
            return
        for queue in self.watchers:
            for event in events:
                if queue.full():
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait({"event": "lagged"})
                    break
                queue.put_nowait(event)

    def _sync_events(self, now: float) -> list[dict[str, Any]]:
        """``sync`` events for the channels whose progress changed (the hub's
        ``sync_changed``), at most one per channel per SYNC_EVENT_INTERVAL: a figure
        that comes sooner waits for the timer, which sends the newest one then."""
        hub = self.core.hub
        if not hub.sync_changed:
            return []
        changed, hub.sync_changed = hub.sync_changed, set()
        if not self.watchers:
            self._sync_told.clear()
            self._sync_due.clear()
            return []
        events = []
        for channel in sorted(changed):
            progress = hub.sync_progress(channel)
            told = self._sync_told.get(channel)
            if progress is not None and told is not None and now - told < SYNC_EVENT_INTERVAL:
                self._sync_due.add(channel)
                self._arm_sync_timer(told + SYNC_EVENT_INTERVAL)
            else:
                events.append(self._sync_event(channel, progress, now))
        return events

    def _sync_event(self, channel: bytes, progress: SyncProgress | None,
                    now: float) -> dict[str, Any]:
        self._sync_due.discard(channel)
        if progress is None:
            self._sync_told.pop(channel, None)
        else:
            self._sync_told[channel] = now
        return {"event": "sync", "channel": format_channel_id(channel),
                "sync": sync_json(progress)}

    def _arm_sync_timer(self, at: float) -> None:
        if self._sync_timer is None and not self._stopped.is_set():
            self._sync_timer = self._loop.call_at(at, self._flush_sync)

    def _flush_sync(self) -> None:
        """The held-back ``sync`` figures whose interval is over (re-armed for the rest)."""
        self._sync_timer = None
        if self._stopped.is_set() or not self.watchers:
            self._sync_due.clear()
            return
        now = self._loop.time()
        hub = self.core.hub
        events = []
        later = []
        for channel in sorted(self._sync_due):
            told = self._sync_told.get(channel, now - SYNC_EVENT_INTERVAL)
            if channel not in hub.channels:
                self._sync_due.discard(channel)
            elif now - told >= SYNC_EVENT_INTERVAL:
                events.append(self._sync_event(channel, hub.sync_progress(channel), now))
            else:
                later.append(told + SYNC_EVENT_INTERVAL)
        if later:
            self._arm_sync_timer(min(later))
        self._put_events(events)

    def _notify(self, effect: Effect) -> None:
        for listener in self.peer_listeners:
            listener(effect)

    def _finish_connect(self, effect: ConnectFinished, stored: bool = True) -> None:
        future = self._connects.get(effect.request_id)
        if future is None or future.done():
            return
        if effect.did is not None and not stored:
            future.set_exception(LocalError(
                f"connected to {effect.did}, but the node could not store it as a peer to "
                "redial (database error, see the node log)"))
        elif effect.did is not None:
            log.info("connected to %s", short_did(effect.did))
            future.set_result(effect.did)
        else:
            future.set_exception(LocalError(effect.error or "connect failed"))

    # --- ordered store writes ------------------------------------------------------------
    #
    # One queue of (write or callback). The writer takes everything queued, commits all
    # its writes in one transaction, then runs the callbacks in order: a callback runs
    # only after every write queued before it has committed.

    def _enqueue_write(self, effect: Effect) -> None:
        self._pending_write += 1
        self._writes.put_nowait((True, effect))

    def _after_writes(self, callback: Callable[[bool], None]) -> None:
        """Run ``callback(ok)`` once the writes queued so far are done (ok: committed)."""
        if self._pending_write == 0:
            callback(True)
            return
        self._pending_write += 1
        self._writes.put_nowait((False, callback))

    async def _commit(self, writes: list[Effect]) -> bool:
        assert self.store is not None
        try:
            await self.store.write(writes, time.time())
            ok = True
        except Exception:
            log.exception("store write failed (%d writes rolled back)", len(writes))
            ok = False
        self._pending_write -= len(writes)
        return ok

    async def _write_loop(self) -> None:
        while True:
            item = await self._writes.get()
            await asyncio.sleep(0)  # group commit: let work that is already runnable queue up
            batch = [item]
            while not self._writes.empty():
                batch.append(self._writes.get_nowait())
            # Everything queued so far goes into one transaction; the callbacks run after it,
            # in order (a callback waits for at least the writes queued before it).
            stop = None in batch
            writes = [fn for entry in batch if entry is not None and entry[0]
                      for fn in (entry[1],)]
            callbacks = [fn for entry in batch if entry is not None and not entry[0]
                         for fn in (entry[1],)]
            ok = await self._commit(writes) if writes else True
            for callback in callbacks:
                self._pending_write -= 1
                callback(ok)
            if stop:
                return


def _wall_ms() -> int:
    return int(time.time() * 1000)


def _answer(future: asyncio.Future[dict[str, Any]], effect: ChannelAnswer, stored: bool) -> None:
    if future.done():
        return
    if not stored:
        future.set_exception(LocalError("the node could not store this change (database "
                                        "error, see the node log); it was not sent"))
    elif effect.result is not None:
        future.set_result(effect.result)
    else:
        future.set_exception(LocalError(effect.error or "request failed"))


def _fail(future: asyncio.Future[Any], message: str) -> None:
    if not future.done():
        future.set_exception(LocalError(message))


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
