"""ServerCore: p2pchat's link layer (NodeCore) with the bootstrap service in its hub slot.

A client is a real :class:`p2pchat.core.link.Link` state machine; bytes are pumped by
hand between it and the server core, so the handshake, the routing of bootstrap frames
and the connection limits are exercised without sockets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import assert_never

import pytest

from bootstrap.config import ServerConfig
from bootstrap.core import ServerCore
from bootstrap.events import (
    AppendEnvelopes,
    CheckIds,
    DeleteRecords,
    Note,
    PruneOlder,
    ReadStored,
    SaveRecord,
    ServerEffect,
    TrimTopic,
)
from bootstrap.testing import MemoryStore
from p2pchat.bootstrap_proto import server_topic
from p2pchat.core.config import LinkConfig
from p2pchat.core.events import (
    ChannelAnswer,
    CloseLink,
    ConnectFinished,
    DataReceived,
    Dial,
    DisconnectFinished,
    Effect,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
    LinkEstablished,
    LinkLost,
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
    ShutdownRequested,
    SyncChanged,
    TimerExpired,
    Transmit,
)
from p2pchat.core.link import Link
from p2pchat.errors import CloseCode
from p2pchat.identity import Identity
from p2pchat.wire import Frame, Subscribe
from p2pchat.wire.frames import Stored, Upload, Uploaded, Watch
from tests.unit.channelkit import Kit

FP = b"f" * 32
WALL = 1_700_000_000_000


class Rig:
    def __init__(self, config: ServerConfig | None = None) -> None:
        self.kit = Kit(3)
        self.server_id = self.kit.identity("server")
        self.core = ServerCore(self.server_id, config or ServerConfig(), random.Random(1), 0.0)
        self.store = MemoryStore()
        self.now = 0.0
        self.clients: dict[int, Link] = {}
        self.closed: dict[int, tuple[CloseCode, str]] = {}
        self.handle_all(self.core.handle(self.store.load(WALL), self.now, WALL))
        self._next = 1

    def handle_all(self, effects: Sequence[ServerEffect]) -> None:
        for effect in effects:
            match effect:
                case Transmit():
                    client = self.clients.get(effect.link_id)
                    if client is not None:
                        self.to_client(effect.link_id, client.receive(effect.data, self.now))
                case CloseLink():
                    self.closed[effect.link_id] = (effect.code, effect.reason)
                case CheckIds() | AppendEnvelopes() | ReadStored() | PruneOlder() \
                        | TrimTopic() | SaveRecord() | DeleteRecords():
                    answer = self.store.execute(effect)
                    if answer is not None:
                        self.handle_all(self.core.handle(answer, self.now, WALL))
                case Note() | Dial() | PeerConnected() | PeerDisconnected() \
                        | ConnectFinished() | PingFinished() | DisconnectFinished() \
                        | ForgetPeer() | SavePeer() | PersistCursor() | PersistPrekey() \
                        | PersistEpochKey() | ForgetEpochKey() | PersistChannel() \
                        | PersistEnvelopes() | PersistSnapshot() | IndexMessages() \
                        | SyncChanged() | ChannelAnswer():
                    pass  # notes and the node's own bookkeeping: nothing to carry out
                case _:
                    assert_never(effect)

    def to_client(self, link_id: int, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Transmit):
                self.handle_all(self.core.handle(DataReceived(link_id, effect.data), self.now,
                                                 WALL))
            elif isinstance(effect, CloseLink):
                self.closed[link_id] = (effect.code, effect.reason)

    def connect(self, identity: Identity, ip: str = "10.0.0.1") -> int:
        link_id = self._next
        self._next += 1
        client = Link(link_id, identity=identity, config=LinkConfig(), outbound=True,
                      address=("192.0.2.7", 7446), cert_fingerprint=FP,
                      peer_cert_key=self.server_id.public_key.raw, expected_did=None,
                      nonce=self.kit.rb(32), now=self.now, agent="test")
        self.clients[link_id] = client
        self.handle_all(self.core.handle(LinkEstablished(link_id, False, (ip, 5000 + link_id),
                                                         FP), self.now, WALL))
        if link_id not in self.closed:
            self.to_client(link_id, client.start(self.now))
        return link_id

    def send(self, link_id: int, frame: Frame) -> list[Frame]:
        client = self.clients[link_id]
        self.to_client(link_id, [client.send(frame)])
        got, client.inbox = client.inbox, []
        return got

    def lose(self, link_id: int) -> None:
        self.handle_all(self.core.handle(LinkLost(link_id, "gone"), self.now, WALL))


def test_bootstrap_frames_travel_over_an_authenticated_link() -> None:
    rig = Rig()
    alice, bob = rig.kit.identity("alice"), rig.kit.identity("bob")
    state, genesis = rig.kit.found(alice)
    topic = server_topic(state.channel_id)
    a = rig.connect(alice)
    assert rig.clients[a].is_open
    assert 1 == rig.core.service.client_count
    assert [Uploaded(topic=topic, accepted=1, duplicates=0, last=1)] == \
        rig.send(a, Upload(topic=topic, items=(genesis.encode(),)))
    b = rig.connect(bob, ip="10.0.0.2")
    frames = rig.send(b, Watch(topic=topic, cursor=0))
    assert 1 == len(frames) and isinstance(frames[0], Stored)
    assert genesis.encode() == frames[0].items[0].envelope
    # a node that takes us for a peer: its subscribe is ignored, the link stays
    assert [] == rig.send(b, Subscribe(topics=()))
    assert b not in rig.closed


def test_a_server_frame_from_a_client_closes_its_link_only() -> None:
    rig = Rig()
    a = rig.connect(rig.kit.identity("alice"))
    b = rig.connect(rig.kit.identity("bob"))
    rig.send(a, Stored(topic=b"t" * 32, items=()))
    assert CloseCode.PROTOCOL_ERROR == rig.closed[a][0]
    assert "bootstrap server" in rig.closed[a][1]
    assert b not in rig.closed
    assert 1 == rig.core.service.client_count


def test_connections_per_ip_are_limited_and_released() -> None:
    rig = Rig(ServerConfig(max_connections_per_ip=2))
    ids = [rig.kit.identity(f"n{i}") for i in range(5)]
    first = rig.connect(ids[0])
    rig.connect(ids[1])
    third = rig.connect(ids[2])
    assert (CloseCode.REFUSED, "too many connections from your address (limit 2)") == \
        rig.closed[third]
    other = rig.connect(ids[3], ip="10.0.0.9")
    assert other not in rig.closed
    rig.lose(first)
    fourth = rig.connect(ids[4])
    assert fourth not in rig.closed
    assert 1 == rig.core.connections_refused


@pytest.mark.parametrize("ip", ["2001:db8::1", "::ffff:10.0.0.1"])
def test_ipv6_connections_count_per_64_and_mapped_ipv4_as_ipv4(ip: str) -> None:
    rig = Rig(ServerConfig(max_connections_per_ip=1))
    rig.connect(rig.kit.identity("a"), ip="2001:db8::2" if ip.startswith("2001") else "10.0.0.1")
    refused = rig.connect(rig.kit.identity("b"), ip=ip)
    assert CloseCode.REFUSED == rig.closed[refused][0]


def test_shutdown_closes_links_with_a_reason_and_timers_keep_running() -> None:
    rig = Rig()
    a = rig.connect(rig.kit.identity("alice"))
    deadline = rig.core.next_deadline()
    assert deadline > 0
    rig.now = deadline
    rig.handle_all(rig.core.handle(TimerExpired(), rig.now, WALL))
    effects = rig.core.handle(ShutdownRequested("bootstrap server shutting down"), rig.now, WALL)
    closes = [e for e in effects if isinstance(e, CloseLink)]
    assert [(a, CloseCode.SHUTDOWN, "bootstrap server shutting down")] == \
        [(c.link_id, c.code, c.reason) for c in closes]
    assert not any(isinstance(e, PeerConnected) for e in effects)
