"""The link layer, without I/O: links, peers, dialing and reconnects.

Theory of operation
-------------------
``LinkCore.handle(event, now, wall_ms) -> [effects]`` takes the link layer's events
(:data:`~p2pchat.core.events.LinkEvent`: transport events, timers, connect /
disconnect / ping requests, discovered and stored peers, shutdown) and owns every
:class:`~p2pchat.core.link.Link`, the table of wanted peers and their dials. It knows
nothing of what runs over the links: that is its *application*, reached through the
narrow port :class:`LinkApp` -- a link opened, an application frame arrived on it, a
link was forgotten -- whose answers (effects of the application's own type ``F``) it
returns in line with its own (:mod:`p2pchat.core.events` effects: ``Transmit``,
``CloseLink``, ``Dial``, ``PeerConnected``, ...). The chat node
(:class:`~p2pchat.core.node.NodeCore`) and the bootstrap server
(``bootstrap/core.py``) are two such applications. Time is an argument: ``now``
(monotonic seconds) drives the links; ``wall_ms`` is handed to the application as it
came, the link layer never reads it.

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

The application hears of a link at most once each way: :meth:`LinkApp.link_opened`
when its handshake is done and it is the one kept for its DID, and
:meth:`LinkApp.link_closed` exactly once for every link the layer forgets -- also for
links that never opened or lost the duplicate tie-break, which the application never
saw open (a server counts connections from ``LinkEstablished`` on). A
:class:`~p2pchat.errors.RemoteProtocolError` out of
:meth:`LinkApp.frame_received` closes that link with the error's code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, assert_never

from p2pchat.core.config import NodeConfig
from p2pchat.core.events import (
    Address,
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    DataReceived,
    Dial,
    DialFailed,
    DisconnectFinished,
    DisconnectRequested,
    Effect,
    ForgetPeer,
    LinkEstablished,
    LinkEvent,
    LinkLost,
    PeerConnected,
    PeerDisconnected,
    PeerDiscovered,
    PingFinished,
    PingRequested,
    RandomSource,
    SavePeer,
    ShutdownRequested,
    TimerExpired,
    WantedPeersLoaded,
    format_address,
)
from p2pchat.core.link import Link, LinkState
from p2pchat.errors import CloseCode, RemoteProtocolError
from p2pchat.identity import Identity, short_did
from p2pchat.wire import Frame
from p2pchat.wire.frames import NONCE_SIZE

#: the application's effects (whatever its runtime carries out besides the link layer's)
F = TypeVar("F")


class LinkApp(Protocol[F]):
    """What runs over the links: the port :class:`LinkCore` calls. Each call returns
    the application's effects, which the link layer passes on in order."""

    def link_opened(self, link: Link, now: float, wall_ms: int) -> list[F]:
        """``link`` finished its handshake (its peer DID is proven) and is the one link
        kept for that DID."""
        ...

    def frame_received(self, link: Link, frame: Frame, now: float, wall_ms: int) -> list[F]:
        """An application frame (not a handshake or ping frame) arrived on the open
        ``link``. May raise :class:`~p2pchat.errors.RemoteProtocolError`."""
        ...

    def link_closed(self, link: Link, now: float, wall_ms: int) -> list[F]:
        """The link layer forgot ``link`` (closed, lost, or dropped as a duplicate),
        whether or not it was ever opened to the application."""
        ...


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


class LinkCore(Generic[F]):
    """Sans-IO link layer under an application ``app``. See the module docstring."""

    def __init__(self, identity: Identity, config: NodeConfig, rng: RandomSource,
                 app: LinkApp[F], agent: str = "p2pchat") -> None:
        self.identity = identity
        self.config = config
        self.agent = agent
        self._app = app
        self._rng = rng
        self._links: dict[int, Link] = {}
        self._by_did: dict[str, int] = {}  # the one open link per peer
        self._wanted: dict[Address, _Wanted] = {}
        self._dials: dict[int, Address] = {}
        self._next_dial_id = 1
        self._shutting_down = False

    # --- queries -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest link timer or redial; ``None`` when nothing is due."""
        times = [d for link in self._links.values() if (d := link.deadline()) is not None]
        times += [w.next_dial_at for w in self._wanted.values() if w.next_dial_at is not None]
        return min(times, default=None)

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

    def links(self) -> Mapping[int, Link]:
        """Every link by id, open or in its handshake (read-only)."""
        return self._links

    def connected_to(self, did: str) -> bool:
        """Whether a link to ``did`` is open."""
        return did in self._by_did

    def wanted(self) -> list[tuple[Address, str | None]]:
        return sorted((w.address, w.did) for w in self._wanted.values())

    # --- the entry points ---------------------------------------------------------

    def handle(self, event: LinkEvent, now: float, wall_ms: int) -> list[Effect | F]:
        match event:
            case LinkEstablished():
                return self._on_established(event, now, wall_ms)
            case DataReceived():
                return self._on_data(event, now, wall_ms)
            case TimerExpired():
                return self._on_timer(now, wall_ms)
            case LinkLost():
                return self._on_lost(event, now, wall_ms)
            case DialFailed():
                return [*self._on_dial_failed(event, now)]
            case ConnectRequested():
                return [*self._on_connect(event)]
            case PingRequested():
                return [*self._on_ping(event, now)]
            case DisconnectRequested():
                return self._on_disconnect(event, now, wall_ms)
            case PeerDiscovered():
                return [*self._on_discovered(event)]
            case WantedPeersLoaded():
                effects: list[Effect | F] = []
                for address, did in event.peers:
                    effects += self.want(address, did, "stored")
                return effects
            case ShutdownRequested():
                return self._on_shutdown(event, now, wall_ms)
            case _:
                assert_never(event)

    def want(self, address: Address, did: str | None, source: str) -> list[Effect]:
        """Keep ``address`` wanted for good (redialled whenever no link to its DID is
        open) and dial it now; nothing if it is wanted already or the table is full."""
        if address in self._wanted or len(self._wanted) >= self.config.max_wanted_peers:
            return []
        wanted = _Wanted(address, did, persistent=True, source=source)
        self._wanted[address] = wanted
        return self._dial(wanted)

    # --- handlers -----------------------------------------------------------------

    def _on_established(self, ev: LinkEstablished, now: float, wall_ms: int
                        ) -> list[Effect | F]:
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
        return self._after(link, link.start(now), now, wall_ms)

    def _on_data(self, ev: DataReceived, now: float, wall_ms: int) -> list[Effect | F]:
        link = self._links.get(ev.link_id)
        if link is None:
            return []
        return self._after(link, link.receive(ev.data, now), now, wall_ms)

    def _on_timer(self, now: float, wall_ms: int) -> list[Effect | F]:
        effects: list[Effect | F] = []
        for link in list(self._links.values()):
            deadline = link.deadline()
            if deadline is not None and deadline <= now:
                effects += self._after(link, link.on_timer(now), now, wall_ms)
        for wanted in list(self._wanted.values()):
            if wanted.next_dial_at is not None and wanted.next_dial_at <= now:
                effects += self._dial(wanted)
        return effects

    def _on_lost(self, ev: LinkLost, now: float, wall_ms: int) -> list[Effect | F]:
        link = self._links.get(ev.link_id)
        if link is None:
            return []
        link.lost(ev.reason)
        return self._after(link, [], now, wall_ms)

    def _on_dial_failed(self, ev: DialFailed, now: float) -> list[Effect]:
        address = self._dials.pop(ev.dial_id, None)
        wanted = self._wanted.get(address) if address is not None else None
        if wanted is None or wanted.dial_id != ev.dial_id:
            return []
        wanted.dial_id = None
        return self._attempt_failed(wanted, f"cannot reach {format_address(wanted.address)}: "
                                    f"{ev.reason}", now)

    def _on_connect(self, ev: ConnectRequested) -> list[Effect]:
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

    def _on_disconnect(self, ev: DisconnectRequested, now: float, wall_ms: int
                       ) -> list[Effect | F]:
        effects: list[Effect | F] = []
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
                effects += self._after(link, [], now, wall_ms)
                closed += 1
        effects.append(DisconnectFinished(ev.request_id, closed, tuple(sorted(forgotten))))
        return effects

    def _on_discovered(self, ev: PeerDiscovered) -> list[Effect]:
        if self._shutting_down or ev.did == self.identity.did or ev.did in self._by_did \
                or ev.address in self._wanted \
                or len(self._wanted) >= self.config.max_wanted_peers:
            return []
        # dialled once, with the DID it must prove; forgotten if that fails (discovery
        # will offer it again), and not stored: it is found afresh after a restart
        wanted = _Wanted(ev.address, ev.did, persistent=False, source=ev.source)
        self._wanted[ev.address] = wanted
        return self._dial(wanted)

    def _on_shutdown(self, ev: ShutdownRequested, now: float, wall_ms: int
                     ) -> list[Effect | F]:
        self._shutting_down = True
        effects: list[Effect | F] = []
        for wanted in self._wanted.values():
            wanted.next_dial_at = None
            effects += [ConnectFinished(r, None, ev.reason) for r in wanted.requests]
            wanted.requests.clear()
        for link in list(self._links.values()):
            effects += link.close(CloseCode.SHUTDOWN, ev.reason)
            effects += self._after(link, [], now, wall_ms)
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

    def _forget(self, link: Link, now: float, wall_ms: int) -> list[F]:
        """Drop ``link`` from the tables and tell the application (once per link)."""
        self._links.pop(link.link_id, None)
        if link.peer_did is not None and self._by_did.get(link.peer_did) == link.link_id:
            del self._by_did[link.peer_did]
        return self._app.link_closed(link, now, wall_ms)

    def _wanted_for(self, link: Link) -> _Wanted | None:
        if not link.outbound:
            return None
        wanted = self._wanted.get(link.address)
        return wanted

    def _after(self, link: Link, changed: Iterable[Effect], now: float, wall_ms: int
               ) -> list[Effect | F]:
        """Bookkeeping after a link changed (``changed``: its own effects): opened,
        closed, pings answered; its application frames go to the application."""
        effects: list[Effect | F] = [*changed]
        for request_id, rtt in link.finished_pings:
            error = None if rtt is not None else "too many pings in flight"
            effects.append(PingFinished(request_id, rtt, error))
        link.finished_pings.clear()
        if link.is_open and not link.announced:
            effects += self._on_link_open(link, now, wall_ms)
            if link.announced and link.is_open:
                effects += self._app.link_opened(link, now, wall_ms)
        if link.inbox:
            frames, link.inbox = link.inbox, []
            for frame in frames:
                if not link.is_open:
                    break
                try:
                    effects += self._app.frame_received(link, frame, now, wall_ms)
                except RemoteProtocolError as exc:
                    effects += link.close(exc.code, str(exc))
        if link.state is LinkState.CLOSED and link.link_id in self._links:
            effects += self._on_link_closed(link, now, wall_ms)
        return effects

    def _on_link_open(self, link: Link, now: float, wall_ms: int) -> list[Effect | F]:
        assert link.peer_did is not None
        did = link.peer_did
        link.announced = True
        effects: list[Effect | F] = []
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
            effects += self._forget(drop, now, wall_ms)
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

    def _on_link_closed(self, link: Link, now: float, wall_ms: int) -> list[Effect | F]:
        was_current = link.peer_did is not None and self._by_did.get(link.peer_did) == link.link_id
        effects: list[Effect | F] = [*self._forget(link, now, wall_ms)]
        reason = link.close_reason or "closed"
        effects += [
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
