"""The sans-IO bootstrap service: rendezvous, uploads, watches, limits and retention.

Everything runs through :class:`bootstrap.testing.ServiceHarness` (memory store, hand-moved
clocks); envelopes are real (signed, encrypted) channel envelopes from a seeded kit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bootstrap.config import ServiceConfig
from bootstrap.testing import MemoryStore, ServiceHarness
from p2pchat.bootstrap_proto import make_record, server_topic
from p2pchat.channel.state import ChannelState
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity
from p2pchat.wire import Envelopes, Frame, Subscribe, Summary
from p2pchat.wire.frames import (
    MAX_PEER_RECORDS,
    MAX_STORED_ITEMS,
    Announce,
    Lookup,
    Peers,
    Refused,
    Stored,
    Upload,
    Uploaded,
    Watch,
)
from tests.unit.channelkit import T0, Kit

WALL = 1_700_000_000_000


class World:
    """A seeded kit with a few identities and channels whose envelopes we upload."""

    def __init__(self, seed: int = 7) -> None:
        self.kit = Kit(seed)
        self.alice = self.kit.identity("alice")
        self.bob = self.kit.identity("bob")
        self.carol = self.kit.identity("carol")
        self.channels: dict[str, ChannelState] = {}
        self.logs: dict[str, list[bytes]] = {}

    def channel(self, name: str = "general", author: Identity | None = None) -> ChannelState:
        if name not in self.channels:
            state, genesis = self.kit.found(author or self.alice, name)
            self.channels[name] = state
            self.logs[name] = [genesis.encode()]
        return self.channels[name]

    def topic(self, name: str = "general") -> bytes:
        return server_topic(self.channel(name).channel_id)


@pytest.fixture
def world() -> World:
    return World()


def envelopes(world: World, n: int, name: str = "general") -> list[bytes]:
    """Genesis plus ``n - 1`` posts of a fresh channel ``name``: ``n`` envelopes."""
    world.channel(name)
    log = world.logs[name]
    state = world.channels[name]
    while len(log) < n:
        env, _ = state.post(f"{name} message {len(log)}", T0 + len(log), world.kit.rb)
        log.append(env.encode())
    return log[:n]


def more(world: World, n: int, name: str = "general") -> list[bytes]:
    """``n`` further posts of channel ``name``."""
    log = world.logs[name]
    return envelopes(world, len(log) + n, name)[-n:]


def upload(h: ServiceHarness, link: int, topic: bytes, items: list[bytes]) -> Frame:
    frames = h.send(link, Upload(topic=topic, items=tuple(items)))
    assert 1 == len(frames), frames
    return frames[0]


def stored_items(frames: list[Frame]) -> list[tuple[int, bytes]]:
    out = []
    for f in frames:
        assert isinstance(f, Stored), f
        out += [(i.seq, i.envelope) for i in f.items]
    return out


def refused(frame: Frame, code: str) -> Refused:
    assert isinstance(frame, Refused), frame
    assert code == frame.code, frame.reason
    return frame


def cfg(**kwargs: Any) -> ServiceConfig:
    return ServiceConfig(**kwargs)


# --- uploads ----------------------------------------------------------------------------------


def test_upload_assigns_seqs_and_a_watch_gets_the_envelopes_back(world: World) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 4)
    assert Uploaded(topic=world.topic(), accepted=4, duplicates=0, last=4) == \
        upload(h, a, world.topic(), items)
    frames = h.send(b, Watch(topic=world.topic(), cursor=0))
    assert [Stored(topic=world.topic(), items=frames[0].items, backfill=False)] == frames  # type: ignore[attr-defined]
    assert list(enumerate(items, 1)) == stored_items(frames)


def test_duplicates_are_ignored_and_counted(world: World) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 3)
    topic = world.topic()
    upload(h, a, topic, items)
    # the same again, by someone else: nothing new
    assert Uploaded(topic=topic, accepted=0, duplicates=3, last=3) == upload(h, b, topic, items)
    # overlap plus repeats within the frame: only the new one gets a seq
    new = more(world, 1)
    assert Uploaded(topic=topic, accepted=1, duplicates=3, last=4) == \
        upload(h, b, topic, [items[0], *new, *new, items[2]])
    assert 4 == h.service.stats.envelopes_in
    assert 6 == h.service.stats.duplicates
    # the first uploader is charged, not the one who repeated it
    assert sum(len(x) for x in items) == h.service.usage_of(world.alice.did)
    assert len(new[0]) == h.service.usage_of(world.bob.did)


def test_an_upload_racing_another_with_the_same_envelopes_stores_them_once(world: World) -> None:
    h = ServiceHarness()
    h.auto = False  # both id checks run before either upload is written
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 3)
    h.send(a, Upload(topic=world.topic(), items=tuple(items)))
    h.send(b, Upload(topic=world.topic(), items=tuple(items)))
    h.run()
    assert [Uploaded(topic=world.topic(), accepted=3, duplicates=0, last=3)] == h.take(a)
    assert [Uploaded(topic=world.topic(), accepted=0, duplicates=3, last=3)] == h.take(b)


def test_seqs_count_per_topic(world: World) -> None:
    h = ServiceHarness()
    a = h.link(world.alice)
    upload(h, a, world.topic("one"), envelopes(world, 3, "one"))
    assert 2 == upload(h, a, world.topic("two"), envelopes(world, 2, "two")).last  # type: ignore[attr-defined]
    assert 4 == upload(h, a, world.topic("one"), more(world, 1, "one")).last  # type: ignore[attr-defined]


def test_an_envelope_of_another_channel_is_refused_and_nothing_is_stored(world: World) -> None:
    h = ServiceHarness()
    a = h.link(world.alice)
    items = envelopes(world, 2) + envelopes(world, 1, "other")
    # an envelope is signed over its channel's topic: under another it does not verify
    frame = refused(upload(h, a, world.topic(), items), "bad-envelope")
    assert ("upload", world.topic()) == (frame.request, frame.topic)
    assert "item 2" in frame.reason and "topic" in frame.reason
    assert h.service.topic_info(world.topic()) is None


@pytest.mark.parametrize("damage", ["signature", "garbage", "author"])
def test_a_bad_envelope_is_refused_and_nothing_is_stored(world: World, damage: str) -> None:
    h = ServiceHarness()
    a = h.link(world.alice)
    items = envelopes(world, 3)
    if damage == "signature":
        bad = items[1][:-1] + bytes([items[1][-1] ^ 1])  # last byte of the signature
    elif damage == "garbage":
        bad = b"\x92\xc4\x01x"
    else:  # the signed bytes changed under the signature
        i = items[1].index(world.alice.public_key.raw)
        bad = items[1][:i] + bytes([items[1][i] ^ 1]) + items[1][i + 1:]
    frame = upload(h, a, world.topic(), [items[0], bad, items[2]])
    assert "item 1" in refused(frame, "bad-envelope").reason
    assert h.service.topic_info(world.topic()) is None
    assert Uploaded(topic=world.topic(), accepted=3, duplicates=0, last=3) == \
        upload(h, a, world.topic(), items)  # the link stays usable


def test_answers_to_uploads_keep_request_order(world: World) -> None:
    h = ServiceHarness()
    h.auto = False
    a = h.link(world.alice)
    topic = world.topic()
    h.send(a, Upload(topic=topic, items=tuple(envelopes(world, 2))))
    h.send(a, Upload(topic=topic, items=(b"junk",)))  # refused at once, answered second
    assert [] == [f for f in h.take(a) if isinstance(f, Stored)]
    h.run()
    first, second = h.take(a)
    assert isinstance(first, Uploaded)
    refused(second, "bad-envelope")


def test_a_store_error_refuses_the_upload_and_later_uploads_work(world: World) -> None:
    store = MemoryStore(fail_writes=True)
    h = ServiceHarness(store=store)
    a, b = h.link(world.alice), h.link(world.bob)
    h.send(b, Watch(topic=world.topic(), cursor=0))
    h.take(b)
    items = envelopes(world, 2)
    refused(upload(h, a, world.topic(), items), "store-error")
    assert [] == h.take(b)
    assert 0 == h.service.usage_of(world.alice.did)
    frame = upload(h, a, world.topic(), items)
    assert isinstance(frame, Uploaded) and 2 == frame.accepted
    # seqs never go back: the failed write's seqs are simply not used
    assert [3, 4] == [seq for seq, _ in stored_items(h.take(b))]


# --- watch ---------------------------------------------------------------------------------------


def test_watch_backfills_in_batches_then_goes_live(world: World) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 2 * MAX_STORED_ITEMS + 10)
    upload(h, a, world.topic(), items)
    frames = h.send(b, Watch(topic=world.topic(), cursor=0))
    assert [MAX_STORED_ITEMS, MAX_STORED_ITEMS, 10] == [len(f.items) for f in frames]  # type: ignore[attr-defined]
    assert [True, True, False] == [f.backfill for f in frames]  # type: ignore[attr-defined]
    assert list(enumerate(items, 1)) == stored_items(frames)
    # live: each new upload is pushed as it is stored, to watchers only
    new = more(world, 2)
    upload(h, a, world.topic(), new)
    frames = h.take(b)
    assert [False] == [f.backfill for f in frames]  # type: ignore[attr-defined]
    n = len(items)
    assert [(n + 1, new[0]), (n + 2, new[1])] == stored_items(frames)
    assert [] == [f for f in h.take(a) if isinstance(f, Stored)]


def test_watch_from_a_cursor_and_beyond_the_end(world: World) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 5)
    upload(h, a, world.topic(), items)
    assert [(4, items[3]), (5, items[4])] == \
        stored_items(h.send(b, Watch(topic=world.topic(), cursor=3)))
    # a cursor from another life of the store: live from here, nothing lost after it
    frames = h.send(b, Watch(topic=world.topic(), cursor=99))
    assert [Stored(topic=world.topic(), items=(), backfill=False)] == frames
    new = more(world, 1)
    upload(h, a, world.topic(), new)
    assert [(6, new[0])] == stored_items(h.take(b))


def test_watch_of_an_empty_topic_is_live_at_once(world: World) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    assert [Stored(topic=world.topic(), items=(), backfill=False)] == \
        h.send(b, Watch(topic=world.topic(), cursor=0))
    items = envelopes(world, 2)
    upload(h, a, world.topic(), items)
    assert list(enumerate(items, 1)) == stored_items(h.take(b))


@pytest.mark.parametrize("commit_first", [False, True])
def test_uploads_during_a_backfill_arrive_once_and_in_order(world: World,
                                                          commit_first: bool) -> None:
    h = ServiceHarness()
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, MAX_STORED_ITEMS + 5)
    upload(h, a, world.topic(), items)
    h.auto = False
    h.send(b, Watch(topic=world.topic(), cursor=0))
    h.run(1)  # the first read is answered; the second is queued
    late = more(world, 3)
    h.send(a, Upload(topic=world.topic(), items=tuple(late)))
    if commit_first:  # reads may be answered in any order relative to writes
        h.queue.rotate(-1)  # the id check before the second read
        h.run(1)
        h.queue.rotate(-1)  # the append too: committed while the watcher still reads
    h.run()
    h.auto = True
    frames = h.take(b)
    assert list(enumerate(items + late, 1)) == stored_items(frames)
    flags = [f.backfill for f in frames]  # type: ignore[attr-defined]
    assert flags == sorted(flags, reverse=True) and flags[-1] is False
    assert commit_first == (flags == [True, True, False])
    newer = more(world, 1)
    upload(h, a, world.topic(), newer)
    assert [(len(items) + 4, newer[0])] == stored_items(h.take(b))


def test_stored_frames_respect_the_byte_limit(world: World) -> None:
    h = ServiceHarness(cfg(stored_frame_bytes=2048))
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 12)
    upload(h, a, world.topic(), items)
    frames = h.send(b, Watch(topic=world.topic(), cursor=0))
    assert len(frames) > 1
    for f in frames:
        assert isinstance(f, Stored)
        assert len(f.items) == 1 or sum(len(i.envelope) for i in f.items) <= 2048
    assert list(enumerate(items, 1)) == stored_items(frames)


def test_channel_frames_are_ignored_and_server_frames_are_a_protocol_error(world: World) -> None:
    h = ServiceHarness()
    a = h.link(world.alice)
    assert [] == h.send(a, Subscribe(topics=(b"t" * 16,)),
                        Summary(topic=b"t" * 16, entries=()),
                        Envelopes(topic=b"t" * 16, items=(b"x",)))
    with pytest.raises(RemoteProtocolError, match="unexpected 'peers' frame"):
        h.send(a, Peers(topic=world.topic(), records=()))


# --- rendezvous ----------------------------------------------------------------------


def announce(world: World, identity: Identity, topic: bytes, expires_ms: int,
             addresses: list[tuple[str, int]] | None = None) -> Announce:
    record = make_record(identity, topic, addresses or [("192.0.2.1", 7445)], expires_ms)
    return Announce(topic=topic, peer=record)


def test_lookup_answers_others_records_newest_first(world: World) -> None:
    h = ServiceHarness()
    topic = world.topic()
    a, b, c = h.link(world.alice), h.link(world.bob), h.link(world.carol)
    ann_a = announce(world, world.alice, topic, h.wall_ms + 60_000)
    assert [] == h.send(a, ann_a)
    h.advance(1)
    ann_b = announce(world, world.bob, topic, h.wall_ms + 60_000)
    assert [] == h.send(b, ann_b)
    assert [Peers(topic=topic, records=(ann_b.peer, ann_a.peer))] == h.send(c, Lookup(topic=topic))
    assert [Peers(topic=topic, records=(ann_b.peer,))] == h.send(a, Lookup(topic=topic))
    assert [Peers(topic=world.topic("x"), records=())] == h.send(a, Lookup(topic=world.topic("x")))
    # a new announce replaces the old record of the same DID
    h.advance(1)
    ann_a2 = announce(world, world.alice, topic, h.wall_ms + 60_000, [("192.0.2.9", 1)])
    h.send(a, ann_a2)
    assert [Peers(topic=topic, records=(ann_a2.peer, ann_b.peer))] == h.send(c, Lookup(topic=topic))
    assert 2 == h.service.record_count


def test_records_expire_and_ttls_are_clamped(world: World) -> None:
    h = ServiceHarness(cfg(record_max_ttl=100.0))
    topic = world.topic()
    a, b = h.link(world.alice), h.link(world.bob)
    h.send(a, announce(world, world.alice, topic, h.wall_ms + 30_000))
    h.send(b, announce(world, world.bob, topic, h.wall_ms + 3_600_000))  # clamped to 100 s
    c = h.link(world.carol)
    assert 2 == len(h.send(c, Lookup(topic=topic))[0].records)  # type: ignore[attr-defined]
    h.advance(31)
    assert 1 == len(h.send(c, Lookup(topic=topic))[0].records)  # type: ignore[attr-defined]
    h.advance(70)
    assert [Peers(topic=topic, records=())] == h.send(c, Lookup(topic=topic))
    assert 0 == h.service.record_count  # the sweep dropped them
    assert {} == h.store.records


def test_lookup_returns_at_most_max_peer_records(world: World) -> None:
    h = ServiceHarness()
    topic = world.topic()
    for i in range(MAX_PEER_RECORDS + 3):
        someone = world.kit.identity(f"p{i}")
        h.send(h.link(someone), announce(world, someone, topic, h.wall_ms + 60_000))
    assert MAX_PEER_RECORDS == len(h.send(h.link(world.alice), Lookup(topic=topic))[0].records)  # type: ignore[attr-defined]


def test_bad_records_are_refused(world: World) -> None:
    h = ServiceHarness()
    topic = world.topic()
    b = h.link(world.bob)
    # someone else's record, replayed by bob
    frame = h.send(b, announce(world, world.alice, topic, h.wall_ms + 60_000))[0]
    assert "not by the DID proven on this link" in refused(frame, "bad-record").reason
    # bob's record for another topic, announced under this one
    other = make_record(world.bob, world.topic("x"), [("192.0.2.1", 1)], h.wall_ms + 60_000)
    refused(h.send(b, Announce(topic=topic, peer=other))[0], "bad-record")
    # expired, and forged
    refused(h.send(b, announce(world, world.bob, topic, h.wall_ms - 1))[0], "bad-record")
    good = announce(world, world.bob, topic, h.wall_ms + 60_000)
    forged = dataclasses.replace(good.peer, signature=bytes(64))
    refused(h.send(b, Announce(topic=topic, peer=forged))[0], "bad-record")
    assert 0 == h.service.record_count
    assert [] == h.send(b, good)


# --- limits: the client over a limit is refused, others are not -------------------------------


def test_upload_rate_per_identity(world: World) -> None:
    h = ServiceHarness(cfg(uploads_per_second_per_identity=100.0, upload_burst_per_identity=1024))
    a, b = h.link(world.alice), h.link(world.bob, ip="10.0.0.2")
    items = envelopes(world, 600)
    upload(h, a, world.topic(), items)
    frame = refused(upload(h, a, world.topic(), items), "rate-limited")
    assert "per identity" in frame.reason and "retry in" in frame.reason
    assert isinstance(upload(h, b, world.topic(), items), Uploaded)  # bob is unaffected
    h.advance(1.0)  # 424 + 100 tokens: not enough for 600
    refused(upload(h, a, world.topic(), items), "rate-limited")
    assert isinstance(upload(h, a, world.topic(), items[:150]), Uploaded)
    h.advance(3.0)  # 374 + 300
    assert isinstance(upload(h, a, world.topic(), items), Uploaded)


def test_upload_rate_per_ip_is_shared_by_identities(world: World) -> None:
    h = ServiceHarness(cfg(uploads_per_second_per_ip=10.0, upload_burst_per_ip=1024))
    a = h.link(world.alice, ip="10.0.0.1")
    b = h.link(world.bob, ip="10.0.0.1")
    c = h.link(world.carol, ip="10.0.0.2")
    items = envelopes(world, 600)
    upload(h, a, world.topic(), items)
    assert "per IP" in refused(upload(h, b, world.topic(), items), "rate-limited").reason
    assert isinstance(upload(h, c, world.topic(), items), Uploaded)


def test_ipv6_clients_share_a_bucket_per_64(world: World) -> None:
    h = ServiceHarness(cfg(uploads_per_second_per_ip=10.0, upload_burst_per_ip=1024))
    a = h.link(world.alice, ip="2001:db8:1:2::1")
    b = h.link(world.bob, ip="2001:db8:1:2:ffff::9")
    items = envelopes(world, 600)
    upload(h, a, world.topic(), items)
    refused(upload(h, b, world.topic(), items), "rate-limited")


def test_request_rate(world: World) -> None:
    h = ServiceHarness(cfg(requests_per_second=1.0, request_burst=2))
    a, b = h.link(world.alice), h.link(world.bob)
    topic = world.topic()
    h.send(a, Lookup(topic=topic), Watch(topic=topic, cursor=0))
    h.take(a)
    refused(h.send(a, Lookup(topic=topic))[0], "rate-limited")
    refused(h.send(a, announce(world, world.alice, topic, h.wall_ms + 9000))[0], "rate-limited")
    refused(h.send(a, Watch(topic=topic, cursor=0))[0], "rate-limited")
    assert isinstance(h.send(b, Lookup(topic=topic))[0], Peers)
    h.advance(1.0)
    assert isinstance(h.send(a, Lookup(topic=topic))[0], Peers)


def test_identity_quota(world: World) -> None:
    items = envelopes(world, 6)
    limit = sum(len(x) for x in items[:4])
    h = ServiceHarness(cfg(identity_max_bytes=limit))
    a, b = h.link(world.alice), h.link(world.bob)
    upload(h, a, world.topic(), items[:4])
    frame = refused(upload(h, a, world.topic(), items[4:]), "quota")
    assert str(limit) in frame.reason
    assert Uploaded(topic=world.topic(), accepted=2, duplicates=0, last=6) == \
        upload(h, b, world.topic(), items[4:])
    # duplicates cost no quota
    assert Uploaded(topic=world.topic(), accepted=0, duplicates=4, last=6) == \
        upload(h, a, world.topic(), items[:4])


def test_topic_caps(world: World) -> None:
    h = ServiceHarness(cfg(topic_max_envelopes=4, retention_topic_envelopes=4))
    a, b = h.link(world.alice), h.link(world.bob)
    items = envelopes(world, 6)
    upload(h, a, world.topic(), items[:3])
    refused(upload(h, b, world.topic(), items[3:]), "topic-full")
    assert isinstance(upload(h, b, world.topic("other"), envelopes(world, 2, "other")), Uploaded)
    assert isinstance(upload(h, b, world.topic(), items[3:4]), Uploaded)


def test_max_topics(world: World) -> None:
    h = ServiceHarness(cfg(max_topics=1))
    a, b = h.link(world.alice), h.link(world.bob)
    upload(h, a, world.topic("one"), envelopes(world, 1, "one"))
    refused(upload(h, b, world.topic("two"), envelopes(world, 1, "two")), "too-many-topics")
    assert isinstance(upload(h, b, world.topic("one"), more(world, 1, "one")), Uploaded)
    # a watch alone does not make a topic count
    assert isinstance(h.send(b, Watch(topic=world.topic("three"), cursor=0))[0], Stored)


def test_watches_per_link(world: World) -> None:
    h = ServiceHarness(cfg(max_watches_per_link=1))
    a, b = h.link(world.alice), h.link(world.bob)
    h.send(a, Watch(topic=world.topic("one"), cursor=0))
    refused(h.send(a, Watch(topic=world.topic("two"), cursor=0))[0], "too-many-watches")
    assert isinstance(h.send(a, Watch(topic=world.topic("one"), cursor=0))[0], Stored)  # again
    assert isinstance(h.send(b, Watch(topic=world.topic("two"), cursor=0))[0], Stored)


def test_records_per_topic(world: World) -> None:
    h = ServiceHarness(cfg(max_records_per_topic=1))
    topic = world.topic()
    a, b = h.link(world.alice), h.link(world.bob)
    h.send(a, announce(world, world.alice, topic, h.wall_ms + 60_000))
    refused(h.send(b, announce(world, world.bob, topic, h.wall_ms + 60_000))[0],
            "too-many-records")
    assert [] == h.send(a, announce(world, world.alice, topic, h.wall_ms + 90_000))  # renewal
    assert [] == h.send(b, announce(world, world.bob, world.topic("x"), h.wall_ms + 60_000))


def test_refusals_are_counted_and_logged(world: World) -> None:
    h = ServiceHarness(cfg(max_watches_per_link=1))
    a = h.link(world.alice)
    h.send(a, Upload(topic=world.topic(), items=(b"junk",)))
    h.send(a, Watch(topic=world.topic("one"), cursor=0), Watch(topic=world.topic("2"), cursor=0))
    assert {"bad-envelope": 1, "too-many-watches": 1} == h.service.stats.refusals
    assert ["refused", "refused"] == [n.event for n in h.notes]


# --- retention ------------------------------------------------------------------------------------


def test_retention_by_age(world: World) -> None:
    h = ServiceHarness(cfg(retention_max_age_days=100 / 86400, retention_interval=60.0))
    a, b = h.link(world.alice), h.link(world.bob)
    topic = world.topic()
    old = envelopes(world, 3)
    upload(h, a, topic, old)
    h.advance(50)
    young = more(world, 2)
    upload(h, a, topic, young)
    h.advance(11)  # retention at 60 s: nothing is 100 s old yet
    assert (5, 5) == h.service.topic_info(topic)[:2]  # type: ignore[index]
    h.advance(60)  # at 120 s the first three are 120 s old, the others 70 s
    assert (5, 2) == h.service.topic_info(topic)[:2]  # type: ignore[index]
    assert {"age": 3} == h.service.stats.pruned
    assert sum(len(x) for x in young) == h.service.usage_of(world.alice.did)
    assert [(4, young[0]), (5, young[1])] == stored_items(h.send(b, Watch(topic=topic, cursor=0)))
    h.unlink(b)
    h.advance(60)  # all gone: the topic is forgotten...
    assert h.service.topic_info(topic) is None
    assert 0 == h.service.usage_of(world.alice.did)
    # ...and if it comes back, its seqs continue above the old ones
    assert 6 == upload(h, a, topic, more(world, 1)).last  # type: ignore[attr-defined]


def test_retention_by_size_trims_the_oldest_at_once(world: World) -> None:
    h = ServiceHarness(cfg(retention_topic_envelopes=5, topic_max_envelopes=10))
    a, b = h.link(world.alice), h.link(world.bob)
    topic = world.topic()
    items = envelopes(world, 8)
    upload(h, a, topic, items)
    assert (8, 5) == h.service.topic_info(topic)[:2]  # type: ignore[index]
    assert list(enumerate(items, 1))[3:] == stored_items(h.send(b, Watch(topic=topic, cursor=0)))
    size = sum(len(x) for x in items[3:])
    assert size == h.service.usage_of(world.alice.did)
    assert {"size": 3} == h.service.stats.pruned


def test_retention_by_bytes(world: World) -> None:
    items = envelopes(world, 6)
    keep = sum(len(x) for x in items[3:])
    h = ServiceHarness(cfg(retention_topic_bytes=max(keep, 1)))
    a = h.link(world.alice)
    upload(h, a, world.topic(), items)
    committed, count, size = h.service.topic_info(world.topic())  # type: ignore[misc]
    assert (6, 3, keep) == (committed, count, size)


def test_a_restart_keeps_seqs_usage_and_records(world: World) -> None:
    store = MemoryStore()
    h = ServiceHarness(store=store)
    a = h.link(world.alice)
    topic = world.topic()
    items = envelopes(world, 3)
    upload(h, a, topic, items)
    ann = announce(world, world.alice, topic, h.wall_ms + 60_000)
    h.send(a, ann)
    h2 = ServiceHarness(store=store, now=5.0, wall_ms=h.wall_ms + 1000)
    b = h2.link(world.bob)
    assert [Peers(topic=topic, records=(ann.peer,))] == h2.send(b, Lookup(topic=topic))
    assert list(enumerate(items, 1)) == stored_items(h2.send(b, Watch(topic=topic, cursor=0)))
    c = h2.link(world.carol)
    assert Uploaded(topic=topic, accepted=1, duplicates=3, last=4) == \
        upload(h2, c, topic, [*items, *more(world, 1)])
    assert sum(len(x) for x in items) == h2.service.usage_of(world.alice.did)


# --- the address budget (Sybil uploads) -------------------------------------------------------

#: posts of about 16 KiB each: a channel of HEAVY_POSTS of them is above the smallest budget
HEAVY_POSTS = 9


def heavy(world: World, name: str, author: Identity) -> list[bytes]:
    """Genesis plus HEAVY_POSTS posts of ~16 KiB (random text: it does not compress)."""
    state = world.channel(name, author)
    log = world.logs[name]
    while len(log) < HEAVY_POSTS + 1:
        env, _ = state.post(world.kit.rb(8000).hex(), T0 + len(log), world.kit.rb)
        log.append(env.encode())
    return list(log)


def heavy_post(world: World, name: str) -> list[bytes]:
    env, _ = world.channels[name].post(world.kit.rb(8000).hex(), T0 + 99, world.kit.rb)
    world.logs[name].append(env.encode())
    return [env.encode()]


def size_of(items: list[bytes]) -> int:
    return sum(len(x) for x in items)


def two_uploads(world: World) -> tuple[list[bytes], list[bytes], int]:
    """Alice's channel and Bob's channel, and a budget that holds either but not both."""
    a = heavy(world, "alices", world.alice)
    b = heavy(world, "bobs", world.bob)
    budget = max(size_of(a), size_of(b)) + 1000
    assert budget < size_of(a) + size_of(b)
    return a, b, budget


@pytest.mark.parametrize(("ip_a", "ip_b", "shared"), [
    ("10.1.2.3", "10.1.2.200", True),  # one IPv4 /24
    ("10.1.2.3", "10.1.3.3", False),  # neighbouring /24s
    ("127.0.0.1", "127.0.0.2", True),  # loopback is not exempt
    ("2001:db8:0:1200::1", "2001:db8:0:12ff:ffff::9", True),  # one IPv6 /56
    ("2001:db8:0:1200::1", "2001:db8:0:1300::1", False),  # the next /56
    ("::ffff:10.1.2.3", "10.1.2.99", True),  # IPv4-mapped IPv6 counts as IPv4
    ("::ffff:10.1.2.3", "::ffff:10.1.9.3", False),
])
def test_identities_of_one_address_block_share_its_budget(world: World, ip_a: str, ip_b: str,
                                                          shared: bool) -> None:
    a_items, b_items, budget = two_uploads(world)
    h = ServiceHarness(cfg(address_max_bytes=budget))
    a, b = h.link(world.alice, ip=ip_a), h.link(world.bob, ip=ip_b)
    assert isinstance(upload(h, a, world.topic("alices"), a_items), Uploaded)
    answer = upload(h, b, world.topic("bobs"), b_items)
    if not shared:
        assert Uploaded(topic=world.topic("bobs"), accepted=len(b_items), duplicates=0,
                        last=len(b_items)) == answer
        return
    frame = refused(answer, "address-quota")
    assert h.service.block_of(ip_b) in frame.reason and str(budget) in frame.reason
    # nothing of it is stored or charged, and the metric counts it
    assert h.service.topic_info(world.topic("bobs")) is None
    assert 0 == h.service.usage_of(world.bob.did)
    assert size_of(a_items) == h.service.block_usage_of(h.service.block_of(ip_b))
    assert {"address-quota": 1} == h.service.stats.refusals
    assert ("code", "address-quota") in h.notes[-1].fields
    # the link stays usable: what fits is still taken
    assert isinstance(upload(h, b, world.topic("bobs"), b_items[:1]), Uploaded)


def test_address_blocks_are_ipv4_24_and_ipv6_56_by_default() -> None:
    h = ServiceHarness()
    assert "192.0.2.0/24" == h.service.block_of("192.0.2.77")
    assert "192.0.2.0/24" == h.service.block_of("::ffff:192.0.2.77")
    assert "2001:db8:0:1200::/56" == h.service.block_of("2001:db8:0:12ab:1:2:3:4")
    h = ServiceHarness(cfg(address_prefix_v4=32, address_prefix_v6=48))
    assert "192.0.2.77/32" == h.service.block_of("::ffff:192.0.2.77")
    assert "2001:db8::/48" == h.service.block_of("2001:db8:0:12ab::1")


def test_uploads_in_flight_count_against_the_block(world: World) -> None:
    a_items, b_items, budget = two_uploads(world)
    h = ServiceHarness(cfg(address_max_bytes=budget))
    h.auto = False  # both checks run before either append is committed
    a, b = h.link(world.alice, ip="10.1.2.3"), h.link(world.bob, ip="10.1.2.4")
    h.send(a, Upload(topic=world.topic("alices"), items=tuple(a_items)))
    h.send(b, Upload(topic=world.topic("bobs"), items=tuple(b_items)))
    h.run()
    assert isinstance(h.take(a)[0], Uploaded)
    refused(h.take(b)[0], "address-quota")


def test_retention_gives_the_block_its_bytes_back(world: World) -> None:
    a_items, b_items, budget = two_uploads(world)
    h = ServiceHarness(cfg(address_max_bytes=budget, retention_max_age_days=100 / 86400,
                           retention_interval=60.0))
    a, b = h.link(world.alice, ip="10.1.2.3"), h.link(world.bob, ip="10.1.2.4")
    upload(h, a, world.topic("alices"), a_items)
    refused(upload(h, b, world.topic("bobs"), b_items), "address-quota")
    h.advance(60)
    h.advance(60)  # alice's envelopes are 120 s old: deleted by age
    assert h.service.topic_info(world.topic("alices")) is None
    assert 0 == h.service.block_usage_of("10.1.2.0/24")
    assert isinstance(upload(h, b, world.topic("bobs"), b_items), Uploaded)
    assert size_of(b_items) == h.service.block_usage_of("10.1.2.0/24")


def test_size_retention_gives_the_block_its_bytes_back(world: World) -> None:
    a_items, b_items, budget = two_uploads(world)
    h = ServiceHarness(cfg(address_max_bytes=budget, retention_topic_envelopes=2))
    a, b = h.link(world.alice, ip="10.1.2.3"), h.link(world.bob, ip="10.1.2.4")
    upload(h, a, world.topic("alices"), a_items)  # trimmed to its last two at once
    assert size_of(a_items[-2:]) == h.service.block_usage_of("10.1.2.0/24")
    assert isinstance(upload(h, b, world.topic("bobs"), b_items[:2]), Uploaded)


def test_the_block_budget_survives_a_restart(world: World) -> None:
    a_items, b_items, budget = two_uploads(world)
    store = MemoryStore()
    h = ServiceHarness(cfg(address_max_bytes=budget), store=store)
    upload(h, h.link(world.alice, ip="10.1.2.3"), world.topic("alices"), a_items)
    h2 = ServiceHarness(cfg(address_max_bytes=budget), store=store, now=5.0,
                        wall_ms=h.wall_ms + 1000)
    assert size_of(a_items) == h2.service.block_usage_of("10.1.2.0/24")
    refused(upload(h2, h2.link(world.bob, ip="10.1.2.4"), world.topic("bobs"), b_items),
            "address-quota")
    # a shorter prefix configured later folds the stored /24 into its /16
    h3 = ServiceHarness(cfg(address_max_bytes=budget, address_prefix_v4=16), store=store)
    assert (1, size_of(a_items)) == h3.service.block_totals()
    assert size_of(a_items) == h3.service.block_usage_of("10.1.0.0/16")
    refused(upload(h3, h3.link(world.bob, ip="10.1.200.4"), world.topic("bobs"), b_items),
            "address-quota")


def test_exempt_networks_skip_the_block_budget_not_the_identity_quota(world: World) -> None:
    a_items, b_items, budget = two_uploads(world)
    quota = max(size_of(a_items), size_of(b_items))
    h = ServiceHarness(cfg(address_max_bytes=budget, identity_max_bytes=quota,
                           address_exempt=["10.1.2.0/24"]))
    a, b = h.link(world.alice, ip="10.1.2.3"), h.link(world.bob, ip="::ffff:10.1.2.4")
    assert isinstance(upload(h, a, world.topic("alices"), a_items), Uploaded)
    assert isinstance(upload(h, b, world.topic("bobs"), b_items), Uploaded)
    assert (0, 0) == h.service.block_totals()  # exempt uploads are charged to no block
    refused(upload(h, a, world.topic("alices"), heavy_post(world, "alices")), "quota")
    # a client just outside the exempt network is counted as usual
    c = h.link(world.carol, ip="10.1.3.1")
    assert isinstance(upload(h, c, world.topic("alices"), more(world, 1, "alices")), Uploaded)
    assert 1 == h.service.block_totals()[0]
