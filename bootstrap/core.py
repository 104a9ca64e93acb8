"""The server's sans-IO core: p2pchat's link layer with the bootstrap service on top.

Theory of operation
-------------------
A bootstrap server speaks the ordinary link protocol, so links, handshakes,
keepalive, duplicate links and shutdown are p2pchat's :class:`NodeCore`,
unchanged. :class:`ServerCore` *wraps* one and plugs the service into the slot
where a node keeps its :class:`ChannelHub`: NodeCore hands every open link, every
application frame and every closed link to ``self.hub`` (``on_link_open``,
``on_frame``, ``on_link_closed``), so a hub subclass whose channel set stays empty
and whose three entry points forward to :class:`BootstrapService` routes all
bootstrap frames without touching NodeCore's code or private methods. (The other
ways considered: overriding ``NodeCore._after`` would copy its bookkeeping and
break silently when it changes; a "service" hook in NodeCore would be cleaner
still but belongs to the core's owners.)

NodeCore passes the hub no clock (``on_frame(link, frame, 0)``), so ServerCore
stores the event's ``now`` and ``wall_ms`` on the hub before every call.

Connections per IP are counted here, on ``LinkEstablished`` (TLS done, before
the link handshake), and released when NodeCore forgets the link.

Everything stays I/O-free: ``handle(event, now, wall_ms) -> [effects]``.
"""

from __future__ import annotations

from typing import cast

from bootstrap.config import ServerConfig
from bootstrap.events import (
    ClientGone,
    ClientLinked,
    FrameArrived,
    Note,
    ServerEffect,
    ServerEvent,
    ServiceEvent,
    ServiceOutput,
)
from bootstrap.service import BootstrapService, Verifier, ip_key
from p2pchat.core.channels import ChannelHub, verify_in_order
from p2pchat.core.events import (
    CloseLink,
    Effect,
    LinkEstablished,
    RandomSource,
    TimerExpired,
)
from p2pchat.core.link import Link
from p2pchat.core.node import NodeCore
from p2pchat.errors import CloseCode
from p2pchat.identity import Identity
from p2pchat.wire import Frame


class ServiceHub(ChannelHub):
    """NodeCore's hub slot on a server: no channels; frames go to the service."""

    def __init__(self, identity: Identity, rng: RandomSource, service: BootstrapService,
                 on_closed: ServerCore) -> None:
        super().__init__(identity, rng.randbytes)
        self.snapshot_every = 0
        self.index_messages = False
        self.service = service
        self._core = on_closed
        self.now = 0.0
        self.wall_ms = 0

    def on_link_open(self, link: Link) -> list[Effect]:
        assert link.peer_did is not None
        return _through_node(self.service.handle(
            ClientLinked(link.link_id, link.peer_did, link.address), self.now, self.wall_ms))

    def on_frame(self, link: Link, frame: Frame, now_ms: int) -> list[Effect]:
        return _through_node(self.service.handle(FrameArrived(link.link_id, frame), self.now,
                                                 self.wall_ms))

    def on_link_closed(self, link_id: int) -> None:
        self.service.handle(ClientGone(link_id), self.now, self.wall_ms)
        self._core.released(link_id)


class ServerCore:
    """NodeCore (links) + BootstrapService (frames). See the module docstring."""

    def __init__(self, identity: Identity, config: ServerConfig, rng: RandomSource, now: float,
                 *, agent: str = "p2pchat-bootstrap", verify_batch: Verifier = verify_in_order
                 ) -> None:
        self.identity = identity
        self.config = config
        self.node = NodeCore(identity, config.node, rng, agent=agent)
        self.service = BootstrapService(config.service, now, verify_batch)
        self.hub = ServiceHub(identity, rng, self.service, self)
        self.node.hub = self.hub
        self._per_ip: dict[str, int] = {}
        self._ip_of: dict[int, str] = {}
        self.connections_refused = 0

    def next_deadline(self) -> float:
        node = self.node.next_deadline()
        service = self.service.next_deadline()
        return service if node is None else min(node, service)

    def connections(self) -> int:
        return self.node.link_count()

    def handle(self, event: ServerEvent, now: float, wall_ms: int) -> list[ServerEffect]:
        self.hub.now, self.hub.wall_ms = now, wall_ms
        effects: list[ServerEffect] = []
        if isinstance(event, LinkEstablished) and not event.outbound:
            effects += self._on_established(event, now)
        elif isinstance(event, TimerExpired):
            effects += self.node.handle(event, now)
            effects += self.service.handle(event, now, wall_ms)
        elif isinstance(event, ServiceEvent):
            effects += self.service.handle(event, now, wall_ms)
        else:
            effects += self.node.handle(event, now)
        return effects

    def _on_established(self, ev: LinkEstablished, now: float) -> list[ServerEffect]:
        key = ip_key(ev.address[0])
        limit = self.config.max_connections_per_ip
        if self._per_ip.get(key, 0) >= limit:
            self.connections_refused += 1
            reason = f"too many connections from your address (limit {limit})"
            return [CloseLink(ev.link_id, CloseCode.REFUSED, reason),
                    Note("info", "connection-refused", (("ip", key), ("reason", reason)))]
        before = self.node.link_count()
        effects: list[ServerEffect] = []
        effects += self.node.handle(ev, now)
        if self.node.link_count() > before:
            self._ip_of[ev.link_id] = key
            self._per_ip[key] = self._per_ip.get(key, 0) + 1
        else:
            self.connections_refused += 1
        return effects

    def released(self, link_id: int) -> None:
        """NodeCore forgot a link (called through the hub; may come twice)."""
        key = self._ip_of.pop(link_id, None)
        if key is None:
            return
        left = self._per_ip[key] - 1
        if left:
            self._per_ip[key] = left
        else:
            del self._per_ip[key]


def _through_node(effects: list[ServiceOutput]) -> list[Effect]:
    """The service's effects, passed back through NodeCore's hub slot (typed for the
    node's effects) to :meth:`ServerCore.handle`, which hands them on as they are."""
    return cast(list[Effect], effects)
