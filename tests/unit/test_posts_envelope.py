"""Multi-post envelopes: a burst of posts sealed into one envelope and one change.

All of them count or none does; the body is 2..MAX_POSTS_PER_ENVELOPE increasing
binary ULIDs; a malformed or lying envelope is refused or recorded invalid the same
way on every replica, and changes nothing else.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import (
    MAX_CHANGE_SIZE,
    MAX_POSTS_BYTES,
    MAX_POSTS_PER_ENVELOPE,
    POST_ENTRY_OVERHEAD,
    ChannelState,
    Rejected,
    Status,
    decode_operation,
    encode_operation,
)
from p2pchat.channel.ulid import make_ulid, ulid_after, ulid_ms, ulid_to_bytes
from tests.unit.channelkit import T0, Forger, Kit, change_of, deliver, history_texts, snapshot


def _ids(kit: Kit, n: int, ts: int = T0 + 1000) -> list[str]:
    first = make_ulid(ts, kit.rb(10))
    ids = [first]
    while len(ids) < n:
        ids.append(ulid_after(ids[-1]))
    return ids


def _pair(seed: int = 7) -> tuple[Kit, ChannelState, ChannelState]:
    kit = Kit(seed)
    alice, bob = kit.identity("alice"), kit.identity("bob")
    a, genesis = kit.found(alice, "general", T0)
    b = kit.replica(a.channel_id, bob, genesis)
    return kit, a, b


def test_a_burst_replicates_in_order_as_one_envelope() -> None:
    kit, a, b = _pair()
    ids = _ids(kit, 5)
    env = a.post_many([(i, f"m{n}", "") for n, i in enumerate(ids)], T0 + 1000, kit.rb).envelope
    assert [env] == deliver(b, [env])[0].applied
    assert Status.APPLIED == b.envs[env.id].status
    assert [f"m{n}" for n in range(5)] == [t for _, t in history_texts(b)]
    assert ids == [v.id for v in b.history()] == [v.id for v in a.history()]
    op, _ = decode_operation(env.decrypt(kit.key, a.channel_id))
    assert {"op": "posts", "ids": ids, "ts": max(ulid_ms(i) for i in ids)} == op


def test_one_post_goes_out_as_a_plain_post_and_replies_work() -> None:
    kit, a, b = _pair()
    [first] = _ids(kit, 1)
    env = a.post_many([(first, "one", "")], T0 + 1000, kit.rb).envelope
    assert "post" == decode_operation(env.decrypt(kit.key, a.channel_id))[0]["op"]
    ids = _ids(kit, 2, T0 + 2000)
    reply = a.post_many([(ids[0], "re", first), (ids[1], "more", "")], T0 + 2000, kit.rb).envelope
    deliver(b, [env, reply])
    assert first == b.messages[ids[0]].reply_to


def test_a_burst_is_smaller_than_its_posts_one_by_one() -> None:
    kit, a, _ = _pair()
    texts = [f"message number {n} of the burst" for n in range(10)]
    one_by_one = sum(len(a.raw[a.post(t, T0 + 1000 + n, kit.rb).envelope.id])
                     for n, t in enumerate(texts))
    ids = _ids(kit, 10, T0 + 5000)
    burst = a.post_many(list(zip(ids, texts, [""] * 10, strict=True)), T0 + 5000, kit.rb).envelope
    assert len(a.raw[burst.id]) < one_by_one / 2  # 2,003 against 4,330 bytes here


@pytest.mark.parametrize("count", [1, MAX_POSTS_PER_ENVELOPE + 1])
def test_post_many_refuses_too_few_or_too_many(count: int) -> None:
    kit, a, _ = _pair()
    if count == 1:  # one is fine (a plain post); none is not
        with pytest.raises(ValueError, match=r"carries 1\.\."):
            a.post_many([], T0, kit.rb)
        return
    ids = _ids(kit, count)
    with pytest.raises(ValueError, match=r"carries 1\.\."):
        a.post_many([(i, "x", "") for i in ids], T0 + 1000, kit.rb)


def test_post_many_refuses_ids_out_of_order_or_a_bad_text_and_writes_nothing() -> None:
    kit, a, _ = _pair()
    ids = _ids(kit, 3)
    before = snapshot(a)
    with pytest.raises(ValueError, match="increasing"):
        a.post_many([(ids[1], "x", ""), (ids[0], "y", "")], T0 + 1000, kit.rb)
    with pytest.raises(ValueError, match="characters"):
        a.post_many([(ids[0], "x", ""), (ids[1], "", "")], T0 + 1000, kit.rb)
    with pytest.raises(ValueError, match="reply to"):
        a.post_many([(ids[0], "x", ""), (ids[1], "y", ids[2])], T0 + 1000, kit.rb)
    assert before == snapshot(a)


@pytest.mark.parametrize("body", [
    [b"\x01" * 16],  # one: a plain post is a bare ULID
    [b"\x01" * 16] * (MAX_POSTS_PER_ENVELOPE + 1),
    [b"\x01" * 16, b"\x02" * 15],
    [b"\x01" * 16, "not bytes"],
])
def test_malformed_bodies_are_rejected(body: list[object]) -> None:
    with pytest.raises(Rejected):
        decode_operation(msgpack.packb([b"change", body], use_bin_type=True))


def _forged(kit: Kit, a: ChannelState, genesis_change: bytes,
            entries: list[tuple[str, dict[str, object]]], ids: list[str]
            ) -> tuple[Forger, Envelope]:
    mallory = kit.identity("mallory")
    f = Forger(kit, mallory, a.channel_id, [genesis_change])
    change = f.doc.put_entries("messages", [(k, {**v, "author": v.get("author", mallory.did)})
                                            for k, v in entries])
    env = f.envelope({"op": "posts", "ids": ids, "ts": max(ulid_ms(i) for i in ids)}, change,
                     [a.genesis_id or b""])
    return f, env


def _fields(text: str) -> dict[str, object]:
    return {"text": text, "reply_to": "", "deleted": False}


@pytest.mark.parametrize("case", ["unordered", "missing entry", "foreign author", "empty text"])
def test_a_lying_burst_counts_for_none_of_its_posts(case: str) -> None:
    kit, a, b = _pair(11)
    assert a.genesis_id is not None
    genesis_change = change_of(a.decode(a.raw[a.genesis_id]), kit.key)
    ids = _ids(kit, 3)
    entries = [(i, _fields(f"t{n}")) for n, i in enumerate(ids)]
    named = list(ids)
    why = "document does not match the post"
    if case == "unordered":
        named = [ids[1], ids[0], ids[2]]
        why = "post ids must be strictly increasing"
    elif case == "missing entry":
        entries = entries[:2]
    elif case == "foreign author":
        entries[1] = (ids[1], {**_fields("t1"), "author": a.identity.did})
    else:
        entries[2] = (ids[2], _fields(""))
        why = "message text length out of range"
    f, env = _forged(kit, a, genesis_change, entries, named)
    for replica in (a, b):
        deliver(replica, [env])
        meta = replica.envs[env.id]
        assert Status.INVALID == meta.status
        assert why in meta.why
        assert [] == [v for v in replica.history() if v.author == f.identity.did]
    # the invalid envelope still counts in mallory's chain: her next post applies
    ok, _ = f.post([env.id], "honest now", T0 + 6000)
    for replica in (a, b):
        deliver(replica, [ok])
        assert Status.APPLIED == replica.envs[ok.id].status


def test_a_reused_id_in_a_burst_invalidates_the_burst() -> None:
    kit, a, b = _pair(12)
    p, first = a.post("first", T0 + 500, kit.rb)
    deliver(b, [p])
    ids = sorted([first, *_ids(kit, 1, T0 + 2000)])
    pairs = [(i, "again") for i in ids]
    # the author's own replica refuses it outright
    with pytest.raises(ValueError, match="already used"):
        a.post_many([(i, t, "") for i, t in pairs], T0 + 2000, kit.rb)
    assert ["first"] == [t for _, t in history_texts(b)]


def test_routine_rotation_counts_posts_not_envelopes() -> None:
    kit, a, b = _pair(13)
    epoch = a.current_epoch
    assert epoch is not None
    before = a.group.count.get(epoch, 0)
    env = a.post_many([(i, "x", "") for i in _ids(kit, 7)], T0 + 1000, kit.rb).envelope
    assert before + 7 == a.group.count[epoch]
    deliver(b, [env])
    assert a.group.count[epoch] == b.group.count[epoch]


def test_plaintext_encoding_is_the_bare_id_list() -> None:
    kit, _, _ = _pair()
    ids = _ids(kit, 2)
    op = {"op": "posts", "ids": ids, "ts": ulid_ms(ids[1])}
    assert [b"c", [ulid_to_bytes(i) for i in ids]] == \
        msgpack.unpackb(encode_operation(op, b"c"), raw=False)


def test_bursts_in_frames_apply_as_one_by_one() -> None:
    """preapply takes multi-post envelopes in its run and ends where receive alone does."""
    kit, a, _ = _pair(14)
    rng = random.Random(14)
    for n in range(12):
        size = rng.randint(1, 6)
        a.post_many([(i, f"{n}.{k}", "") for k, i in enumerate(_ids(kit, size, T0 + n))],
                    T0 + 100 * n, kit.rb)
    order = list(a.log)
    plain = kit.replica(a.channel_id, kit.identity("one"))
    framed = kit.replica(a.channel_id, kit.identity("two"))
    for raw_id in order:
        plain.receive(plain.decode(a.raw[raw_id]), T0)
    i = ahead = 0
    while i < len(order):
        frame = [framed.decode(a.raw[e]) for e in order[i:i + rng.randint(2, 6)]]
        i += len(frame)
        fresh = [e for e in frame if not framed.is_known(e.id)]
        ahead += framed.preapply(fresh, {e.id: e.verify_signature() for e in fresh})
        for env in fresh:
            framed.receive(env, T0)
    assert ahead > 0, "some frames were applied in one call"
    assert history_texts(plain) == history_texts(framed) == history_texts(a)
    assert plain.doc.save() == framed.doc.save()


def test_a_restored_replica_keeps_its_bursts() -> None:
    kit, a, b = _pair(15)
    for n in range(3):
        deliver(b, [a.post_many([(i, f"{n}.{k}", "") for k, i in enumerate(_ids(kit, 4))],
                                T0 + n, kit.rb).envelope])
    restored = ChannelState.restore(b.channel_id, b.identity, kit.keys, a.current_epoch,
                                    b.snapshot(), {i: b.raw[i] for i in b.log})
    assert b.history() == restored.history()
    assert b.doc.save() == restored.doc.save()


@pytest.mark.parametrize("char", ["x", "\U0001f600"])  # one byte, four bytes
def test_a_burst_of_long_posts_is_cut_to_fit_one_change(char: str) -> None:
    kit, a, b = _pair(16)
    text = char * (16_000 if char == "x" else 4_000)  # the longest post: 16 or 16 KB
    posts = [(text, "")] * 40
    room = a.post_room(T0, posts)
    assert 1 <= room < 40
    assert room * (len(text.encode()) + POST_ENTRY_OVERHEAD) <= MAX_POSTS_BYTES
    ids = _ids(kit, room)
    env = a.post_many([(i, t, r) for i, (t, r) in zip(ids, posts, strict=False)],
                      T0 + 1000, kit.rb).envelope
    assert len(change_of(env, kit.key)) <= MAX_CHANGE_SIZE
    deliver(b, [env])
    assert room == len(b.history())
    with pytest.raises(ValueError, match="bytes in one envelope"):
        a.post_many([(i, text, "") for i in _ids(kit, room + 1, T0 + 2000)], T0 + 2000,
                    kit.rb)


def test_the_largest_burst_of_short_posts_fits_one_change() -> None:
    kit, a, _ = _pair(17)
    [target] = _ids(kit, 1, T0 + 10)
    a.post_many([(target, "t", "")], T0 + 10, kit.rb)
    text = "y" * 700
    posts = [(text, target)] * MAX_POSTS_PER_ENVELOPE
    room = a.post_room(T0 + 20, posts)
    assert room == MAX_POSTS_BYTES // (700 + 26 + POST_ENTRY_OVERHEAD) < MAX_POSTS_PER_ENVELOPE
    env = a.post_many([(i, t, r) for i, (t, r) in zip(_ids(kit, room, T0 + 20), posts,
                                                      strict=False)], T0 + 20, kit.rb).envelope
    assert len(change_of(env, kit.key)) <= MAX_CHANGE_SIZE
