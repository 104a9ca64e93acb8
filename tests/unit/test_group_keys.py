"""Prekeys and epoch key bundles: round trips and the adversarial cases of the E2EE
references (moved wraps, re-signed bundles, forged or expired prekeys, small-order keys)."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.keys import (
    PREKEY_TTL_MS,
    KeyError_,
    Prekey,
    epoch_id,
    identity_prekey,
    identity_prekey_private,
    key_commitment,
    make_prekey,
    message_key,
    open_bundle,
    open_prekey,
    read_bundle,
    seal_bundle,
)
from p2pchat.crypto import Domain, secret_key_from_seed
from p2pchat.crypto.dh import KeyAgreementError, x25519
from p2pchat.identity import Identity

NOW = 1_800_000_000_000


class World:
    def __init__(self, seed: int, members: int = 4) -> None:
        self.rng = random.Random(seed)
        self.ids = [Identity(secret_key_from_seed(self.rb(32)), self.rb(16), f"m{i}")
                    for i in range(members)]
        self.prekeys: list[tuple[Prekey, bytes]] = []
        for identity in self.ids:
            record, private = make_prekey(identity, self.rb, NOW)
            self.prekeys.append((open_prekey(record, NOW), private))
        self.channel = self.rb(32)

    def rb(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def private_for(self, i: int) -> object:
        prekey, private = self.prekeys[i]
        return lambda pid: private if pid == prekey.prekey_id else None

    def bundle(self, distributor: int = 0, to: list[int] | None = None,
               parents: tuple[bytes, ...] = ()) -> tuple[bytes, bytes]:
        secret = self.rb(32)
        chosen = range(len(self.ids)) if to is None else to
        raw = seal_bundle(self.ids[distributor], self.channel, parents, secret,
                          [self.prekeys[i][0] for i in chosen], self.rb, NOW)
        return raw, secret


def test_every_recipient_opens_the_same_secret_and_others_cannot() -> None:
    w = World(1)
    raw, secret = w.bundle(to=[0, 1, 2])
    for i in (0, 1, 2):
        header, got = open_bundle(raw, w.ids[i].did, w.private_for(i))  # type: ignore[arg-type]
        assert secret == got
        assert epoch_id(raw) == header.epoch
        assert w.ids[0].did == header.distributor
        assert key_commitment(secret) == header.commitment
    with pytest.raises(KeyError_, match="not sealed to any prekey"):
        open_bundle(raw, w.ids[3].did, w.private_for(3))  # type: ignore[arg-type]
    assert sorted(w.prekeys[i][0].prekey_id for i in (0, 1, 2)) == list(read_bundle(raw)
                                                                         .recipients)


def test_a_wrap_opened_as_someone_else_fails() -> None:
    """The recipient's DID is in the AAD: member 1's private key claimed by member 2."""
    w = World(2)
    raw, _ = w.bundle(to=[1])
    with pytest.raises(KeyError_, match="does not open"):
        open_bundle(raw, w.ids[2].did, w.private_for(1))  # type: ignore[arg-type]


def _edit_body(raw: bytes, change: object, resign: Identity | None = None) -> bytes:
    body, signature = msgpack.unpackb(raw, raw=False)
    fields = msgpack.unpackb(body, raw=False)
    change(fields)  # type: ignore[operator]
    body = msgpack.packb(fields, use_bin_type=True)
    if resign is not None:
        fields[3] = resign.did
        body = msgpack.packb(fields, use_bin_type=True)
        signature = resign.sign(Domain.BUNDLE, body)
    return msgpack.packb([body, signature], use_bin_type=True)  # type: ignore[no-any-return]


def test_tampering_breaks_the_signature() -> None:
    w = World(3)
    raw, _ = w.bundle()
    for index, value in ((1, w.rb(32)), (2, [w.rb(32)]), (4, NOW + 1)):
        def change(fields: list[object], i: int = index, v: object = value) -> None:
            fields[i] = v

        with pytest.raises(KeyError_, match="signature"):
            read_bundle(_edit_body(raw, change))


def test_a_re_signed_bundle_or_a_moved_wrap_does_not_open() -> None:
    """A member re-signs Alice's wraps as its own, or moves them to another channel or
    epoch: the AAD binds distributor, channel and parents, so nothing opens."""
    w = World(4)
    raw, _ = w.bundle(distributor=0, to=[1])
    mallory = w.ids[2]
    moved = [
        _edit_body(raw, lambda f: None, resign=mallory),
        _edit_body(raw, lambda f: f.__setitem__(1, w.rb(32)), resign=w.ids[0]),
        _edit_body(raw, lambda f: f.__setitem__(2, [w.rb(32)]), resign=w.ids[0]),
    ]
    for bundle in moved:
        read_bundle(bundle)  # well formed and validly signed...
        with pytest.raises(KeyError_, match="does not open"):  # ...but opens nothing
            open_bundle(bundle, w.ids[1].did, w.private_for(1))  # type: ignore[arg-type]


def test_a_wrong_key_commitment_is_caught() -> None:
    w = World(5)
    raw, _ = w.bundle(to=[1])
    forged = _edit_body(raw, lambda f: f.__setitem__(6, w.rb(32)), resign=w.ids[0])
    with pytest.raises(KeyError_):
        open_bundle(forged, w.ids[1].did, w.private_for(1))  # type: ignore[arg-type]


def test_prekeys_are_signed_and_expire() -> None:
    w = World(6)
    record, _ = make_prekey(w.ids[0], w.rb, NOW)
    assert NOW + PREKEY_TTL_MS == open_prekey(record, NOW).expires_ms
    with pytest.raises(KeyError_, match="expired"):
        open_prekey(record, NOW + PREKEY_TTL_MS)
    body, _ = msgpack.unpackb(record, raw=False)
    forged = msgpack.packb([body, w.ids[1].sign(Domain.PREKEY, body)], use_bin_type=True)
    with pytest.raises(KeyError_, match="signature"):
        open_prekey(forged, NOW)
    with pytest.raises(KeyError_, match="malformed"):
        open_prekey(b"\x93garbage", NOW)


def test_identity_fallback_prekey_opens_a_first_contact_bundle() -> None:
    w = World(7)
    newcomer = w.ids[3]
    fallback = identity_prekey(newcomer.did)
    secret = w.rb(32)
    raw = seal_bundle(w.ids[0], w.channel, (), secret, [fallback], w.rb, NOW)
    _, got = open_bundle(raw, newcomer.did, lambda pid: identity_prekey_private(newcomer)
                         if pid == fallback.prekey_id else None)
    assert secret == got
    with pytest.raises(KeyError_):
        identity_prekey("did:key:zNotAKey")


@pytest.mark.parametrize("point", [bytes(32), bytes([1]) + bytes(31),
                                   bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd"
                                                 "866205165f49b800")])
def test_small_order_keys_are_refused(point: bytes) -> None:
    with pytest.raises(KeyAgreementError):
        x25519(bytes(range(32)), point)


def test_message_keys_differ_per_author_and_epoch() -> None:
    w = World(8)
    a, b = w.ids[0].did, w.ids[1].did
    s1, s2 = w.rb(32), w.rb(32)
    keys = {message_key(s, d) for s in (s1, s2) for d in (a, b)}
    assert 4 == len(keys)
    assert message_key(s1, a) == message_key(s1, a)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flip=st.integers(0, 10_000))
def test_any_flipped_byte_is_refused(seed: int, flip: int) -> None:
    """No single-byte change of a bundle yields a different secret: either it is refused,
    or (a byte msgpack ignores) it still opens to the very same secret."""
    w = World(seed % 1000, members=2)
    raw, secret = w.bundle(to=[1])
    i = flip % len(raw)
    bad = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:]
    try:
        _, got = open_bundle(bad, w.ids[1].did, w.private_for(1))  # type: ignore[arg-type]
    except KeyError_:
        return
    assert secret == got
