"""Envelopes (DESIGN §3): wire form, id, signature, AEAD binding and strict decoding."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.envelope import (
    ENVELOPE_VERSION,
    MAX_ENVELOPE_DEPS,
    MAX_ENVELOPE_SIZE,
    Envelope,
    EnvelopeError,
    actor_id,
    decode_envelope,
    envelope_id,
    header_bytes,
    seal_envelope,
)
from p2pchat.crypto import DecryptionError, Domain, open_sealed, secret_key_from_seed, verify
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity

RNG = random.Random(0xE4E1)
ALICE = Identity(secret_key_from_seed(RNG.randbytes(32)), RNG.randbytes(16), "alice")
MALLORY = Identity(secret_key_from_seed(RNG.randbytes(32)), RNG.randbytes(16), "mallory")
KEY = RNG.randbytes(32)
CHANNEL = RNG.randbytes(32)
EPOCH = RNG.randbytes(32)
NONCE = RNG.randbytes(24)
DEPS = tuple(sorted(RNG.randbytes(32) for _ in range(3)))
PLAINTEXT = b"an operation and its automerge change"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def sample(**overrides: Any) -> Envelope:
    args: dict[str, Any] = dict(channel=CHANNEL, seq=7, deps=DEPS, epoch=EPOCH, key=KEY,
                                nonce=NONCE, plaintext=PLAINTEXT)
    args.update(overrides)
    return seal_envelope(ALICE, **args)


def fields(env: Envelope) -> list[Any]:
    """The signed list of ``env``, for building variants by hand."""
    return [ENVELOPE_VERSION, env.channel, env.author, env.device, env.seq, list(env.deps),
            env.epoch, env.nonce, env.ciphertext]


def forge(signed_fields: list[Any], signer: Identity = ALICE) -> bytes:
    """Encode an envelope from an arbitrary signed list, correctly signed by ``signer``."""
    signed = pack(signed_fields)
    return pack([signed, signer.sign(Domain.ENVELOPE, signed)])


def variant(index: int, value: Any) -> bytes:
    values = fields(sample())
    values[index] = value
    return forge(values)


def rejected(data: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(data)
    return str(info.value)


# --- the good path -------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    env = sample()
    decoded = decode_envelope(env.encode())
    assert env == decoded
    assert (CHANNEL, ALICE.did, ALICE.device_salt, 7, DEPS, EPOCH, NONCE) == (
        decoded.channel, decoded.author, decoded.device, decoded.seq, decoded.deps,
        decoded.epoch, decoded.nonce)
    assert env.signed == decoded.signed
    assert env.encode() == decoded.encode()


def test_wire_form_is_signed_bytes_and_signature() -> None:
    env = sample()
    assert [env.signed, env.signature] == msgpack.unpackb(env.encode(), raw=False)
    assert fields(env) == msgpack.unpackb(env.signed, raw=False)


def test_id_is_personalised_blake2b_256_of_the_signed_bytes() -> None:
    env = sample()
    expected = hashlib.blake2b(env.signed, digest_size=32, person=b"p2pchat-env").digest()
    assert expected == env.id
    assert expected == envelope_id(env.signed)
    assert expected == decode_envelope(env.encode()).id


def test_id_does_not_depend_on_the_signature_bytes_but_changes_with_any_signed_field() -> None:
    env = sample()
    assert sample(nonce=RNG.randbytes(24)).id != env.id
    assert sample(seq=8).id != env.id
    assert sample(deps=()).id != env.id


def test_signature_is_ed25519_over_signed_bytes_in_the_envelope_domain() -> None:
    env = sample()
    assert verify(ALICE.public_key, Domain.ENVELOPE, env.signed, env.signature)
    assert not verify(ALICE.public_key, Domain.LINK, env.signed, env.signature)
    assert env.verify_signature()


def test_ciphertext_is_xchacha_under_the_epoch_key_with_the_header_as_aad() -> None:
    env = sample()
    aad = pack([ENVELOPE_VERSION, CHANNEL, ALICE.did, ALICE.device_salt, 7, list(DEPS), EPOCH])
    assert aad == env.header_bytes()
    assert aad == header_bytes(CHANNEL, ALICE.did, ALICE.device_salt, 7, DEPS, EPOCH)
    assert PLAINTEXT == open_sealed(KEY, NONCE, env.ciphertext, aad)
    assert PLAINTEXT == env.decrypt(KEY)
    assert PLAINTEXT == decode_envelope(env.encode()).decrypt(KEY)


def test_decrypt_with_the_wrong_key_fails() -> None:
    with pytest.raises(DecryptionError):
        sample().decrypt(RNG.randbytes(32))


@pytest.mark.parametrize("index,value", [
    (4, 8),  # seq
    (1, b"\x00" * 32),  # channel
    (6, b"\x01" * 32),  # epoch
    (5, []),  # deps
])
def test_ciphertext_moved_under_another_signed_header_does_not_decrypt(index: int,
                                                                      value: Any) -> None:
    env = decode_envelope(variant(index, value))
    assert env.verify_signature()
    with pytest.raises(DecryptionError):
        env.decrypt(KEY)


def test_seal_sorts_and_deduplicates_deps() -> None:
    a, b, c = DEPS
    env = sample(deps=(c, a, b, a))
    assert (a, b, c) == env.deps
    assert sample(deps=DEPS).header_bytes() == env.header_bytes()


def test_seal_refuses_too_many_deps_and_oversized_envelopes() -> None:
    deps = tuple(RNG.randbytes(32) for _ in range(MAX_ENVELOPE_DEPS + 1))
    with pytest.raises(ValueError):
        sample(deps=deps)
    sample(deps=deps[:MAX_ENVELOPE_DEPS])  # the limit itself is fine
    with pytest.raises(ValueError):
        sample(plaintext=b"x" * MAX_ENVELOPE_SIZE)


def test_actor_id_is_bound_to_did_key_and_device() -> None:
    expected = hashlib.blake2b(ALICE.public_key.raw + ALICE.device_salt, digest_size=16,
                               person=b"p2pchat-actor").digest()
    assert expected == actor_id(ALICE.did, ALICE.device_salt)
    assert actor_id(ALICE.did, MALLORY.device_salt) != expected
    assert actor_id(MALLORY.did, ALICE.device_salt) != expected


def test_signature_by_another_key_does_not_verify() -> None:
    env = sample()
    forged = decode_envelope(pack([env.signed, MALLORY.sign(Domain.ENVELOPE, env.signed)]))
    assert env.id == forged.id
    assert not forged.verify_signature()


@pytest.mark.parametrize("bit", [0, 7, 100, 511])
def test_flipped_signature_bit_does_not_verify(bit: int) -> None:
    env = sample()
    sig = bytearray(env.signature)
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not decode_envelope(pack([env.signed, bytes(sig)])).verify_signature()


@pytest.mark.parametrize("author", ["", "did:key:zNotAKey", "not a did", "did:web:example.com"])
def test_malformed_author_decodes_but_never_verifies(author: str) -> None:
    env = decode_envelope(variant(2, author))
    assert author == env.author
    assert not env.verify_signature()


# --- strict decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, -1, 2**32, "1", 1.0, True, None, b"\x01"])
def test_decode_rejects_wrong_version(version: Any) -> None:
    assert "version" in rejected(variant(0, version))


@pytest.mark.parametrize("index,value,what", [
    (1, b"\x00" * 31, "channel"), (1, b"\x00" * 33, "channel"), (1, "c" * 32, "channel"),
    (3, b"\x00" * 15, "device"), (3, b"\x00" * 17, "device"), (3, None, "device"),
    (6, b"\x00" * 31, "epoch"), (6, b"\x00" * 33, "epoch"),
    (7, b"\x00" * 23, "nonce"), (7, b"\x00" * 25, "nonce"),
    (8, "text", "ciphertext"), (8, 5, "ciphertext"),
    (5, [b"\x00" * 31], "dependency"), (5, [b"\x00" * 33], "dependency"), (5, ["x" * 32],
                                                                          "dependency"),
])
def test_decode_rejects_wrong_field_sizes_and_types(index: int, value: Any, what: str) -> None:
    assert what in rejected(variant(index, value))


@pytest.mark.parametrize("seq", [0, -1, 2**63, True, "1", 1.5, None])
def test_decode_rejects_bad_seq(seq: Any) -> None:
    assert "seq" in rejected(variant(4, seq))


@pytest.mark.parametrize("author", [5, b"did:key:z", None, "did:key:z" + "1" * 60])
def test_decode_rejects_bad_author(author: Any) -> None:
    assert "author" in rejected(variant(2, author))


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_decode_rejects_wrong_signature_size(size: int) -> None:
    env = sample()
    assert "signature" in rejected(pack([env.signed, b"\x01" * size]))


def test_decode_rejects_unsorted_or_duplicate_deps() -> None:
    a, b, _ = DEPS
    assert "sorted" in rejected(variant(5, [b, a]))
    assert "sorted" in rejected(variant(5, [a, a]))
    assert "sorted" in rejected(variant(5, [a, b, b]))


def test_decode_accepts_max_deps_and_rejects_one_more() -> None:
    deps = sorted(RNG.randbytes(32) for _ in range(MAX_ENVELOPE_DEPS + 1))
    assert tuple(deps[:-1]) == decode_envelope(variant(5, deps[:-1])).deps
    assert "deps" in rejected(variant(5, deps))
    assert "deps" in rejected(variant(5, {"a": 1}))


def test_decode_rejects_oversized_envelope() -> None:
    big = sample(plaintext=b"x" * (MAX_ENVELOPE_SIZE - 1000))
    assert big == decode_envelope(big.encode())
    padded = forge([*fields(big)[:8], big.ciphertext + b"\x00" * 2000])
    assert len(padded) > MAX_ENVELOPE_SIZE
    assert "exceeds" in rejected(padded)
    assert "exceeds" in rejected(b"\x00" * (MAX_ENVELOPE_SIZE + 1))


@pytest.mark.parametrize("data", [
    pack([]),
    pack([b"x"]),
    pack([b"x", b"y", b"z"]),
    pack({"signed": b"x", "signature": b"y"}),
    pack(b"just bytes"),
    pack(None),
    pack(["signed as text", b"\x00" * 64]),
])
def test_decode_rejects_wrong_outer_shape(data: bytes) -> None:
    rejected(data)


@pytest.mark.parametrize("inner", [
    [], [1, 2, 3], "text", {"version": 1},
    [ENVELOPE_VERSION, CHANNEL, ALICE.did, ALICE.device_salt, 7, [], EPOCH, NONCE],
    [ENVELOPE_VERSION, CHANNEL, ALICE.did, ALICE.device_salt, 7, [], EPOCH, NONCE, b"c", b"x"],
])
def test_decode_rejects_wrong_inner_shape(inner: Any) -> None:
    assert "shape" in rejected(forge(inner))


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x92", b"\x92\xc4\x05abc", b"\xff" * 10, b"\x92\xc4\x01\xc1" + b"\x00" * 64,
    pack([b"\xc1\xc1", b"\x00" * 64]),  # signed part is not msgpack
    pack([pack([1]) + b"trailing", b"\x00" * 64]),
    pack([b"\x00" * 64, b"\x00" * 64]) + b"trailing",
    pack([pack({1: 2}), b"\x00" * 64]),  # non-string map key
    b"\x91" * 5000,  # deep nesting
])
def test_decode_rejects_garbage_with_envelope_error_only(data: bytes) -> None:
    rejected(data)


def test_envelope_error_is_a_remote_protocol_error() -> None:
    assert issubclass(EnvelopeError, RemoteProtocolError)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
def test_decode_of_arbitrary_bytes_raises_only_envelope_error(data: bytes) -> None:
    try:
        env = decode_envelope(data)
    except EnvelopeError:
        return
    assert env.encode() == data or decode_envelope(env.encode()) == env


@settings(max_examples=400, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                     max_size=4),
       truncate=st.none() | st.integers(0, 10_000))
def test_mutated_envelopes_fail_decoding_or_verification(cuts: list[tuple[int, int]],
                                                         truncate: int | None) -> None:
    original = sample().encode()
    data = bytearray(original)
    for pos, byte in cuts:
        data[pos % len(data)] = byte
    if truncate is not None:
        del data[truncate % len(data):]
    try:
        env = decode_envelope(bytes(data))
    except EnvelopeError:
        return
    if bytes(data) != original:
        # Either not a valid signature any more, or exactly the original signed content.
        assert not env.verify_signature() or (env.signed == sample().signed)
