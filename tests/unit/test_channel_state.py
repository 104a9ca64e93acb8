"""One channel replica (DESIGN §3, §7): verification, causal application, views, equivocation.

Every hostile input must leave the replica exactly as it was (same history, vector, heads,
document bytes, nothing stored or pending) — or, for equivocation, be quarantined the same
way on every replica whatever the delivery order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import msgpack
import pytest
from automerge.core import ROOT, Document, ScalarType

from p2pchat.channel import dag as dag_module
from p2pchat.channel import state as state_module
from p2pchat.channel.change import MAGIC, parse_change
from p2pchat.channel.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    actor_id,
    channel_topic,
    decode_envelope,
    seal_envelope,
)
from p2pchat.channel.state import (
    MAX_CHANGE_SIZE,
    MAX_DISPLAY_SKEW_MS,
    ChannelState,
    MessageView,
    Rejected,
    Status,
    channel_id_for,
    encode_operation,
    epoch_id_for,
)
from p2pchat.channel.ulid import make_ulid, ulid_ms
from p2pchat.crypto import Domain
from p2pchat.identity import Identity
from tests.unit.channelkit import (
    T0,
    Forger,
    Kit,
    change_of,
    deliver,
    history_bytes,
    history_texts,
    open_op,
    replace_top,
    seal_raw,
    snapshot,
    sync_into,
)

# --- a small world: alice founds, bob joins, both talk; R is a third, passive replica ----------


@dataclasses.dataclass
class World:
    k: Kit
    alice: Identity
    bob: Identity
    mallory: Identity
    a: ChannelState
    b: ChannelState
    r: ChannelState
    genesis: Envelope
    p1: Envelope
    m1: str
    p2: Envelope
    m2: str

    @property
    def cid(self) -> bytes:
        return self.a.channel_id

    @property
    def replicas(self) -> list[ChannelState]:
        return [self.a, self.b, self.r]

    def forger(self, identity: Identity | None = None, *base: Envelope) -> Forger:
        changes = [change_of(e, self.k.key) for e in (self.genesis, *base)]
        return Forger(self.k, identity or self.mallory, self.cid, changes)

    def everywhere(self, *envs: Envelope, now: int = T0) -> None:
        for replica in self.replicas:
            deliver(replica, envs, now)


def world(seed: int = 1) -> World:
    k = Kit(seed)
    alice, bob, mallory, reader = (k.identity(n) for n in ("alice", "bob", "mallory", "reader"))
    a, genesis = k.found(alice, "general", T0)
    b = k.replica(a.channel_id, bob, genesis)
    r = k.replica(a.channel_id, reader, genesis)
    p1, m1 = a.post("hello", T0 + 1000, k.rb)
    deliver(b, [p1])
    p2, m2 = b.post("hi alice", T0 + 2000, k.rb, reply_to=m1)
    deliver(a, [p2])
    deliver(r, [p1, p2])
    return World(k, alice, bob, mallory, a, b, r, genesis, p1, m1, p2, m2)


def view(msg_id: str, author: Identity, text: str, ts: int, *, reply_to: str = "",
         edited: int | None = None, deleted: bool = False,
         reactions: dict[str, list[str]] | None = None) -> MessageView:
    return MessageView(msg_id, author.did, text, reply_to, ts, edited, deleted, reactions or {})


def resign(env: Envelope, signer: Identity, **changes: object) -> Envelope:
    """``env`` with some signed fields replaced, correctly signed again by ``signer``."""
    values = {"version": ENVELOPE_VERSION, "author": env.author_key, "device": env.device,
              "seq": env.seq, "deps": list(env.wire_deps), "epoch": env.wire_epoch,
              "nonce": env.nonce, "ciphertext": env.ciphertext}
    values.update(changes)
    signed = msgpack.packb(list(values.values()), use_bin_type=True)
    wire = signed + signer.sign(Domain.ENVELOPE, env.topic + signed)
    return decode_envelope(wire, env.topic)


def assert_rejected(state: ChannelState, env: Envelope, match: str = "") -> None:
    before = snapshot(state)
    with pytest.raises(Rejected, match=match or None):
        state.receive(env, T0 + 10_000)
    assert before == snapshot(state)
    assert env.id not in state.envs and env.id not in state.pending


def assert_honest_peers_unaffected(w: World) -> None:
    """After a rejection, the next honest message still applies on the replica."""
    p3, _ = w.b.post("still here", T0 + 9000, w.k.rb)
    assert [p3] == w.r.receive(p3, T0 + 9000).applied
    assert "still here" == w.r.history()[-1].text


# --- genesis and basic shape ----------------------------------------------------------------


def test_genesis_defines_the_channel() -> None:
    w = world()
    op = open_op(w.genesis, w.k.key)
    assert "genesis" == op["op"]
    assert channel_id_for(w.alice.did, "general", op["nonce"]) == w.cid
    for replica in w.replicas:
        assert ("general", w.alice.did, T0) == (replica.name, replica.founder, replica.created)
        assert w.genesis.id == replica.genesis_id
        assert parse_change(op["change"]).hash == replica.genesis_hash
    assert 1 == w.genesis.seq and () == w.genesis.deps


def test_create_refuses_bad_names() -> None:
    k = Kit(2)
    for name in ("", "   ", "x" * 101):
        with pytest.raises(ValueError):
            ChannelState.create(k.identity("a"), name, k.key, T0, k.rb)


def test_envelope_fields_of_an_authored_post() -> None:
    w = world()
    assert (channel_topic(w.cid), w.bob.did, w.bob.device_salt, 1, (w.p1.id,),
            epoch_id_for(w.k.key)) == (
        w.p2.topic, w.p2.author, w.p2.device, w.p2.seq, w.p2.deps, w.p2.epoch)
    op = open_op(w.p2, w.k.key)
    change = parse_change(op.pop("change"))
    assert {"op": "post", "id": w.m2, "ts": T0 + 2000} == op  # the text is in the change
    assert {"author": w.bob.did, "text": "hi alice", "reply_to": w.m1, "deleted": False} == \
        w.r.doc.read_map("messages", w.m2, [change.hash])
    assert (1, (w.r.genesis_hash,)) == (change.seq, change.deps)
    assert w.p2.verify_signature()


def test_statuses_vectors_and_members() -> None:
    w = world()
    for replica in w.replicas:
        assert {w.genesis.id: Status.APPLIED, w.p1.id: Status.APPLIED,
                w.p2.id: Status.APPLIED} == {i: m.status for i, m in replica.envs.items()}
        assert {(w.alice.did, w.alice.device_salt): 2, (w.bob.did, w.bob.device_salt): 1} == \
            replica.vector
        assert {w.p2.id} == replica.heads
        assert sorted([w.alice.did, w.bob.did]) == replica.members()


# --- happy path: replication of every kind of operation ----------------------------------------


def test_posts_replies_edits_deletes_and_reactions_replicate() -> None:
    w = world()
    k = w.k
    e1 = w.a.edit(w.m1, "hello, edited", T0 + 3000, k.rb).envelope
    x1 = w.b.react(w.m1, "👍", True, T0 + 3100, k.rb).envelope
    deliver(w.a, [x1])
    deliver(w.b, [e1])
    x2 = w.a.react(w.m1, "👍", True, T0 + 3200, k.rb).envelope
    x3 = w.a.react(w.m2, "🎉", True, T0 + 3300, k.rb).envelope
    deliver(w.b, [x2, x3])
    p3, m3 = w.b.post("to be deleted", T0 + 3400, k.rb)
    x4 = w.b.react(w.m1, "👍", False, T0 + 3500, k.rb).envelope
    d3 = w.b.delete(m3, T0 + 3600, k.rb).envelope
    deliver(w.a, [p3, x4, d3])
    deliver(w.r, [e1, x1, x2, x3, p3, x4, d3])
    expected = [
        view(w.m1, w.alice, "hello, edited", T0 + 1000, edited=T0 + 3000,
             reactions={"👍": [w.alice.did]}),
        view(w.m2, w.bob, "hi alice", T0 + 2000, reply_to=w.m1,
             reactions={"🎉": [w.alice.did]}),
        view(m3, w.bob, "", T0 + 3400, deleted=True),
    ]
    for replica in w.replicas:
        assert expected == replica.history()
        assert all(m.status is Status.APPLIED for m in replica.envs.values())
    assert history_bytes(w.a) == history_bytes(w.b) == history_bytes(w.r)


def test_history_limit() -> None:
    w = world()
    assert [w.m2] == [v.id for v in w.r.history(limit=1)]
    assert [w.m1, w.m2] == [v.id for v in w.r.history(limit=5)]
    assert [] == w.r.history(limit=0)


def test_local_api_refuses_foreign_edits_and_bad_input() -> None:
    w = world()
    rb = w.k.rb
    with pytest.raises(ValueError):
        w.b.edit(w.m1, "not mine", T0 + 5000, rb)
    with pytest.raises(ValueError):
        w.b.delete(w.m1, T0 + 5000, rb)
    with pytest.raises(ValueError):
        w.b.post("", T0 + 5000, rb)
    with pytest.raises(ValueError):
        w.b.post("x" * (state_module.MAX_TEXT_LENGTH + 1), T0 + 5000, rb)
    with pytest.raises(ValueError):
        w.b.post("reply to nothing", T0 + 5000, rb, reply_to="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(ValueError):
        w.b.react(w.m1, "", True, T0 + 5000, rb)
    d = w.a.delete(w.m1, T0 + 5000, rb).envelope
    assert Status.APPLIED == w.a.envs[d.id].status
    with pytest.raises(ValueError):
        w.a.edit(w.m1, "after delete", T0 + 5001, rb)


def test_repeating_a_reaction_or_an_identical_edit_is_a_clean_local_error() -> None:
    """Regression: automerge records no op when a put does not change the value, so the transaction
    makes no change and ``AuthoringDocument._last_change`` raises ``RuntimeError("expected
    exactly one new change")`` from ``react`` (same emoji and on/off twice) and from ``edit``
    (same text in the same millisecond). The local API should refuse with ValueError (or
    treat it as a no-op) and leave the replica unchanged."""
    w = world()
    w.a.react(w.m1, "👍", True, T0 + 3000, w.k.rb)
    before = snapshot(w.a)
    with pytest.raises(ValueError):
        w.a.react(w.m1, "👍", True, T0 + 3001, w.k.rb)
    assert before == snapshot(w.a)
    w.a.edit(w.m1, "same", T0 + 4000, w.k.rb)
    before = snapshot(w.a)
    with pytest.raises(ValueError):
        w.a.edit(w.m1, "same", T0 + 4000, w.k.rb)
    assert before == snapshot(w.a)
    # protocol.md §7: the same text later is still nothing to change (no envelope)
    with pytest.raises(ValueError, match="nothing to change"):
        w.a.edit(w.m1, "same", T0 + 5000, w.k.rb)
    with pytest.raises(ValueError, match="nothing to change"):
        w.b.edit(w.m2, "hi alice", T0 + 5000, w.k.rb)  # the post's own text
    assert before == snapshot(w.a)


def test_out_of_order_delivery_waits_for_dependencies() -> None:
    w = world()
    fresh = w.k.replica(w.cid, w.k.identity("late"))
    assert fresh.receive(w.p2, T0).pending
    assert fresh.receive(w.p1, T0).pending
    assert [] == fresh.history()
    result = fresh.receive(w.genesis, T0)
    assert [w.genesis, w.p1, w.p2] == result.applied
    assert {} == fresh.pending
    assert history_bytes(w.a) == history_bytes(fresh)


def test_offline_merge_orders_concurrent_messages_by_time() -> None:
    k = Kit(3)
    alice, bob = k.identity("alice"), k.identity("bob")
    a, genesis = k.found(alice, "general", T0)
    b = k.replica(a.channel_id, bob, genesis)
    a_ids = [a.post(f"a{i}", T0 + 1000 + i, k.rb).new_id for i in range(5)]
    b_ids = [b.post(f"b{i}", T0 + 5000 + i, k.rb).new_id for i in range(5)]  # b is offline
    assert [f"b{i}" for i in range(5)] == [v.text for v in b.history()]
    sync_into(b, a)
    sync_into(a, b)
    expected = a_ids + b_ids
    assert expected == [v.id for v in a.history()]
    assert expected == [v.id for v in b.history()]
    assert history_bytes(a) == history_bytes(b)
    assert a.vector == b.vector


def test_causality_beats_a_clock_that_runs_behind() -> None:
    w = world()
    # bob's clock is far behind, but his reply was written after seeing alice's message
    p3, m3 = w.a.post("question", T0 + 50_000, w.k.rb)
    deliver(w.b, [p3])
    p4, m4 = w.b.post("answer", T0 + 3000, w.k.rb, reply_to=m3)
    deliver(w.a, [p4])
    deliver(w.r, [p3, p4])
    for replica in w.replicas:
        assert [w.m1, w.m2, m3, m4] == [v.id for v in replica.history()]
        assert T0 + 3000 == replica.history()[-1].ts


def test_far_future_timestamp_is_clamped_for_display_and_order_is_deterministic() -> None:
    w = world()
    k = w.k
    future = T0 + 10 * 24 * 3600 * 1000
    pf, mf = w.a.post("from the future", future, k.rb)
    deliver(w.b, [pf])
    p4, m4 = w.b.post("after the future one", T0 + 4000, k.rb)
    carol = k.replica(w.cid, k.identity("carol"), w.genesis)
    deliver(carol, [w.p1, w.p2])
    p5, m5 = carol.post("concurrent, honest clock", T0 + 4500, k.rb)
    now = T0 + 5000
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, pf, p4, p5], now)
    deliver(r2, [p5, w.p2, p4, pf, w.p1], now)
    shown = r1.history(now_ms=now)
    assert [w.m1, w.m2, m5, mf, m4] == [v.id for v in shown]
    assert now + MAX_DISPLAY_SKEW_MS == shown[3].ts
    assert [T0 + 1000, T0 + 2000, T0 + 4500, T0 + 4000] == [shown[i].ts for i in (0, 1, 2, 4)]
    assert future == r1.history()[3].ts  # unclamped without a "now"
    assert history_bytes(r1, now) == history_bytes(r2, now)
    assert history_bytes(r1) == history_bytes(r2)


def test_missing_for_returns_exactly_what_the_other_lacks_in_causal_order() -> None:
    k = Kit(4)
    alice, bob, carol = k.identity("alice"), k.identity("bob"), k.identity("carol")
    a, genesis = k.found(alice, "general", T0)
    b = k.replica(a.channel_id, bob, genesis)
    c = k.replica(a.channel_id, carol, genesis)
    for i in range(3):
        a.post(f"a{i}", T0 + 100 + i, k.rb)
        c.post(f"c{i}", T0 + 200 + i, k.rb)
    sync_into(b, c)  # b knows carol's messages, a does not
    for i in range(3):
        b.post(f"b{i}", T0 + 300 + i, k.rb)
    a_lacks = [i for i in b.log if i not in a.envs]
    b_lacks = [i for i in a.log if i not in b.envs]
    assert 6 == len(a_lacks) and 3 == len(b_lacks)
    assert a_lacks == b.missing_for(a.vector)
    assert b_lacks == a.missing_for(b.vector)
    # causal order: each envelope comes after all of its deps that are also sent
    for ids in (a_lacks, b_lacks):
        src = b if ids is a_lacks else a
        for pos, env_id in enumerate(ids):
            assert all(d not in ids[pos:] for d in src.envs[env_id].deps)
    for env_id in a_lacks:  # in that order each one applies at once, nothing waits
        assert a.receive_bytes(b.raw[env_id], T0).applied
    sync_into(b, a)
    assert [] == a.missing_for(b.vector) == b.missing_for(a.vector)
    assert history_bytes(a) == history_bytes(b)
    assert a.vector == b.vector
    assert 9 == len(a.history())


# --- hostile inputs: rejected, replica unchanged --------------------------------------------------


def test_forged_signature_bit_flip() -> None:
    w = world()
    p3, _ = w.b.post("genuine", T0 + 5000, w.k.rb)
    sig = bytearray(p3.signature)
    sig[10] ^= 0x04
    forged = dataclasses.replace(p3, signature=bytes(sig))
    assert forged.id == p3.id
    assert_rejected(w.r, forged, "signature")
    assert_rejected(w.r, decode_envelope(forged.encode(), forged.topic), "signature")
    assert [p3] == w.r.receive(p3, T0).applied  # the genuine one is not blocked


def test_envelope_signed_by_a_key_other_than_its_author() -> None:
    w = world()
    p3, _ = w.b.post("genuine", T0 + 5000, w.k.rb)
    forged = dataclasses.replace(p3, signature=w.mallory.sign(Domain.ENVELOPE, p3.signed))
    assert_rejected(w.r, forged, "signature")
    assert [p3] == w.r.receive(p3, T0).applied


def test_actor_signer_mismatch() -> None:
    """mallory signs an envelope that carries a change authored under bob's actor id."""
    w = world()
    as_bob = w.forger(w.bob)
    bobs, _ = as_bob.post([w.p2.id], "bob never wrote this", T0 + 5000)
    op = open_op(bobs, w.k.key)
    change = op.pop("change")
    env = w.k.seal(w.mallory, w.cid, 1, [w.p2.id], op, change)
    assert_rejected(w.r, env, "actor")
    assert_rejected(w.a, env, "actor")
    # same DID, another device: the actor id binds the device too
    other_device = Identity(w.bob.secret_key, w.k.rb(16), "bob-laptop")
    env = w.k.seal(other_device, w.cid, 1, [w.p2.id], op, change)
    assert_rejected(w.r, env, "actor")
    assert_honest_peers_unaffected(w)


def test_tampered_ciphertext_resigned_by_the_author() -> None:
    w = world()
    p3, _ = w.b.post("genuine", T0 + 5000, w.k.rb)
    ct = bytearray(p3.ciphertext)
    ct[5] ^= 0x01
    assert_rejected(w.r, resign(p3, w.bob, ciphertext=bytes(ct)), "decrypt")
    # a ciphertext moved under another (correctly signed) header does not open either
    assert_rejected(w.r, resign(p3, w.bob, deps=[w.p1.id]), "decrypt")
    assert [p3] == w.r.receive(p3, T0).applied


def test_ciphertext_under_another_key_with_the_known_epoch_id() -> None:
    w = world()
    f = w.forger(w.bob, w.p2)
    p3, _ = f.post([w.p2.id], "wrong key", T0 + 5000)
    env = w.k.seal(w.bob, w.cid, 2, [w.p2.id], open_op(p3, w.k.key), change_of(p3, w.k.key),
                   key=w.k.rb(32))
    assert_rejected(w.r, env, "decrypt")
    assert_honest_peers_unaffected(w)


def test_wrong_channel() -> None:
    w = world()
    p3, _ = w.b.post("genuine", T0 + 5000, w.k.rb)
    op = open_op(p3, w.k.key)
    change = op.pop("change")
    other = w.k.seal(w.bob, w.k.rb(32), p3.seq, p3.deps, op, change)
    assert_rejected(w.r, other, "another channel")
    other_state, _ = w.k.found(w.mallory, "other", T0)
    assert_rejected(other_state, p3, "another channel")
    assert [p3] == w.r.receive(p3, T0).applied


def test_unknown_epoch() -> None:
    w = world()
    p3, _ = w.b.post("genuine", T0 + 5000, w.k.rb)
    op = open_op(p3, w.k.key)
    change = op.pop("change")
    key2 = w.k.rb(32)
    env = w.k.seal(w.bob, w.cid, p3.seq, p3.deps, op, change, key=key2, epoch=epoch_id_for(key2))
    assert_rejected(w.r, env, "unknown epoch")
    assert [p3] == w.r.receive(p3, T0).applied


def test_oversized_change() -> None:
    w = world()
    f = w.forger()
    big, _ = f.post([w.p2.id], "x" * (MAX_CHANGE_SIZE + 10), T0 + 5000, declared="x")
    assert MAX_CHANGE_SIZE < len(change_of(big, w.k.key))
    assert_rejected(w.r, big, "exceeds")
    assert_honest_peers_unaffected(w)


PLAINTEXTS = {
    "not msgpack": b"\xc1\xc1",
    "a list": msgpack.packb(["post", 1, b"change"], use_bin_type=True),
    "no change": msgpack.packb({"op": "post", "ts": 1}, use_bin_type=True),
    "change as text": msgpack.packb({"op": "post", "ts": 1, "change": "x"}, use_bin_type=True),
    "op not text": msgpack.packb({"op": 5, "ts": 1, "change": b"x"}, use_bin_type=True),
    "ts not int": msgpack.packb({"op": "post", "ts": "now", "change": b"x"}, use_bin_type=True),
    "int key": msgpack.packb({1: 2, "op": "post"}, use_bin_type=True),
    "trailing": msgpack.packb({"op": "post"}, use_bin_type=True) + b"\x00",
}


@pytest.mark.parametrize("name", sorted(PLAINTEXTS))
def test_plaintext_that_is_not_an_operation(name: str) -> None:
    w = world()
    env = seal_raw(w.mallory, w.cid, 1, (w.p2.id,), PLAINTEXTS[name], w.k.rb(24), key=w.k.key,
                   epoch=w.k.epoch)
    assert_rejected(w.r, env)
    assert_honest_peers_unaffected(w)


def test_change_that_is_not_an_uncompressed_automerge_change() -> None:
    w = world()
    f = w.forger()
    big, _ = f.post([w.p2.id], "compressible " * 500, T0 + 5000)
    op = open_op(big, w.k.key)
    raw = op.pop("change")
    compressed = bytes(next(c for c in f.doc.doc.get_changes([])
                            if bytes(c.raw_bytes) == raw).bytes)
    assert 2 == compressed[8]
    bad_magic = b"\x00" + raw[1:]
    for change in (compressed, bad_magic, b"hello", raw[:-1]):
        env = w.k.seal(w.mallory, w.cid, 1, [w.p2.id], op, change)
        assert_rejected(w.r, env, "bad change")


def test_change_seq_differs_from_envelope_seq() -> None:
    w = world()
    f = w.forger()
    p, _ = f.post([w.p2.id], "seq 1 change", T0 + 5000)
    op = open_op(p, w.k.key)
    change = op.pop("change")
    assert [p] == w.r.receive(p, T0).applied  # the honest seq-1 envelope applies
    # its seq-1 change again, now as the device's envelope 2
    assert_rejected(w.r, w.k.seal(w.mallory, w.cid, 2, [p.id], op, change), "seq")
    second, _ = f.post([p.id], "seq 2 change", T0 + 6000)
    assert [second] == w.r.receive(second, T0).applied
    op2 = open_op(second, w.k.key)
    change2 = op2.pop("change")
    assert_rejected(w.r, w.k.seal(w.mallory, w.cid, 3, [second.id], op2, change2), "seq")


def test_change_depending_on_another_authors_change() -> None:
    """Changes may depend only on genesis and the device's previous change (doc.py)."""
    w = world()
    f = w.forger(w.mallory, w.p1)  # mallory's authoring doc also holds alice's change
    env, _ = f.post([w.p2.id], "built on alice's change", T0 + 5000)
    assert parse_change(change_of(w.p1, w.k.key)).hash in parse_change(
        change_of(env, w.k.key)).deps
    for replica in w.replicas:
        assert_rejected(replica, env, "change dependencies")
    assert_honest_peers_unaffected(w)


def test_change_that_does_not_build_on_genesis() -> None:
    w = world()
    f = Forger(w.k, w.mallory, w.cid, [])  # no genesis in mallory's authoring document
    with pytest.raises(KeyError):
        f.post([w.p2.id], "x", T0 + 5000)
    doc = Document(actor_id=actor_id(w.mallory.did, w.mallory.device_salt))
    with doc.transaction() as tx:
        tx.put(ROOT, "meta", ScalarType.Str, "mine")
    raw = bytes(doc.get_changes([])[0].raw_bytes)
    env = w.k.seal(w.mallory, w.cid, 1, [w.p2.id], {"op": "post", "ts": T0}, raw)
    assert_rejected(w.r, env, "change dependencies")


def test_the_devices_previous_envelope_is_an_implicit_dependency() -> None:
    """Wire v2: an envelope never names its device's previous envelope (nor a repeated
    epoch); a replica resolves it by (author, device, seq - 1) and waits for it."""
    w = world()
    p3, _ = w.b.post("second from bob", T0 + 5000, w.k.rb)
    p4, _ = w.b.post("third from bob", T0 + 6000, w.k.rb)
    assert ((w.p2.id,), (), None) == (p3.deps, p3.wire_deps, p3.wire_epoch)
    wire = w.r.decode(p4.encode())
    assert ((), b"", False) == (wire.deps, wire.epoch, wire.resolved)
    assert w.r.receive(wire, T0).pending  # waits for bob's envelope 2
    result = w.r.receive(w.r.decode(p3.encode()), T0)
    assert [p3.id, p4.id] == [e.id for e in result.applied]
    assert ((p3.id,), p3.epoch) == (w.r.envs[p4.id].deps, w.r.envs[p4.id].epoch)


def test_dependency_on_a_missing_envelope_waits_and_changes_nothing() -> None:
    w = world()
    f = w.forger()
    ghost = hashlib.blake2b(b"never sent", digest_size=32).digest()
    env, msg = f.post([w.p2.id, ghost], "waiting forever", T0 + 5000)
    before = snapshot(w.r)
    result = w.r.receive(env, T0 + 5000)
    assert (True, [], False, False) == (result.pending, result.applied, result.duplicate,
                                        result.equivocation)
    assert {env.id} == set(w.r.pending)
    after = snapshot(w.r)
    assert (before.history, before.vector, before.heads, before.doc, before.envs) == (
        after.history, after.vector, after.heads, after.doc, after.envs)
    assert w.r.receive(env, T0).duplicate  # a replay of a pending envelope
    assert_honest_peers_unaffected(w)  # later traffic does not release it
    p4, _ = w.a.post("more", T0 + 9500, w.k.rb)
    w.r.receive(p4, T0)
    assert {env.id} == set(w.r.pending)
    assert env.id not in w.r.envs
    assert msg not in [v.id for v in w.r.history()]


def test_pending_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dag_module, "MAX_PENDING", 3)
    w = world()
    f = w.forger()
    ghost = hashlib.blake2b(b"never sent", digest_size=32).digest()
    envs: list[Envelope] = []
    for i in range(4):
        envs.append(f.post([w.p2.id, ghost] + [e.id for e in envs[-1:]], f"w{i}",
                           T0 + 5000 + i)[0])
    for env in envs[:3]:
        assert w.r.receive(env, T0).pending
    assert_rejected(w.r, envs[3], "pending")
    assert {e.id for e in envs[:3]} == set(w.r.pending)
    assert_honest_peers_unaffected(w)


def test_replay_of_an_applied_envelope_is_a_duplicate() -> None:
    w = world()
    before = snapshot(w.r)
    for env in (w.genesis, w.p1, w.p2):
        result = w.r.receive(env, T0 + 9000)
        assert (True, []) == (result.duplicate, result.applied)
        assert w.r.receive_bytes(env.encode(), T0 + 9000).duplicate
        assert w.r.receive(w.r.decode(env.encode()), T0 + 9000).duplicate
    assert before == snapshot(w.r)


def test_replay_of_own_envelope() -> None:
    w = world()
    before = snapshot(w.a)
    assert w.a.receive(w.p1, T0).duplicate
    assert before == snapshot(w.a)


def test_rejected_pending_envelope_does_not_break_delivery_of_its_dependency() -> None:
    """Regression: a parked envelope that fails the apply-time checks raises out of _drain.

    mallory's envelope waits for p3 and carries a change built on alice's change (invalid).
    When p3 arrives, ``receive(p3)`` applies p3, then re-checks mallory's envelope in
    ``_drain`` and lets its ``Rejected`` escape: the caller is told p3 was rejected although
    it was applied, and the honest envelope also waiting for p3 is stranded in ``pending``.
    """
    w = world()
    p3, _ = w.a.post("the dependency", T0 + 3000, w.k.rb)
    deliver(w.b, [p3])
    honest, honest_id = w.b.post("honest, waits for p3", T0 + 4000, w.k.rb)
    f = w.forger(w.mallory, w.p1, p3)
    bad = None
    for i in range(64):  # make the invalid envelope the first one _drain looks at
        candidate, _ = f.post([p3.id], f"invalid {i}", T0 + 3500)
        if candidate.id < honest.id:
            bad = candidate
            break
        f = w.forger(w.mallory, w.p1, p3)
    assert bad is not None
    assert parse_change(change_of(p3, w.k.key)).hash in parse_change(change_of(bad, w.k.key)).deps
    assert w.r.receive(bad, T0).pending
    assert w.r.receive(honest, T0).pending
    result = w.r.receive(p3, T0 + 5000)  # must not raise: p3 itself is fine
    assert [p3, honest] == result.applied
    assert {} == w.r.pending
    assert bad.id not in w.r.envs
    assert honest_id == w.r.history()[-1].id


def test_corrupt_change_body_with_a_valid_checksum_is_rejected() -> None:
    """Regression: a change whose header parses but which automerge cannot decode is kept.

    ``SharedDocument.apply`` feeds it to ``receive_sync_message``, which silently drops it;
    the envelope is then recorded (status INVALID, ``last_change`` = a hash the document
    does not have) instead of being rejected with the document untouched.
    """
    w = world()
    f = w.forger()
    env, _ = f.post([w.p2.id], "to be corrupted", T0 + 5000)
    op = open_op(env, w.k.key)
    raw = op.pop("change")
    body = bytearray(raw[8:])
    for pos in range(len(body) - 40, len(body)):
        body[pos] = 0xFF  # garble the op columns at the end
    corrupt = MAGIC + hashlib.sha256(bytes(body)).digest()[:4] + bytes(body)
    assert parse_change(corrupt).actor == parse_change(raw).actor
    env2 = w.k.seal(w.mallory, w.cid, 1, [w.p2.id], op, corrupt)
    try:
        w.r.receive(env2, T0)
    except Rejected:
        assert env2.id not in w.r.envs
        return
    # if it is kept, its change must really be in the document
    assert parse_change(corrupt).hash in {bytes(c.hash) for c in w.r.doc.doc.get_changes([])}


def test_forged_genesis_before_the_real_one_does_not_hijack_the_document() -> None:
    """Regression: a member's fake genesis (deps ()) applied before the real genesis wins the
    root keys ``meta``/``messages``… of the shared document when its actor id sorts higher,
    so the real genesis folds as invalid and every later message is rejected.

    A genesis op should be checked against the channel id *before* the change touches the
    document (and nothing else may apply before genesis), so the fake is Rejected.
    """
    w = world()
    k = w.k
    mallory = w.mallory
    while actor_id(mallory.did, mallory.device_salt) <= \
            actor_id(w.alice.did, w.alice.device_salt):
        mallory = k.identity("mallory")
    f = Forger(k, mallory, w.cid, [])
    change = f.doc.genesis({"name": "general", "founder": mallory.did, "created": T0})
    fake = f.envelope({"op": "genesis", "name": "general", "nonce": k.rb(32), "ts": T0},
                      change, [])
    fresh = k.replica(w.cid, k.identity("fresh"))
    with contextlib.suppress(Rejected):  # rejecting it outright is the right outcome
        fresh.receive(fake, T0)
    deliver(fresh, [w.genesis, w.p1, w.p2])
    assert history_bytes(w.a) == history_bytes(fresh)
    assert w.genesis.id == fresh.genesis_id


def test_overwriting_a_top_level_map_does_not_hide_other_authors() -> None:
    """Regression: a change may overwrite ROOT["messages"] with a new map.

    ``SharedDocument.obj`` resolves (and caches) top-level maps at the *current* document
    state, so on a replica where mallory's change is folded before the first honest post,
    every honest post is read from mallory's map, is found missing, and is marked invalid —
    while replicas that cached the genesis map earlier show them. Histories diverge.
    Top-level objects should be the ones genesis created (read at the genesis heads), and a
    change that rewrites a root key should be refused.
    """
    w = world()
    k = w.k
    f = w.forger()
    mid = make_ulid(T0 + 500, k.rb(10))
    change = replace_top(f.doc, "messages", mid, {"author": w.mallory.did, "text": "mine",
                                                  "reply_to": "", "deleted": False})
    takeover = f.envelope({"op": "post", "id": mid, "text": "mine", "reply_to": "",
                           "ts": T0 + 500}, change, [w.genesis.id])
    fresh = k.replica(w.cid, k.identity("fresh"), w.genesis)
    deliver(fresh, [takeover, w.p1, w.p2])
    deliver(w.r, [takeover])
    assert history_bytes(w.r) == history_bytes(fresh)
    assert {w.m1, w.m2} <= {v.id for v in fresh.history()}


# --- invalid operations: applied, kept for replication, never shown ------------------------------


def test_edit_and_delete_of_another_authors_message_are_invalid_everywhere() -> None:
    w = world()
    f = w.forger()
    before = [history_bytes(r) for r in w.replicas]
    edit = f.edit_foreign([w.p2.id], w.m1, "pwned", T0 + 5000)
    delete = f.delete_foreign([edit.id], w.m2, T0 + 5001)
    w.everywhere(edit, delete)
    for replica, old in zip(w.replicas, before, strict=True):
        assert old == history_bytes(replica)
        assert Status.INVALID == replica.envs[edit.id].status
        assert "edit of another author's message" == replica.envs[edit.id].why
        assert Status.INVALID == replica.envs[delete.id].status
        assert "delete of another author's message" == replica.envs[delete.id].why
        assert ["hello", "hi alice"] == [v.text for v in replica.history()]
        assert {(w.mallory.did, w.mallory.device_salt): 2}.items() <= replica.vector.items()
    # alice can still edit her own message everywhere; mallory's key does not interfere
    e = w.a.edit(w.m1, "hello again", T0 + 6000, w.k.rb).envelope
    deliver(w.b, [e])
    deliver(w.r, [e])
    for replica in w.replicas:
        assert "hello again" == replica.history()[0].text


def test_post_whose_declared_text_differs_from_the_change_is_invalid() -> None:
    w = world()
    f = w.forger()
    env, msg = f.post([w.p2.id], "what the document says", T0 + 5000, declared="what I claim")
    w.everywhere(env)
    for replica in w.replicas:
        assert "document does not match the post" == replica.envs[env.id].why
        assert msg not in [v.id for v in replica.history()]
    # the invalid envelope still counts in mallory's chain: her next post applies
    ok, _ = f.post([env.id], "honest now", T0 + 6000)
    w.everywhere(ok)
    for replica in w.replicas:
        assert Status.APPLIED == replica.envs[ok.id].status
        assert (w.mallory.did, "honest now") == history_texts(replica)[-1]


def test_reused_message_id_is_invalid_and_does_not_change_the_original() -> None:
    w = world()
    f = w.forger()
    env, msg = f.post([w.p2.id], "impostor", ulid_ms(w.m1), msg_id=w.m1)
    assert w.m1 == msg
    w.everywhere(env)
    for replica in w.replicas:
        assert "message id already used" == replica.envs[env.id].why
        assert (w.alice.did, "hello") == (replica.history()[0].author, replica.history()[0].text)
        assert w.alice.did == replica.messages[w.m1].author


def test_unknown_operation_is_invalid() -> None:
    w = world()
    f = w.forger()
    env = f.unknown([w.p2.id], "frobnicate", T0 + 5000)
    before = [history_bytes(r) for r in w.replicas]
    w.everywhere(env)
    for replica, old in zip(w.replicas, before, strict=True):
        assert Status.INVALID == replica.envs[env.id].status
        assert "unknown operation 'frobnicate'" == replica.envs[env.id].why
        assert old == history_bytes(replica)


def test_invalid_envelopes_replicate_through_missing_for() -> None:
    w = world()
    f = w.forger()
    env = f.unknown([w.p2.id], "frobnicate", T0 + 5000)
    deliver(w.r, [env])
    fresh = w.k.replica(w.cid, w.k.identity("fresh"), w.genesis)
    assert env.id in sync_into(fresh, w.r)
    assert Status.INVALID == fresh.envs[env.id].status
    assert w.r.vector == fresh.vector


def test_concurrent_reuse_of_a_message_id_gives_the_same_history_everywhere() -> None:
    """Regression: "message id already used" depends on arrival order.

    mallory copies alice's ULID into a post that does not depend on alice's. A replica that
    receives alice's first shows alice's text; one that receives mallory's first shows
    mallory's under that id and marks alice's post invalid.
    """
    w = world()
    k = w.k
    f = w.forger()
    p3, m3 = w.a.post("original", T0 + 3000, k.rb)
    copy, _ = f.post([w.genesis.id], "impostor", T0 + 3000, msg_id=m3)
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, p3, copy])
    deliver(r2, [copy, w.p1, w.p2, p3])
    assert history_bytes(r1) == history_bytes(r2)
    # a concurrent copy of the id cannot hide the original: both posts are shown
    shown = [(v.id, v.author, v.text) for v in r1.history() if v.id == m3]
    assert sorted([(m3, w.alice.did, "original"), (m3, copy.author, "impostor")]) == sorted(shown)


def test_a_copied_id_that_saw_the_original_is_invalid() -> None:
    w = world()
    k = w.k
    f = w.forger()
    p3, m3 = w.a.post("original", T0 + 3000, k.rb)
    later, _ = f.post([p3.id], "impostor", T0 + 3000, msg_id=m3)
    r = k.replica(w.cid, k.identity("r"), w.genesis)
    deliver(r, [w.p1, w.p2, p3, later])
    assert ["original"] == [v.text for v in r.history() if v.id == m3]
    assert "message id already used" == r.envs[later.id].why


def test_reaction_to_a_concurrent_message_gives_the_same_history_everywhere() -> None:
    """Regression: a reaction is valid only if its target is already folded *on this replica*, not
    in the reaction's causal past, so the verdict depends on arrival order."""
    w = world()
    k = w.k
    f = w.forger()
    p3, m3 = w.b.post("react to me", T0 + 3000, k.rb)
    x = f.react([w.genesis.id], m3, "👍", True, T0 + 3500)  # does not depend on p3
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, p3, x])
    deliver(r2, [w.p1, w.p2, x, p3])
    assert history_bytes(r1) == history_bytes(r2)


# --- equivocation -----------------------------------------------------------------------------


@dataclasses.dataclass
class Fork:
    w: World
    yuri: Identity
    p0: Envelope  # yuri's honest first message (seq 1)
    e1: Envelope  # two different seq-2 envelopes
    e2: Envelope
    e1b: Envelope  # yuri continues on branch 1 (seq 3)
    h1: Envelope  # bob builds on branch 1
    h2: Envelope  # carol builds on branch 2
    ids: dict[str, str]


def fork(h1_ts: int = T0 + 7000, h2_ts: int = T0 + 7500) -> Fork:
    w = world()
    k = w.k
    yuri = k.identity("yuri")
    y = k.replica(w.cid, yuri, w.genesis)
    deliver(y, [w.p1, w.p2])
    p0, i0 = y.post("yuri's first", T0 + 3000, k.rb)
    y2 = k.replica(w.cid, yuri, w.genesis)  # the same device, a second copy of its state
    deliver(y2, [w.p1, w.p2, p0])
    e1, i1 = y.post("branch one", T0 + 4000, k.rb)
    e2, i2 = y2.post("branch two", T0 + 4000, k.rb)
    assert (2, 2) == (e1.seq, e2.seq) and e1.id != e2.id
    e1b, i1b = y.post("branch one, continued", T0 + 5000, k.rb)
    deliver(w.b, [p0, e1])
    h1, j1 = w.b.post("bob on branch one", h1_ts, k.rb)
    carol = k.replica(w.cid, k.identity("carol"), w.genesis)
    deliver(carol, [w.p1, w.p2, p0, e2])
    h2, j2 = carol.post("carol on branch two", h2_ts, k.rb)
    assert e1.id in h1.deps and e2.id in h2.deps
    return Fork(w, yuri, p0, e1, e2, e1b, h1, h2,
                {"p0": i0, "e1": i1, "e2": i2, "e1b": i1b, "h1": j1, "h2": j2})


def test_equivocation_is_quarantined_identically_in_any_order() -> None:
    f = fork()
    w, k = f.w, f.w.k
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    base = [w.p1, w.p2, f.p0]
    results1 = deliver(r1, [*base, f.e1, f.h1, f.e1b, f.e2, f.h2])
    results2 = deliver(r2, [*base, f.e2, f.h2, f.e1, f.h1, f.e1b])
    assert results1[-2].equivocation and results2[-3].equivocation
    expected = [w.m1, w.m2, f.ids["p0"], f.ids["h1"], f.ids["h2"]]
    assert expected == [v.id for v in r1.history()]
    assert history_bytes(r1) == history_bytes(r2)
    device = (f.yuri.did, f.yuri.device_salt)
    for replica, applied, quarantined in ((r1, f.e1, f.e2), (r2, f.e2, f.e1)):
        assert {f.e1.id, f.e2.id, f.e1b.id, f.h1.id, f.h2.id} <= set(replica.envs)
        assert Status.APPLIED == replica.envs[applied.id].status
        assert Status.QUARANTINED == replica.envs[quarantined.id].status
        assert Status.APPLIED == replica.envs[f.h1.id].status == replica.envs[f.h2.id].status
        assert {device: 2} == replica.equivocators
        assert {} == replica.pending
        assert 3 == replica.vector[device]
    assert Status.QUARANTINED == r2.envs[f.e1b.id].status
    # an honest author's later message, depending on both branches, applies on both
    carol2 = k.replica(w.cid, k.identity("dave"), w.genesis)
    deliver(carol2, [*base, f.e1, f.e2, f.h1, f.h2])
    p5, i5 = carol2.post("after the fork", T0 + 9000, k.rb)
    assert {f.h1.id, f.h2.id} <= set(p5.deps)
    assert [p5] == r1.receive(p5, T0).applied == r2.receive(p5, T0).applied
    assert history_bytes(r1) == history_bytes(r2) == history_bytes(carol2)
    assert i5 == r1.history()[-1].id


def test_equivocation_then_dependent_arrives_before_the_quarantined_branch() -> None:
    """Regression: an honest envelope parked waiting for the second branch is never released.

    ``receive`` returns straight from ``_equivocation`` without ``_drain``, so h1 (which
    depends on e1, quarantined here because e2 came first) stays in ``pending`` forever.
    """
    f = fork()
    w, k = f.w, f.w.k
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, f.p0, f.e1, f.h1, f.e2, f.h2])
    deliver(r2, [w.p1, w.p2, f.p0, f.e2, f.h1, f.h2, f.e1])  # h1 waits for e1
    assert {} == r2.pending
    assert Status.APPLIED == r2.envs[f.h1.id].status
    assert history_bytes(r1) == history_bytes(r2)


def test_equivocation_order_does_not_depend_on_the_arrival_order() -> None:
    """Regression: a quarantined envelope recorded by ``_equivocation`` gets eff=0 and depth=0, but
    the same envelope applied on another replica gets its real values, so honest messages
    that depend on it get different sort keys on different replicas. With h1 and h2 at the
    same time, r1 and r2 show them in opposite orders."""
    f = fork(h1_ts=T0 + 7000, h2_ts=T0 + 7000)
    w, k = f.w, f.w.k
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, f.p0, f.e1, f.e2, f.h1, f.h2])
    deliver(r2, [w.p1, w.p2, f.p0, f.e2, f.e1, f.h1, f.h2])
    assert history_bytes(r1) == history_bytes(r2)


def test_equivocating_edits_are_hidden_identically() -> None:
    """Regression: quarantine hides the equivocator's *messages* from the fork seq on, but an edit
    (or delete) at that seq of an earlier message is folded into that message on the
    replica where its branch applied: one replica shows "edit a", the other "edit b"."""
    w = world()
    k = w.k
    yuri = k.identity("yuri")
    y1 = k.replica(w.cid, yuri, w.genesis)
    p, pid = y1.post("original", T0 + 3000, k.rb)
    y2 = k.replica(w.cid, yuri, w.genesis)
    deliver(y2, [p])
    ea = y1.edit(pid, "edit a", T0 + 4000, k.rb).envelope
    eb = y2.edit(pid, "edit b", T0 + 4000, k.rb).envelope
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [p, ea, eb])
    deliver(r2, [p, eb, ea])
    assert history_bytes(r1) == history_bytes(r2)


def test_equivocating_reactions_are_hidden_identically() -> None:
    """Regression: reactions are not filtered by the equivocation quarantine at all."""
    w = world()
    k = w.k
    yuri = k.identity("yuri")
    y1 = k.replica(w.cid, yuri, w.genesis)
    y2 = k.replica(w.cid, yuri, w.genesis)
    deliver(y1, [w.p1])
    deliver(y2, [w.p1])
    xa = y1.react(w.m1, "👍", True, T0 + 4000, k.rb).envelope
    xb = y2.react(w.m1, "👎", True, T0 + 4000, k.rb).envelope
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, xa, xb])
    deliver(r2, [w.p1, xb, xa])
    assert history_bytes(r1) == history_bytes(r2)


def test_equivocation_with_an_invalid_twin_is_judged_the_same_everywhere() -> None:
    """A twin whose change breaks the dependency rule is rejected on every replica, whether
    it arrives before or after its valid sibling, and nobody is marked an equivocator."""
    w = world()
    k = w.k
    honest = w.forger()
    e1, _ = honest.post([w.p2.id], "honest-looking", T0 + 4000)
    twin_maker = w.forger(w.mallory, w.p1)  # its change depends on alice's change
    e2, _ = twin_maker.post([w.p2.id], "twin", T0 + 4000)
    assert (1, 1) == (e1.seq, e2.seq)
    r1 = k.replica(w.cid, k.identity("r1"), w.genesis)
    r2 = k.replica(w.cid, k.identity("r2"), w.genesis)
    deliver(r1, [w.p1, w.p2, e1])
    with pytest.raises(Rejected):
        r1.receive(e2, T0)
    deliver(r2, [w.p1, w.p2])
    with pytest.raises(Rejected):
        r2.receive(e2, T0)
    deliver(r2, [e1])
    assert history_bytes(r1) == history_bytes(r2)
    assert {} == r1.equivocators == r2.equivocators


def test_missing_for_delivers_the_second_branch_of_an_equivocation() -> None:
    """Regression (summary limitation): the per-device seq vector cannot express "I hold only one
    of the two seq-2 envelopes", so ``missing_for`` never sends the other branch, and an
    honest envelope that depends on it stays pending forever on the receiver."""
    f = fork()
    w, k = f.w, f.w.k
    full = k.replica(w.cid, k.identity("full"), w.genesis)
    deliver(full, [w.p1, w.p2, f.p0, f.e1, f.h1, f.e2, f.h2])
    partial = k.replica(w.cid, k.identity("partial"), w.genesis)
    deliver(partial, [w.p1, w.p2, f.p0, f.e1])
    sync_into(partial, full)
    assert {} == partial.pending
    assert history_bytes(full) == history_bytes(partial)


def test_own_envelopes_use_seal_envelope_layout() -> None:
    w = world()
    op = open_op(w.p1, w.k.key)
    change = op.pop("change")
    again = seal_envelope(w.alice, channel=w.cid, seq=w.p1.seq, deps=w.p1.deps,
                          epoch=w.p1.epoch, key=w.k.key, nonce=w.p1.nonce,
                          plaintext=encode_operation(op, change), prev=w.genesis.id,
                          prev_epoch=w.genesis.epoch)
    assert w.p1.id == again.id
    # wire v2: the previous envelope and a repeated epoch stay implicit
    assert ((), w.p1.epoch == w.genesis.epoch) == (again.wire_deps, again.wire_epoch is None)


def test_post_whose_id_time_differs_from_its_timestamp_is_invalid() -> None:
    w = world()
    f = w.forger()
    env, _ = f.post([w.p2.id], "back-dated id", T0 + 5000, msg_id=make_ulid(T0, b"\x01" * 10))
    w.everywhere(env)
    for replica in w.replicas:
        assert "message id time does not match the operation's time" == replica.envs[env.id].why
        assert "back-dated id" not in [v.text for v in replica.history()]


def _garble_body(change: bytes, pos: int, value: int) -> bytes:
    """``change`` with one byte of its op columns replaced and its checksum fixed, so the
    chunk header still parses (parse_change) but Automerge may fail to decode the body."""
    garbled = bytearray(change)
    garbled[pos] = value
    garbled[4:8] = hashlib.sha256(bytes(garbled[8:])).digest()[:4]
    return bytes(garbled)


def test_change_that_automerge_cannot_decode_is_rejected_not_raised() -> None:
    """A member signs and encrypts a change whose header is fine but whose body Automerge
    refuses (it raises a bare Exception): the envelope is Rejected with a reason and the
    replica is untouched, instead of the exception escaping into the node."""
    w = world()
    post, _ = w.forger().post([w.p2.id], "soon garbled", T0 + 5000)
    op = open_op(post, w.k.key)
    change = op.pop("change")
    outcomes: dict[str, int] = {}
    for pos in range(80, len(change)):  # the op columns, past the header
        for value in (0x00, 0xFF, 0x7F):
            bad = _garble_body(change, pos, value)
            if bad == change:
                continue
            replica = w.k.replica(w.cid, w.k.identity("fresh"), w.genesis)
            deliver(replica, [w.p1, w.p2])
            env = w.k.seal(w.mallory, w.cid, 1, [w.p2.id], op, bad)
            before = snapshot(replica)
            try:
                replica.receive(env, T0 + 10_000)
            except Rejected as exc:
                assert before == snapshot(replica)
                outcomes[str(exc)] = outcomes.get(str(exc), 0) + 1
            else:  # automerge read another well-formed change; the fold judged it
                outcomes["judged"] = outcomes.get("judged", 0) + 1
    assert any("automerge cannot apply" in why for why in outcomes), outcomes
    # the replica that refused the last one still works
    deliver(replica, [])
    p3, _ = w.b.post("still here", T0 + 9000, w.k.rb)
    assert [p3] == replica.receive(p3, T0 + 9000).applied
    assert "still here" == replica.history()[-1].text
