"""The simulator's bootstrap server (p2pchat.testing.blindstore) answers as the real one.

The same frames go to :class:`BlindStore` and to ``bootstrap``'s service (through its
synchronous harness and memory store); every link must receive the same frames.
"""

from __future__ import annotations

import pytest

from bootstrap.testing import ServiceHarness
from p2pchat.bootstrap_proto import make_record, server_topic
from p2pchat.testing import SimNetwork, seed_from_env
from p2pchat.testing.blindstore import BlindStore
from p2pchat.wire import Frame
from p2pchat.wire.frames import Announce, Lookup, Upload, Watch

WALL = 1_700_000_000_000


def _world(seed: int) -> tuple[SimNetwork, bytes, list[bytes]]:
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "general")
    net.join("b", channel)
    for i in range(5):
        net.post("a", channel, f"a-{i}")
    net.run_until_quiet()
    return net, channel, [raw for _, raw in net.node("a").disk.envelopes[channel]]


class _Blind:
    def __init__(self) -> None:
        self.store = BlindStore()
        self.frames: dict[int, list[Frame]] = {}
        self.dids: dict[int, str] = {}

    def link(self, did: str) -> int:
        link_id = len(self.dids) + 1
        self.dids[link_id] = did
        self.frames[link_id] = []
        return link_id

    def send(self, link_id: int, frame: Frame) -> None:
        for target, out in self.store.handle(link_id, self.dids[link_id], frame, WALL):
            self.frames[target].append(out)


def test_the_blind_store_answers_every_frame_as_the_real_server() -> None:
    seed = seed_from_env(41)
    net, channel, raws = _world(seed)
    topic = server_topic(channel)
    a, b = net.node("a").identity, net.node("b").identity
    other = server_topic(b"\x01" * 32)
    record_a = make_record(a, topic, [("10.0.0.1", 7445)], WALL + 600_000)
    record_b = make_record(b, topic, [("10.0.0.2", 7445)], WALL + 600_000)
    script: list[tuple[int, Frame]] = [
        (2, Watch(topic=topic, cursor=0)),                      # empty: caught up at once
        (1, Upload(topic=topic, items=tuple(raws[:3]))),        # live push to link 2
        (1, Upload(topic=topic, items=(raws[1], raws[3], raws[3]))),  # duplicates
        (1, Upload(topic=topic, items=(raws[4], b"\x00" * 80))),  # bad: nothing stored
        (1, Upload(topic=other, items=(raws[4],))),             # another topic's signature
        (2, Watch(topic=topic, cursor=2)),                      # backfill after a cursor
        (2, Watch(topic=topic, cursor=99)),                     # beyond the newest: live
        (1, Announce(topic=topic, peer=record_a)),
        (2, Announce(topic=topic, peer=record_a)),              # someone else's record
        (2, Announce(topic=topic, peer=record_b)),
        (1, Lookup(topic=topic)),
        (2, Lookup(topic=topic)),
        (1, Upload(topic=topic, items=(raws[4],))),
    ]
    real = ServiceHarness(wall_ms=WALL)
    blind = _Blind()
    links = {1: (real.link(a), blind.link(a.did)), 2: (real.link(b), blind.link(b.did))}
    for step, (who, frame) in enumerate(script):
        real_link, blind_link = links[who]
        got = real.send(real_link, frame)  # store work is carried out at once (auto)
        blind.send(blind_link, frame)
        for n, (rl, bl) in links.items():
            expected, actual = (got if rl == real_link else real.take(rl)), blind.frames[bl]
            blind.frames[bl] = []
            assert expected == actual, f"seed={seed} step {step} ({frame.TAG}) link {n}"
    assert 5 == blind.store.held(topic), f"seed={seed}"


def test_the_blind_store_refuses_frames_only_a_server_sends() -> None:
    from p2pchat.errors import RemoteProtocolError
    from p2pchat.wire.frames import Peers

    with pytest.raises(RemoteProtocolError, match="unexpected 'peers'"):
        BlindStore().handle(1, "did:key:x", Peers(topic=b"\x00" * 32, records=()), WALL)


def test_two_members_never_online_together_converge_through_a_server() -> None:
    seed = seed_from_env(42)
    net = SimNetwork(seed)
    net.add_server("srv")
    net.add_node("a", servers=["srv"])
    net.add_node("b", servers=["srv"])
    channel = net.create_channel("a", "general")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel), what="b admitted")
    net.run_until_quiet()
    net.crash("b")
    net.post("a", channel, "a while b is away")
    net.run_until_quiet()
    net.crash("a")
    net.restart("b")
    net.run_until_quiet()
    assert ["a while b is away"] == [m.text for m in net.history("b", channel)], f"seed={seed}"
    net.post("b", channel, "b while a is away")
    net.run_until_quiet()
    net.crash("b")
    net.restart("a")
    net.run_until_quiet()
    texts = [m.text for m in net.history("a", channel)]
    assert ["a while b is away", "b while a is away"] == texts, f"seed={seed}"
    assert channel not in net.core("srv").hub.channels, f"seed={seed}: never a member"
    assert net.server_holds("srv", channel) >= 2, f"seed={seed}"
    cursors = net.node("a").disk.cursors
    assert [(net.did("srv"), server_topic(channel))] == list(cursors), f"seed={seed}"


def test_a_server_restart_keeps_its_store_and_serves_from_the_cursor() -> None:
    seed = seed_from_env(43)
    net = SimNetwork(seed)
    net.add_server("srv")
    for name in ("a", "b"):
        net.add_node(name, servers=["srv"])
    channel = net.create_channel("a", "general")
    net.join("b", channel)
    net.run_until_quiet()
    held = net.server_holds("srv", channel)
    net.crash("srv")
    net.restart("srv")
    net.run_until_quiet()
    assert held == net.server_holds("srv", channel), f"seed={seed}"
    store = net.node("srv").store
    assert store is not None
    served = store.served
    net.crash("b")
    net.restart("b")
    net.run_until_quiet()
    assert served == store.served, f"seed={seed}: b resumed at its cursor, nothing re-sent"
