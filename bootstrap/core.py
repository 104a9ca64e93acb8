"""The server's sans-IO core: p2pchat's link layer with the bootstrap service on top.

Theory of operation
-------------------
A bootstrap server speaks the ordinary link protocol, so links, handshakes,
keepalive, duplicate links and shutdown are p2pchat's link layer,
:class:`~p2pchat.core.links.LinkCore`, unchanged. :class:`ServerCore` composes one
with :class:`ServicePort`, the link layer's application port
(:class:`~p2pchat.core.links.LinkApp`) implemented by forwarding to
:class:`BootstrapService`: an opened link becomes ``ClientLinked``, an application
frame ``FrameArrived``, a forgotten link ``ClientGone``, each handled at the ``now``
and ``wall_ms`` the link layer passes along. The link layer is generic over its
application's effects, so the service's (:data:`~bootstrap.events.ServiceOutput`)
come back beside the link layer's own, typed as they are.

Service events (store answers) go straight to the service; ``TimerExpired`` goes to
both, the link layer first.

Connections per IP are counted here, on ``LinkEstablished`` (TLS done, before
the link handshake), and released when the link layer forgets the link
(:meth:`ServicePort.link_closed`).

Everything stays I/O-free: ``handle(event, now, wall_ms) -> [effects]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from bootstrap.config import ServerConfig
from bootstrap.events import (
    AppendDone,
    ClientGone,
    ClientLinked,
    FrameArrived,
    IdsChecked,
    Note,
    PruneDone,
    ServerEffect,
    ServerEvent,
    ServiceOutput,
    StoredRead,
    StoreLoaded,
)
from bootstrap.service import BootstrapService, Verifier, ip_key
from p2pchat.core.channels import verify_in_order
from p2pchat.core.events import (
    CloseLink,
    ConnectRequested,
    DataReceived,
    DialFailed,
    DisconnectRequested,
    LinkEstablished,
    LinkLost,
    PeerDiscovered,
    PingRequested,
    RandomSource,
    ShutdownRequested,
    TimerExpired,
    WantedPeersLoaded,
)
from p2pchat.core.link import Link
from p2pchat.core.links import LinkCore
from p2pchat.errors import CloseCode
from p2pchat.identity import Identity
from p2pchat.wire import Frame


class ServicePort:
    """The link layer's application on a server: links and frames go to the service."""

    def __init__(self, service: BootstrapService, released: Callable[[int], None]) -> None:
        self.service = service
        self._released = released

    def link_opened(self, link: Link, now: float, wall_ms: int) -> list[ServiceOutput]:
        assert link.peer_did is not None
        return self.service.handle(ClientLinked(link.link_id, link.peer_did, link.address),
                                   now, wall_ms)

    def frame_received(self, link: Link, frame: Frame, now: float, wall_ms: int
                       ) -> list[ServiceOutput]:
        return self.service.handle(FrameArrived(link.link_id, frame), now, wall_ms)

    def link_closed(self, link: Link, now: float, wall_ms: int) -> list[ServiceOutput]:
        effects = self.service.handle(ClientGone(link.link_id), now, wall_ms)
        self._released(link.link_id)
        return effects


class ServerCore:
    """LinkCore (links) + BootstrapService (frames). See the module docstring."""

    def __init__(self, identity: Identity, config: ServerConfig, rng: RandomSource, now: float,
                 *, agent: str = "p2pchat-bootstrap", verify_batch: Verifier = verify_in_order
                 ) -> None:
        self.identity = identity
        self.config = config
        self.service = BootstrapService(config.service, now, verify_batch)
        self.links: LinkCore[ServiceOutput] = LinkCore(
            identity, config.node, rng, ServicePort(self.service, self._released), agent)
        self._per_ip: dict[str, int] = {}
        self._ip_of: dict[int, str] = {}
        self.connections_refused = 0

    def next_deadline(self) -> float:
        links = self.links.next_deadline()
        service = self.service.next_deadline()
        return service if links is None else min(links, service)

    def connections(self) -> int:
        return self.links.link_count()

    def handle(self, event: ServerEvent, now: float, wall_ms: int) -> list[ServerEffect]:
        effects: list[ServerEffect] = []
        match event:
            case LinkEstablished() if not event.outbound:
                effects += self._on_established(event, now, wall_ms)
            case TimerExpired():
                effects += self.links.handle(event, now, wall_ms)
                effects += self.service.handle(event, now, wall_ms)
            case LinkEstablished() | DataReceived() | LinkLost() | DialFailed() \
                    | ConnectRequested() | PingRequested() | DisconnectRequested() \
                    | PeerDiscovered() | WantedPeersLoaded() | ShutdownRequested():
                effects += self.links.handle(event, now, wall_ms)
            case ClientLinked() | FrameArrived() | ClientGone() | StoreLoaded() | IdsChecked() \
                    | AppendDone() | StoredRead() | PruneDone():
                effects += self.service.handle(event, now, wall_ms)
            case _:
                assert_never(event)
        return effects

    def _on_established(self, ev: LinkEstablished, now: float, wall_ms: int
                        ) -> list[ServerEffect]:
        key = ip_key(ev.address[0])
        limit = self.config.max_connections_per_ip
        if self._per_ip.get(key, 0) >= limit:
            self.connections_refused += 1
            reason = f"too many connections from your address (limit {limit})"
            return [CloseLink(ev.link_id, CloseCode.REFUSED, reason),
                    Note("info", "connection-refused", (("ip", key), ("reason", reason)))]
        before = self.links.link_count()
        effects: list[ServerEffect] = []
        effects += self.links.handle(ev, now, wall_ms)
        if self.links.link_count() > before:
            self._ip_of[ev.link_id] = key
            self._per_ip[key] = self._per_ip.get(key, 0) + 1
        else:
            self.connections_refused += 1
        return effects

    def _released(self, link_id: int) -> None:
        """The link layer forgot a link (through :class:`ServicePort`)."""
        key = self._ip_of.pop(link_id, None)
        if key is None:
            return
        left = self._per_ip[key] - 1
        if left:
            self._per_ip[key] = left
        else:
            del self._per_ip[key]
