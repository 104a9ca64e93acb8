"""Group keys inside a channel (DESIGN §5): who can read what after bans, rotations,
replays and compromise. Real replicas (Ed25519, X25519, XChaCha20-Poly1305, Automerge);
envelopes move between them by hand, in log order."""

from __future__ import annotations

import random
from collections.abc import Iterable

import msgpack
import pytest

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.invite import make_grant, make_proof
from p2pchat.channel.keys import (
    KeyError_,
    identity_prekey,
    make_prekey,
    message_key,
    open_prekey,
    seal_bundle,
)
from p2pchat.channel.state import ChannelState, Status, decode_operation
from p2pchat.crypto import DecryptionError, Domain, secret_key_from_seed
from p2pchat.identity import Identity
from p2pchat.identity.did import did_from_public_key

T0 = 1_800_000_000_000


class World:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = T0

    def rb(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def tick(self) -> int:
        self.now += 1000
        return self.now

    def identity(self, name: str) -> Identity:
        return Identity(secret_key_from_seed(self.rb(32)), self.rb(16), name)

    def found(self, name: str = "owner") -> ChannelState:
        state, _ = ChannelState.create(self.identity(name), "e2ee", None, self.now, self.rb)
        return state

    def replica(self, owner: ChannelState, name: str, join: bool = True) -> ChannelState:
        """A node that got an invite from ``owner``: it has the genesis and (``join``)
        writes its join, with a fresh prekey, as the runtime does."""
        identity = self.identity(name)
        privates: dict[bytes, bytes] = {}
        state = ChannelState(owner.channel_id, identity, private_for=privates.get)
        assert owner.genesis_id is not None
        state.receive_bytes(owner.raw[owner.genesis_id], self.now)
        if join:
            record, private = make_prekey(identity, self.rb, self.now)
            privates[open_prekey(record, self.now).prekey_id] = private
            cap = self.rb(32)
            grant, signature = make_grant(owner.identity, owner.channel_id, cap,
                                          self.now + 10**9)
            state.join(grant, signature, make_proof(cap, owner.channel_id, identity.did),
                       record, self.tick(), self.rb)
        return state

    def admit(self, admitter: ChannelState, member: ChannelState) -> Envelope:
        """What a member who may admit does: share every epoch it holds."""
        sync(admitter, member)
        prekey = admitter.prekey_of(member.identity.did, self.now)
        assert prekey is not None
        env = admitter.share([prekey], list(admitter.group.secrets), self.tick(), self.rb).envelope
        sync(member, admitter)
        return env

    def post(self, state: ChannelState, text: str) -> Envelope:
        return state.post(text, self.tick(), self.rb).envelope


def sync(dst: ChannelState, *sources: ChannelState) -> None:
    for src in sources:
        for env_id in src.log:
            dst.receive_bytes(src.raw[env_id], T0)


def texts(state: ChannelState) -> list[str]:
    return [m.text for m in state.history()]


def content(state: ChannelState, ids: Iterable[bytes]) -> list[Envelope]:
    """The encrypted (non-clear-epoch) envelopes among ``ids``."""
    envs = [state.dag.stored(i) for i in ids]
    return [e for e in envs if e.epoch != state.clear_epoch]


def opens(env: Envelope, secrets: Iterable[bytes], authors: Iterable[str],
          channel: bytes) -> bool:
    """Does any of these secrets, under any author's message key (or raw), open ``env``?"""
    for secret in secrets:
        for key in [secret, *(message_key(secret, a) for a in authors)]:
            try:
                env.decrypt(key, channel)
            except DecryptionError:
                continue
            return True
    return False


def test_a_banned_member_with_every_ciphertext_and_old_key_reads_nothing_after_the_ban() -> None:
    w = World(1)
    owner = w.found()
    alice, mallory = w.replica(owner, "alice"), w.replica(owner, "mallory")
    w.admit(owner, alice)
    w.admit(owner, mallory)
    for state, text in ((alice, "alice before"), (mallory, "mallory before"),
                        (owner, "owner before")):
        w.post(state, text)
        sync(owner, state)
    sync(alice, owner)
    sync(mallory, owner)
    before = set(owner.log)
    ban, _ = owner.moderate("ban", w.tick(), w.rb, target=mallory.identity.did)
    assert owner.group.send_epoch(w.now) not in mallory.group.secrets  # rotated with it
    w.post(owner, "owner after 1")
    sync(alice, owner)
    w.post(alice, "alice after")  # alice saw the ban: she writes under the new epoch
    sync(owner, alice)
    w.post(owner, "owner after 2")
    sync(alice, owner)
    # mallory gets every envelope ever written, and keeps every key it ever had
    sync(mallory, owner, alice)
    after = [i for i in owner.log if i not in before and owner.in_past(ban.id, i)
             and owner.envs[i].author != mallory.identity.did]
    written = content(owner, after)
    assert len(written) == 3  # the three posts
    authors = [s.identity.did for s in (owner, alice, mallory)]
    stolen = list(mallory.group.secrets.values())
    assert len(stolen) == 1
    assert all(not opens(e, stolen, authors, owner.channel_id) for e in written)
    assert all(mallory.envs[e.id].status is Status.SEALED for e in written)
    assert ["alice before", "mallory before", "owner before"] == sorted(texts(mallory))
    assert ["owner after 1", "alice after", "owner after 2"] == texts(alice)[-3:]
    # and a key request after its own ban gets nothing: nobody may share with it
    assert not owner.group.entitled(mallory.identity.did, owner.group.view().heads[0])


def test_concurrent_bans_converge_on_one_epoch_neither_banned_member_opens() -> None:
    w = World(2)
    owner = w.found()
    m1, m2, x, y = (w.replica(owner, n) for n in ("m1", "m2", "x", "y"))
    for member in (m1, m2, x, y):
        w.admit(owner, member)
    for mod in ("m1", "m2"):
        target = m1 if mod == "m1" else m2
        owner.moderate("op", w.tick(), w.rb, target=target.identity.did)
    everyone = [owner, m1, m2, x, y]
    for s in everyone:
        sync(s, *everyone)
    # partitioned: m1 bans x, m2 bans y, each rotating to an epoch the other target holds
    m1.moderate("ban", w.tick(), w.rb, target=x.identity.did)
    m2.moderate("ban", w.tick(), w.rb, target=y.identity.did)
    e1, e2 = m1.group.view().heads, m2.group.view().heads
    assert y.identity.did in m1.group.view().holders[e1[0]]
    assert x.identity.did in m2.group.view().holders[e2[0]]
    for s in everyone:
        sync(s, *everyone)
    # healed: no head may be used; both moderators rotate at once (a storm of two)
    assert owner.group.needs_rotation() and m1.group.send_epoch(w.now) is None
    w.post(m1, "m1 after the heal")
    w.post(m2, "m2 after the heal")
    for s in everyone:
        sync(s, *everyone)
    chosen = {s.group.send_epoch(w.now) for s in (owner, m1, m2)}
    assert len(chosen) == 1 and None not in chosen
    (epoch,) = chosen
    assert epoch not in x.group.secrets and epoch not in y.group.secrets
    heads = owner.group.view().heads
    assert len(heads) == 2 and epoch == min(heads)  # two rotations, one winner everywhere
    holders = owner.group.view().holders[epoch]
    assert x.identity.did not in holders and y.identity.did not in holders
    # the banned ones see neither post
    for banned in (x, y):
        assert not {"m1 after the heal", "m2 after the heal"} & set(texts(banned))


def _hostile_bundle(state: ChannelState, bundle: bytes, w: World) -> Envelope:
    """A hostile client writes a ``bundle`` operation with arbitrary bytes."""
    from p2pchat.channel.keys import epoch_id

    change = state.authoring.put_entry("keys", f"epoch:{epoch_id(bundle).hex()}",
                                       {"by": state.identity.did})
    env = state.writer.seal({"op": "bundle", "bundle": bundle, "ts": w.tick()}, change, w.rb,
                      clear=True)
    state.receive(env, w.now)
    return env


def test_replayed_moved_and_re_signed_bundles_change_nothing() -> None:
    w = World(3)
    owner = w.found()
    member = w.replica(owner, "member")
    w.admit(owner, member)
    env = owner.dag.stored(owner.log[1])  # the log starts: genesis, bundle
    key = owner.keyring.key_for(env.epoch, owner.identity.did)
    assert key is not None
    op, _ = decode_operation(env.decrypt(key, owner.channel_id))
    original = op["bundle"]
    epoch = owner.group.send_epoch(w.now)
    # the owner replays its own old bundle: same epoch id, already distributed
    replay = _hostile_bundle(owner, original, w)
    assert (Status.INVALID, "epoch already distributed") == (
        owner.envs[replay.id].status, owner.envs[replay.id].why)
    # a member copies it into an envelope of its own
    copied = _hostile_bundle(member, original, w)
    assert member.envs[copied.id].why == \
        "bundle signed by someone other than the envelope's author"
    # a bundle of another channel
    other = w.found("elsewhere")
    foreign = seal_bundle(member.identity, other.channel_id, (), w.rb(32), [], w.rb, w.now)
    moved = _hostile_bundle(member, foreign, w)
    assert member.envs[moved.id].why == "bundle of another channel"
    # the member re-signs the owner's wraps as its own: well formed, but opens for nobody
    body, _ = msgpack.unpackb(original, raw=False)
    fields = msgpack.unpackb(body, raw=False)
    fields[3] = member.identity.did
    fields[2] = list(member.group.view().heads)
    body = msgpack.packb(fields, use_bin_type=True)
    resigned = msgpack.packb([body, member.identity.sign(Domain.BUNDLE, body)],
                             use_bin_type=True)
    _hostile_bundle(member, resigned, w)
    sync(owner, member)
    third = w.replica(owner, "third")
    w.admit(owner, third)
    assert len(third.group.secrets) == 1  # the re-signed wraps open for nobody
    (resigned_epoch,) = [e for e, i in owner.group.epochs.items()
                         if i.distributor == member.identity.did]
    # it names the epoch in use as its parent, so senders rotate away from both...
    w.post(owner, "after")
    for s in (member, third):
        sync(s, owner)
    chosen = {s.group.send_epoch(w.now) for s in (owner, member, third)}
    assert len(chosen) == 1 and not chosen & {None, epoch, resigned_epoch}
    # ...to an epoch every member can open
    assert all(chosen <= set(s.group.secrets) for s in (owner, member, third))
    assert ["after"] == texts(third)


def test_non_member_and_banned_distributors_are_not_followed() -> None:
    w = World(4)
    owner = w.found()
    member, outsider, x = (w.replica(owner, n) for n in ("member", "outsider", "x"))
    w.admit(owner, member)
    w.admit(owner, x)
    sync(outsider, owner)
    epoch = owner.group.send_epoch(w.now)
    # an outsider (never admitted) distributes an epoch to everybody it sees
    rogue = outsider.rotate(w.tick(), w.rb).envelope
    sync(owner, outsider)
    rogue_epoch = next(e for e, i in owner.group.epochs.items() if i.env == rogue.id)
    view = owner.group.view()
    assert (False, "distributor held none of the parent epochs") == (
        view.valid[rogue_epoch], view.why[rogue_epoch])
    assert owner.group.send_epoch(w.now) == epoch
    # x, banned concurrently with its own rotation: its epoch is never used
    x_rotation = x.rotate(w.tick(), w.rb).envelope
    owner.moderate("ban", w.tick(), w.rb, target=x.identity.did)
    sync(owner, x)
    sync(member, owner)
    x_epoch = next(e for e, i in member.group.epochs.items() if i.env == x_rotation.id)
    assert member.group.view().valid[x_epoch]  # concurrent: a valid epoch, but
    chosen = member.group.send_epoch(w.now)
    assert chosen not in (x_epoch, epoch) and chosen in member.group.secrets
    assert x.identity.did not in member.group.view().holders[chosen]
    # after the ban x cannot distribute at all: its envelopes are refused
    sync(x, owner)
    x.writer.check_may_write = lambda posting=True: None  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="banned"):
        x.rotate(w.tick(), w.rb)
    late = x.log[-1]
    sync(member, x)
    assert member.envs[late].status is Status.REFUSED


def test_malformed_keys_are_refused() -> None:
    w = World(5)
    owner = w.found()
    # a prekey whose public key is a small-order point
    record, _ = make_prekey(owner.identity, w.rb, w.now)
    body, _ = msgpack.unpackb(record, raw=False)
    fields = msgpack.unpackb(body, raw=False)
    fields[3] = bytes(32)
    body = msgpack.packb(fields, use_bin_type=True)
    small = msgpack.packb([body, owner.identity.sign(Domain.PREKEY, body)], use_bin_type=True)
    with pytest.raises(KeyError_, match="small order"):
        open_prekey(small, w.now)
    with pytest.raises(ValueError, match="small order"):
        owner.publish_prekey(small, w.now, w.rb)
    # a did:key that is not a DID, and one whose key has no X25519 form
    with pytest.raises(KeyError_):
        identity_prekey("did:key:zNotAKey")
    bad_point = bytes([0xFF] * 31 + [0x7F])
    from p2pchat.crypto import public_key_from_bytes

    with pytest.raises(KeyError_):
        identity_prekey(did_from_public_key(public_key_from_bytes(bad_point)))


def test_a_stolen_keyring_reads_nothing_after_the_next_rotation() -> None:
    w = World(6)
    owner = w.found()
    alice, bob = w.replica(owner, "alice"), w.replica(owner, "bob")
    w.admit(owner, alice)
    w.admit(owner, bob)
    w.post(alice, "before the theft")
    sync(owner, alice)
    sync(bob, owner)
    stolen = dict(alice.group.secrets)  # a snapshot of alice's key state
    bob.rotate(w.tick(), w.rb)  # the next rotation, by any member
    w.post(bob, "after the rotation")
    sync(owner, bob)
    w.post(owner, "owner too")
    sync(alice, owner)
    assert "after the rotation" in texts(alice)  # alice herself reads on
    thief = ChannelState(owner.channel_id, w.identity("thief"), secrets=stolen)
    sync(thief, owner)
    assert ["before the theft"] == texts(thief)
    authors = [s.identity.did for s in (owner, alice, bob)]
    late = [e for e in content(owner, owner.log) if e.epoch not in stolen]
    assert len(late) == 2 and not any(opens(e, stolen.values(), authors, owner.channel_id)
                                  for e in late)


def test_sealed_envelopes_open_in_causal_order_when_the_share_arrives() -> None:
    """A joiner that receives the history before its share keeps it sealed, then opens
    it all at once; its view ends identical to a member's."""
    w = World(7)
    owner = w.found()
    for i in range(5):
        w.post(owner, f"m{i}")
    owner.moderate("topic", w.tick(), w.rb, value="sealed for a while")
    late = w.replica(owner, "late")
    sync(late, owner)
    sync(late, owner)
    assert late.key_status() == "waiting" and late.sealed_count() == 6
    assert [] == texts(late)
    with pytest.raises(ValueError, match="not admitted yet"):
        late.post("too early", w.tick(), w.rb)
    w.admit(owner, late)
    assert late.key_status() == "member" and late.sealed_count() == 0
    assert texts(owner) == texts(late) and late.moderation().topic == "sealed for a while"
    restored = ChannelState.restore(late.channel_id, late.identity, None, None,
                                    late.snapshot(), dict(late.raw),
                                    secrets=dict(late.group.secrets))
    assert texts(restored) == texts(late)
    assert restored.group.send_epoch(w.now) == late.group.send_epoch(w.now)


def test_routine_rotation_after_a_hundred_envelopes() -> None:
    w = World(8)
    owner = w.found()
    first = owner.group.send_epoch(w.now)
    for i in range(100):
        w.post(owner, f"m{i}")
    assert owner.group.send_epoch(w.now) is None  # due
    w.post(owner, "m100")
    second = owner.group.send_epoch(w.now)
    assert second not in (None, first)
    assert owner.group.epochs[second].parents == (first,)


def _forged(w: World, author: Identity, state: ChannelState, epoch: bytes, key: bytes,
            plaintext: bytes) -> Envelope:
    """An envelope anyone could sign: any epoch id, any ciphertext."""
    from p2pchat.channel.envelope import seal_envelope

    assert state.genesis_id is not None
    return seal_envelope(author, channel=state.channel_id, seq=1, deps=(state.genesis_id,),
                         epoch=epoch, key=key, nonce=w.rb(24), plaintext=plaintext)


def test_a_stranger_asking_for_keys_is_not_entitled_to_any() -> None:
    w = World(9)
    owner = w.found()
    member = w.replica(owner, "member")
    w.admit(owner, member)
    eve = w.replica(owner, "eve", join=False)  # knows the channel id, has no invite
    record, _ = make_prekey(eve.identity, w.rb, w.now)
    sync(eve, owner)
    asked = eve.request_keys(list(owner.group.epochs), record, w.tick(), w.rb).envelope
    owner.receive_bytes(eve.raw[asked.id], w.now)
    assert any(r.did == eve.identity.did for r in owner.group.requests)
    assert not any(owner.group.entitled(eve.identity.did, e) for e in owner.group.epochs)
    assert all(owner.group.entitled(member.identity.did, e) for e in owner.group.epochs)


def test_envelopes_nobody_can_read_block_nothing_and_close_no_link() -> None:
    w = World(10)
    owner = w.found()
    member = w.replica(owner, "member")
    w.admit(owner, member)
    outsider = w.identity("outsider")
    # under an epoch id nobody knows: sealed everywhere, and a head nobody builds on
    junk = _forged(w, outsider, owner, w.rb(32), w.rb(32), b"\x80")
    owner.receive(junk, w.now)
    assert owner.envs[junk.id].status is Status.SEALED and junk.id in owner.heads
    env = w.post(owner, "still posting")
    assert junk.id not in env.deps
    owner.moderate("ban", w.tick(), w.rb, target=outsider.did)  # and moderating
    # under the real epoch, but it does not open: stored as invalid, not rejected
    epoch = owner.group.send_epoch(w.now)
    assert epoch is not None
    garbage = _forged(w, w.identity("other"), owner, epoch, w.rb(32), b"\x80")
    result = owner.receive(garbage, w.now)  # no Rejected: the forwarder is not to blame
    assert (Status.INVALID, True) == (owner.envs[garbage.id].status,
                                      garbage.id in owner.unreadable)
    # stored (it fills its author's seq) but never pushed on: the owner could read it
    # and it is invalid (issue 16, break 9); the hub pushes only applied/sealed/quarantined
    assert ([garbage.id], []) == ([e.id for e in result.invalid], result.sealed)
    stranger = w.replica(owner, "stranger", join=False)
    stranger.receive(garbage, w.now)
    assert stranger.envs[garbage.id].status is Status.SEALED  # it cannot tell
    w.post(owner, "and after it")
    sync(member, owner)
    assert ["still posting", "and after it"] == texts(member)


def test_an_expired_invite_is_not_admitted_even_with_a_back_dated_join() -> None:
    w = World(11)
    owner = w.found()
    late = w.replica(owner, "late")  # its grant expires at now + 10**9 ms
    sync(owner, late)
    (join,) = owner.group.admissions()
    assert owner.group.may_admit(owner.identity.did, join, w.now)
    assert not owner.group.may_admit(owner.identity.did, join, w.now + 10**9 + 1)


def test_a_bundle_naming_a_member_removed_in_its_past_is_invalid() -> None:
    w = World(12)
    owner = w.found()
    member, x = w.replica(owner, "member"), w.replica(owner, "x")
    w.admit(owner, member)
    w.admit(owner, x)
    owner.moderate("op", w.tick(), w.rb, target=member.identity.did)
    owner.moderate("ban", w.tick(), w.rb, target=x.identity.did)
    sync(member, owner)
    # a moderator who saw the ban seals a new epoch to x anyway (a hostile client)
    recipients = [p for p in (owner.prekey_of(d, w.now) for d in
                              (owner.identity.did, x.identity.did)) if p is not None]
    bundle = seal_bundle(member.identity, member.channel_id,
                         tuple(member.group.view().heads), w.rb(32), recipients, w.rb, w.now)
    env = _hostile_bundle(member, bundle, w)
    sync(owner, member)
    epoch = next(e for e, i in owner.group.epochs.items() if i.env == env.id)
    view = owner.group.view()
    assert (False, "bundle names a member removed in its causal past") == (
        view.valid[epoch], view.why[epoch])
    assert owner.group.send_epoch(w.now) != epoch


def test_history_gives_hidden_posts_as_placeholders_only_when_asked() -> None:
    w = World(13)
    owner = w.found()
    member = w.replica(owner, "member")
    w.admit(owner, member)
    w.post(member, "seen before")
    sync(owner, member)
    w.post(member, "concurrent with the mute")
    owner.moderate("mute", w.tick(), w.rb, target=member.identity.did)
    sync(owner, member)
    assert ["seen before"] == texts(owner)
    views = owner.history(with_hidden=True)
    assert [("seen before", False), ("", True)] == [(v.text, "muted" in v.hidden)
                                                   for v in views]
