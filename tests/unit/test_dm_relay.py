"""Hostile input to DM relays (design.md §10.15, protocol.md §3): forged, altered,
oversized and replayed relayed messages, a relay queue that fills up, a flood over
the rate, items for strangers, and forged mailbox items."""

from __future__ import annotations

import random
import struct

import msgpack

from p2pchat.core.dm import (
    MAX_RELAY_QUEUE_PER_TARGET,
    RELAY_BURST,
    mailbox_item,
    make_relay,
)
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    CloseLink,
    DataReceived,
    Effect,
    JoinRequested,
    Started,
)
from p2pchat.errors import CloseCode
from p2pchat.wire import encode_frame
from p2pchat.wire.frames import MAX_RELAY_BODY, Relay
from tests.unit.corenet import Net, decode_frames, make_identity

WALL = 1_800_000_000_000


def _world() -> tuple[Net, bytes]:
    """alice, bob, carol in #general (founded by alice); no links yet."""
    net = Net()
    for i, name in enumerate(("alice", "bob", "carol")):
        net.add(name, seed=i + 1)
        net.handle(name, Started(net.address_of[name], WALL))
    created = net.handle("alice", ChannelCreateRequested(1, "general", WALL))
    channel = next(e.result["channel"] for e in created
                   if isinstance(e, ChannelAnswer) and e.result)
    assert isinstance(channel, bytes)
    for rid, name in ((2, "bob"), (3, "carol")):
        invite = net.cores["alice"].hub.invite_for(channel, WALL)
        net.handle(name, JoinRequested(rid, channel, invite.name, (), WALL, invite.cap,
                                       invite.grant, invite.grant_signature, invite.genesis))
    # each joins over a link to alice, which then goes: alice knows both as members
    for name in ("bob", "carol"):
        net.establish(name, "alice")
        net.settle()
    assert {net.did("bob"), net.did("carol")} <= {
        a for a, _ in net.cores["alice"].hub.channels[channel].vector}
    for link_id in net.open_links("alice"):
        net.sever(("alice", link_id))
    net.settle()
    assert not net.open_links("alice")
    return net, channel


def _alice_end(net: Net, peer: str) -> int:
    """alice's link id of her link to ``peer``."""
    hub = net.cores["alice"].hub
    return next(i for i, lc in hub._links.items() if lc.link.peer_did == net.did(peer))


def _relay_for(net: Net, sender: str, target: str, seed: int = 0) -> Relay:
    return make_relay(net.identities[sender], net.did(target), b"opaque to relays",
                      random.Random(seed).randbytes)


def _closes(effects: list[Effect], why: str) -> bool:
    return any(isinstance(e, CloseLink) and e.code == CloseCode.PROTOCOL_ERROR
               and why in e.reason for e in effects)


def _relays_to(net: Net, effects: list[Effect], link_id: int) -> list[Relay]:
    from p2pchat.core.events import Transmit

    return [f for e in effects if isinstance(e, Transmit) and e.link_id == link_id
            for f in decode_frames(e.data) if isinstance(f, Relay)]


def test_a_forged_or_altered_relayed_message_closes_the_link() -> None:
    net, _ = _world()
    net.establish("bob", "alice")
    net.settle()
    link = _alice_end(net, "bob")
    good = _relay_for(net, "bob", "carol")
    other = make_identity(77, "other")
    forgeries = [
        Relay(id=good.id, origin=good.origin, target=other.did, hops=good.hops,
              body=good.body, signature=good.signature),  # re-addressed
        Relay(id=good.id, origin=good.origin, target=good.target, hops=good.hops,
              body=good.body[:-1] + bytes([good.body[-1] ^ 1]),
              signature=good.signature),  # altered body
        Relay(id=good.id, origin=net.did("carol"), target=good.target, hops=good.hops,
              body=good.body, signature=good.signature),  # in someone else's name
    ]
    for forged in forgeries:
        effects = net.handle("alice", DataReceived(link, encode_frame(forged)))
        assert _closes(effects, "relayed message signature does not verify")
        net.settle()
        net.establish("bob", "alice")
        net.settle()
        link = _alice_end(net, "bob")
    assert 0 == net.cores["alice"].hub.dm_relay.queued()


def test_an_oversized_relayed_message_closes_the_link() -> None:
    net, _ = _world()
    net.establish("bob", "alice")
    net.settle()
    good = _relay_for(net, "bob", "carol")
    # the encoder refuses it, so build the payload by hand (protocol.md §2.1)
    payload = msgpack.packb({"v": 1, "t": "relay", "id": good.id, "origin": good.origin,
                             "target": good.target, "hops": good.hops,
                             "body": bytes(MAX_RELAY_BODY + 1), "signature": good.signature},
                            use_bin_type=True)
    big = struct.pack(">I", len(payload)) + payload
    effects = net.handle("alice", DataReceived(_alice_end(net, "bob"), big))
    assert any(isinstance(e, CloseLink) and e.code == CloseCode.PROTOCOL_ERROR
               for e in effects)
    assert 0 == net.cores["alice"].hub.dm_relay.queued()


def test_a_replayed_relayed_message_is_forwarded_once() -> None:
    net, _ = _world()
    net.establish("bob", "alice")
    net.establish("carol", "alice")
    net.settle()
    to_carol = _alice_end(net, "carol")
    good = _relay_for(net, "bob", "carol")
    data = encode_frame(good)
    first = net.handle("alice", DataReceived(_alice_end(net, "bob"), data))
    again = net.handle("alice", DataReceived(_alice_end(net, "bob"), data + data))
    assert [good] == _relays_to(net, first, to_carol)
    assert [] == _relays_to(net, again, to_carol)
    assert not any(isinstance(e, CloseLink) for e in first + again)
    assert 2 == net.cores["alice"].hub.dm_relay.stats["duplicates"]


def test_a_full_relay_queue_drops_the_oldest_and_counts_it() -> None:
    net, _ = _world()
    net.establish("bob", "alice")  # carol is offline: alice queues for her
    net.settle()
    extra = 5
    frames = [_relay_for(net, "bob", "carol", seed=i)
              for i in range(MAX_RELAY_QUEUE_PER_TARGET + extra)]
    net.handle("alice", DataReceived(_alice_end(net, "bob"),
                                     b"".join(encode_frame(f) for f in frames)))
    router = net.cores["alice"].hub.dm_relay
    assert MAX_RELAY_QUEUE_PER_TARGET == router.queued()
    assert extra == router.stats["queue_dropped"]
    # carol connects: she gets the newest, in order, and alice's queue empties
    net.establish("carol", "alice")
    net.settle()
    carol = net.cores["carol"].hub.dm_relay
    assert 0 == router.queued()
    assert carol.stats["undeliverable"] == MAX_RELAY_QUEUE_PER_TARGET  # not an item
    newest = {(f.origin, f.id) for f in frames[extra:]}
    assert newest <= set(carol._seen) and not any((f.origin, f.id) in carol._seen
                                                  for f in frames[:extra])


def test_relayed_messages_over_the_rate_are_dropped_without_closing() -> None:
    net, _ = _world()
    net.establish("bob", "alice")
    net.settle()
    frames = [_relay_for(net, "bob", "carol", seed=i) for i in range(RELAY_BURST + 10)]
    effects = net.handle("alice", DataReceived(_alice_end(net, "bob"),
                                               b"".join(encode_frame(f) for f in frames)))
    assert not any(isinstance(e, CloseLink) for e in effects)
    assert 10 == net.cores["alice"].hub.dm_relay.stats["rate_dropped"]


def test_a_relay_keeps_nothing_for_a_stranger() -> None:
    net, _ = _world()
    net.establish("bob", "alice")
    net.settle()
    stranger = make_identity(99, "stranger")
    frame = make_relay(net.identities["bob"], stranger.did, b"x", random.Random(1).randbytes)
    net.handle("alice", DataReceived(_alice_end(net, "bob"), encode_frame(frame)))
    router = net.cores["alice"].hub.dm_relay
    assert 0 == router.queued() and 1 == router.stats["unknown_target"]


def test_forged_mailbox_items_are_skipped_and_a_genuine_offer_is_taken() -> None:
    from p2pchat.core.dm import _pack

    net, _ = _world()
    carol = net.cores["carol"].hub
    rng = random.Random(5).randbytes
    # a genuine DM offer from bob, as bob's node puts it in carol's mailbox
    bob_hub = net.cores["bob"].hub
    from p2pchat.core.events import DmRequested

    answer = next(e for e in net.handle("bob", DmRequested(9, net.did("carol"), "hi", WALL))
                  if isinstance(e, ChannelAnswer))
    assert answer.result is not None
    channel = answer.result["channel"]
    genuine = bob_hub.dm_relay.mailbox[net.did("carol")]
    tampered = genuine[:-70] + bytes([genuine[-70] ^ 1]) + genuine[-69:]
    uri = bob_hub._dm_offers[net.did("carol")]
    # alice puts bob's invite in carol's mailbox under her own name: not her invite
    wrong_origin = mailbox_item(net.identities["alice"], net.did("carol"),
                                _pack("offer", uri), rng)
    not_for_carol = mailbox_item(net.identities["bob"], net.did("alice"),
                                 _pack("offer", uri), rng)
    effects = carol.dm_relay.on_mailbox([b"junk", tampered, wrong_origin, not_for_carol],
                                        WALL)
    assert channel not in carol.channels and not effects
    assert 4 == carol.dm_relay.stats["undeliverable"]
    carol.dm_relay.on_mailbox([genuine], WALL)
    assert channel in carol.channels
