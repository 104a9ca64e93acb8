"""The node's side of a bootstrap server, against a scripted (and hostile) server.

A real NodeCore is configured with one server address; the "server" is a NodeCore
that only completes the link handshake. Frames the server would send are injected
into the node's link by hand, so every answer, including malformed or lying ones,
can be tried without a network.
"""

from __future__ import annotations

import random

from p2pchat.bootstrap_proto import make_record, server_topic
from p2pchat.channel.keys import identity_prekey
from p2pchat.channel.state import ChannelState
from p2pchat.core.events import (
    ChannelCreateRequested,
    DataReceived,
    Dial,
    Effect,
    PersistCursor,
    PersistEnvelopes,
    Started,
)
from p2pchat.core.node import NodeCore
from p2pchat.wire import Frame, encode_frame
from p2pchat.wire.frames import (
    Announce,
    Lookup,
    PeerRecord,
    Peers,
    Refused,
    Stored,
    StoredItem,
    Upload,
    Uploaded,
    Watch,
)
from tests.unit.corenet import Net, make_identity, sent_frames

WALL = 1_800_000_000_000


def _world() -> tuple[Net, NodeCore, int, bytes]:
    net = Net()
    net.add("node")
    net.add("server")
    server_address = net.address_of["server"]
    node = NodeCore(net.identities["node"], net.config, random.Random(1), agent="test",
                    bootstrap=(server_address,))
    net.cores["node"] = node
    net.cores["server"].hub.on_frame = lambda link, frame, now_ms: []  # type: ignore[method-assign]
    created = net.handle("node", ChannelCreateRequested(1, "relayed", WALL))
    channel = next(e.result["channel"] for e in created if hasattr(e, "result") and e.result)
    net.handle("node", Started(net.address_of["node"], WALL))
    (_, dial), = [(n, d) for n, d in net.dials if isinstance(d, Dial)]
    link_id, _ = net.complete_dial("node", dial)
    net.settle()
    assert isinstance(channel, bytes)
    return net, node, link_id, channel


def _from_server(net: Net, link_id: int, *frames: Frame, to: str = "node") -> list[Effect]:
    return net.handle(to, DataReceived(link_id, b"".join(encode_frame(f) for f in frames)))


def test_on_a_server_link_the_node_watches_uploads_announces_and_looks_up() -> None:
    net, node, link_id, channel = _world()
    frames = sent_frames(net.effects["node"], link_id)
    topic = server_topic(channel)
    kinds = [type(f).__name__ for f in frames
             if type(f).__name__ not in ("Hello", "Auth", "Ping", "Pong", "Ready")]
    # the channel, then this node's DM mailbox (design.md §10.15)
    assert ["Watch", "Upload", "Announce", "Lookup", "Watch"] == kinds
    watch = next(f for f in frames if isinstance(f, Watch))
    assert (topic, 0) == (watch.topic, watch.cursor)
    upload = next(f for f in frames if isinstance(f, Upload))
    assert [node.hub.channels[channel].raw[i] for i in node.hub.channels[channel].log] == \
        list(upload.items)  # the genesis: everything of ours
    assert isinstance(next(f for f in frames if isinstance(f, Announce)).peer, PeerRecord)
    assert any(isinstance(f, Lookup) and f.topic == topic for f in frames)
    assert [(net.did("server"), "bootstrap-server")] == \
        [(p.did, p.found_by) for p in node.peers(net.now)]
    assert node.bootstrap.servers[net.address_of["server"]].did == net.did("server")


def test_stored_envelopes_apply_and_the_cursor_follows_them() -> None:
    net, node, link_id, channel = _world()
    state = node.hub.channels[channel]
    other = make_identity(9, "other")
    # a member admitted elsewhere: the node shared the keys with it (sans-IO, directly)
    state.share([identity_prekey(other.did)], list(state.group.secrets), WALL,
                random.Random(3).randbytes)
    replica = ChannelState(channel, other)
    for env_id in state.log:
        replica.receive_bytes(state.raw[env_id], WALL)
    env, _ = replica.post("via the server", WALL, random.Random(2).randbytes)
    effects = _from_server(net, link_id, Stored(topic=server_topic(channel), items=(
        StoredItem(seq=7, envelope=b"\x92garbage"),  # skipped, not fatal
        StoredItem(seq=8, envelope=replica.raw[env.id]),
    ), backfill=True))
    assert ["via the server"] == [m.text for m in state.history()]
    kinds = [type(e).__name__ for e in effects if isinstance(e, (PersistEnvelopes,
                                                                  PersistCursor))]
    assert ["PersistEnvelopes", "PersistCursor"] == kinds  # the cursor after the data
    cursor = next(e for e in effects if isinstance(e, PersistCursor))
    assert (net.did("server"), 8) == (cursor.server_did, cursor.cursor)
    assert link_id in net.open_links("node")


def test_a_lying_server_cannot_crash_or_misdirect_the_node() -> None:
    net, node, link_id, channel = _world()
    topic = server_topic(channel)
    third = make_identity(11, "third")
    good = make_record(third, topic, [("10.0.0.77", 7445)], WALL + 60_000)
    forged = PeerRecord(record=good.record, signature=bytes(64))
    expired = make_record(third, topic, [("10.0.0.78", 7445)], WALL - 1)
    wrong_topic = make_record(third, bytes(32), [("10.0.0.79", 7445)], WALL + 60_000)
    before = len(net.dials)
    _from_server(
        net, link_id,
        Stored(topic=bytes(32), items=(StoredItem(seq=1, envelope=b"x"),)),  # not watched
        Peers(topic=topic, records=(forged, expired, wrong_topic, good)),
        Refused(request="upload", topic=topic, code="quota", reason="over quota"),
        Uploaded(topic=topic, accepted=1, duplicates=0, last=1),
    )
    dials = [d for _, d in net.dials[before:]]
    assert [("10.0.0.77", 7445)] == [d.address for d in dials]  # only the signed record
    status = node.bootstrap.servers[net.address_of["server"]]
    assert "quota" in status.last_error
    assert link_id in net.open_links("node")
    peers = {p.found_by for p in node.peers(net.now)}
    assert peers <= {"bootstrap-server", "manual", "inbound"}


def test_a_peer_that_is_not_a_server_may_not_send_server_frames() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    la, _ = net.establish("a", "b")
    net.settle()
    _from_server(net, la, Stored(topic=bytes(32), items=()), to="a")
    net.settle()
    assert la not in net.open_links("a")
