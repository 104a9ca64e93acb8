"""Envelopes (DESIGN §3), wire v2: form, id, topic binding, signature, AEAD binding, the
implicit previous envelope and elided epoch, and strict decoding."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.bootstrap_proto import server_topic
from p2pchat.channel.envelope import (
    ENVELOPE_VERSION,
    MAX_ENVELOPE_DEPS,
    MAX_ENVELOPE_SIZE,
    Envelope,
    EnvelopeError,
    actor_id,
    associated_data,
    channel_topic,
    decode_envelope,
    envelope_id,
    envelope_id_of,
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
TOPIC = channel_topic(CHANNEL)
EPOCH = RNG.randbytes(32)
NONCE = RNG.randbytes(24)
DEPS = tuple(sorted(RNG.randbytes(32) for _ in range(3)))
PREV = RNG.randbytes(32)  # the device's envelope 6, implicit in envelope 7
PLAINTEXT = b"an operation and its automerge change"


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def sample(**overrides: Any) -> Envelope:
    args: dict[str, Any] = dict(channel=CHANNEL, seq=7, deps=DEPS, epoch=EPOCH, key=KEY,
                                nonce=NONCE, plaintext=PLAINTEXT, prev=PREV,
                                prev_epoch=RNG.randbytes(32))
    args.update(overrides)
    return seal_envelope(ALICE, **args)


def fields(env: Envelope) -> list[Any]:
    """The signed list of ``env``, for building variants by hand."""
    return [ENVELOPE_VERSION, env.author_key, env.device, env.seq, list(env.wire_deps),
            env.wire_epoch, env.nonce, env.ciphertext]


def forge(signed_fields: list[Any], signer: Identity = ALICE, topic: bytes = TOPIC) -> bytes:
    """Encode an envelope from an arbitrary signed list, correctly signed by ``signer``."""
    signed = pack(signed_fields)
    return signed + signer.sign(Domain.ENVELOPE, topic + signed)


def variant(index: int, value: Any) -> bytes:
    values = fields(sample())
    values[index] = value
    return forge(values)


def rejected(data: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        decode_envelope(data, TOPIC)
    return str(info.value)


# --- the good path -------------------------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    env = sample()
    decoded = decode_envelope(env.encode(), TOPIC)
    assert (TOPIC, ALICE.did, ALICE.public_key.raw, ALICE.device_salt, 7, DEPS, EPOCH,
            NONCE) == (decoded.topic, decoded.author, decoded.author_key, decoded.device,
                       decoded.seq, decoded.wire_deps, decoded.wire_epoch, decoded.nonce)
    assert (env.signed, env.signature, env.id) == (decoded.signed, decoded.signature,
                                                   decoded.id)
    assert env.encode() == decoded.encode()
    # decoded, it is unresolved: the previous envelope comes from the replica
    assert (False, DEPS) == (decoded.resolved, decoded.deps)
    assert env == decoded.resolve(PREV, b"\x09" * 32)


def test_wire_form_is_signed_bytes_then_the_signature() -> None:
    env = sample()
    assert env.signed + env.signature == env.encode()
    assert 64 == len(env.signature)
    assert fields(env) == msgpack.unpackb(env.signed, raw=False)


def test_the_previous_envelope_and_a_repeated_epoch_stay_off_the_wire() -> None:
    env = sample(prev_epoch=EPOCH, deps=(*DEPS, PREV))
    assert (DEPS, None) == (env.wire_deps, env.wire_epoch)
    assert (tuple(sorted((*DEPS, PREV))), EPOCH, PREV) == (env.deps, env.epoch, env.prev)
    decoded = decode_envelope(env.encode(), TOPIC)
    assert (b"", DEPS) == (decoded.epoch, decoded.deps)
    resolved = decoded.resolve(PREV, EPOCH)
    assert (env.deps, EPOCH) == (resolved.deps, resolved.epoch)
    assert PLAINTEXT == resolved.decrypt(KEY, CHANNEL)
    # a new epoch is named; so is every epoch of a device's first envelope
    assert EPOCH == sample(prev_epoch=b"\x01" * 32).wire_epoch
    first = sample(seq=1, prev=b"", prev_epoch=b"")
    assert (EPOCH, DEPS) == (first.wire_epoch, first.wire_deps)


def test_seal_needs_the_previous_envelope_exactly_after_the_first() -> None:
    with pytest.raises(ValueError):
        sample(prev=b"")
    with pytest.raises(ValueError):
        sample(seq=1)


def test_id_is_personalised_blake2b_256_of_topic_and_signed_bytes() -> None:
    env = sample()
    expected = hashlib.blake2b(TOPIC + env.signed, digest_size=32,
                               person=b"p2pchat-env").digest()
    assert expected == env.id
    assert expected == envelope_id(TOPIC, env.signed)
    assert expected == envelope_id_of(env.encode(), TOPIC)
    assert expected == decode_envelope(env.encode(), TOPIC).id


def test_topic_is_the_bootstrap_server_topic() -> None:
    assert server_topic(CHANNEL) == TOPIC


def test_id_does_not_depend_on_the_signature_bytes_but_changes_with_any_signed_field() -> None:
    env = sample()
    assert sample(nonce=RNG.randbytes(24)).id != env.id
    assert sample(seq=8).id != env.id
    assert sample(deps=()).id != env.id
    assert sample(channel=RNG.randbytes(32)).id != env.id


def test_signature_is_ed25519_over_topic_and_signed_bytes_in_the_envelope_domain() -> None:
    env = sample()
    assert verify(ALICE.public_key, Domain.ENVELOPE, TOPIC + env.signed, env.signature)
    assert not verify(ALICE.public_key, Domain.ENVELOPE, env.signed, env.signature)
    assert not verify(ALICE.public_key, Domain.LINK, TOPIC + env.signed, env.signature)
    assert env.verify_signature()


def test_an_envelope_presented_under_another_topic_does_not_verify() -> None:
    env = sample()
    other = decode_envelope(env.encode(), channel_topic(RNG.randbytes(32)))
    assert other.id != env.id
    assert not other.verify_signature()


def test_ciphertext_is_xchacha_under_the_epoch_key_with_the_header_as_aad() -> None:
    env = sample()
    aad = pack([ENVELOPE_VERSION, CHANNEL, ALICE.public_key.raw, ALICE.device_salt, 7,
                list(DEPS), EPOCH])
    assert aad == associated_data(CHANNEL, ALICE.public_key.raw, ALICE.device_salt, 7, DEPS,
                                  EPOCH)
    assert PLAINTEXT == open_sealed(KEY, NONCE, env.ciphertext, aad)
    assert PLAINTEXT == env.decrypt(KEY, CHANNEL)
    assert PLAINTEXT == decode_envelope(env.encode(), TOPIC).decrypt(KEY, CHANNEL)


def test_decrypt_with_the_wrong_key_or_channel_fails() -> None:
    with pytest.raises(DecryptionError):
        sample().decrypt(RNG.randbytes(32), CHANNEL)
    with pytest.raises(DecryptionError):
        sample().decrypt(KEY, RNG.randbytes(32))


@pytest.mark.parametrize("index,value", [
    (3, 8),  # seq
    (5, b"\x01" * 32),  # epoch
    (5, None),  # epoch elided
    (4, []),  # deps
])
def test_ciphertext_moved_under_another_signed_header_does_not_decrypt(index: int,
                                                                      value: Any) -> None:
    env = decode_envelope(variant(index, value), TOPIC)
    assert env.verify_signature()
    with pytest.raises(DecryptionError):
        env.decrypt(KEY, CHANNEL)


def test_seal_sorts_and_deduplicates_deps() -> None:
    a, b, c = DEPS
    env = sample(deps=(c, a, b, a))
    assert (a, b, c) == env.wire_deps
    assert tuple(sorted((a, b, c, PREV))) == env.deps


def test_seal_refuses_too_many_deps_and_oversized_envelopes() -> None:
    deps = tuple(RNG.randbytes(32) for _ in range(MAX_ENVELOPE_DEPS + 1))
    with pytest.raises(ValueError):
        sample(deps=deps)
    sample(deps=deps[:MAX_ENVELOPE_DEPS])  # the limit itself is fine
    sample(deps=(*deps[:MAX_ENVELOPE_DEPS], PREV))  # the implicit one does not count
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
    forged = decode_envelope(env.signed + MALLORY.sign(Domain.ENVELOPE, TOPIC + env.signed),
                             TOPIC)
    assert env.id == forged.id
    assert not forged.verify_signature()


@pytest.mark.parametrize("bit", [0, 7, 100, 511])
def test_flipped_signature_bit_does_not_verify(bit: int) -> None:
    env = sample()
    sig = bytearray(env.signature)
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not decode_envelope(env.signed + bytes(sig), TOPIC).verify_signature()


def test_another_authors_key_in_the_header_never_verifies() -> None:
    env = decode_envelope(variant(1, MALLORY.public_key.raw), TOPIC)
    assert MALLORY.did == env.author
    assert not env.verify_signature()


# --- strict decoding -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 3, -1, 2**32, "2", 2.0, True, None, b"\x02"])
def test_decode_rejects_wrong_version(version: Any) -> None:
    assert "version" in rejected(variant(0, version))


@pytest.mark.parametrize("index,value,what", [
    (2, b"\x00" * 15, "device"), (2, b"\x00" * 17, "device"), (2, None, "device"),
    (5, b"\x00" * 31, "epoch"), (5, b"\x00" * 33, "epoch"), (5, "e" * 32, "epoch"),
    (6, b"\x00" * 23, "nonce"), (6, b"\x00" * 25, "nonce"),
    (7, "text", "ciphertext"), (7, 5, "ciphertext"),
    (4, [b"\x00" * 31], "dependency"), (4, [b"\x00" * 33], "dependency"), (4, ["x" * 32],
                                                                          "dependency"),
])
def test_decode_rejects_wrong_field_sizes_and_types(index: int, value: Any, what: str) -> None:
    assert what in rejected(variant(index, value))


@pytest.mark.parametrize("seq", [0, -1, 2**63, True, "1", 1.5, None])
def test_decode_rejects_bad_seq(seq: Any) -> None:
    assert "seq" in rejected(variant(3, seq))


def test_decode_rejects_an_elided_epoch_on_a_devices_first_envelope() -> None:
    values = fields(sample(seq=1, prev=b"", prev_epoch=b""))
    values[5] = None
    assert "first envelope" in rejected(forge(values))


@pytest.mark.parametrize("author", [5, b"\x01" * 31, b"\x01" * 33, None, ALICE.did])
def test_decode_rejects_bad_author(author: Any) -> None:
    assert "author" in rejected(variant(1, author))


@pytest.mark.parametrize("size", [0, 1, 63, 64])
def test_decode_rejects_envelopes_too_short_for_a_signature(size: int) -> None:
    assert "short" in rejected(b"\x01" * size)


@pytest.mark.parametrize("cut", [1, 10])
def test_a_signature_cut_short_leaves_no_valid_envelope(cut: int) -> None:
    env = sample()
    data = env.encode()[:-cut]
    with pytest.raises(EnvelopeError):
        decode_envelope(data, TOPIC)


def test_decode_rejects_unsorted_or_duplicate_deps() -> None:
    a, b, _ = DEPS
    assert "sorted" in rejected(variant(4, [b, a]))
    assert "sorted" in rejected(variant(4, [a, a]))
    assert "sorted" in rejected(variant(4, [a, b, b]))


def test_decode_accepts_max_deps_and_rejects_one_more() -> None:
    deps = sorted(RNG.randbytes(32) for _ in range(MAX_ENVELOPE_DEPS + 1))
    assert tuple(deps[:-1]) == decode_envelope(variant(4, deps[:-1]), TOPIC).wire_deps
    assert "deps" in rejected(variant(4, deps))
    assert "deps" in rejected(variant(4, {"a": 1}))


def test_decode_rejects_oversized_envelope() -> None:
    big = sample(plaintext=b"x" * (MAX_ENVELOPE_SIZE - 1000))
    assert big.id == decode_envelope(big.encode(), TOPIC).id
    padded = forge([*fields(big)[:7], big.ciphertext + b"\x00" * 2000])
    assert len(padded) > MAX_ENVELOPE_SIZE
    assert "exceeds" in rejected(padded)
    assert "exceeds" in rejected(b"\x00" * (MAX_ENVELOPE_SIZE + 1))


@pytest.mark.parametrize("inner", [
    [], [1, 2, 3], "text", {"version": 2}, b"just bytes", None,
    [ENVELOPE_VERSION, ALICE.public_key.raw, ALICE.device_salt, 7, [], EPOCH, NONCE],
    [ENVELOPE_VERSION, ALICE.public_key.raw, ALICE.device_salt, 7, [], EPOCH, NONCE, b"c",
     b"x"],
])
def test_decode_rejects_wrong_inner_shape(inner: Any) -> None:
    assert "shape" in rejected(forge(inner))


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x92", b"\x92\xc4\x05abc", b"\xff" * 10, b"\xc1" + b"\x00" * 64,
    b"\xc1\xc1" + b"\x00" * 64,  # signed part is not msgpack
    pack([1]) + b"trailing" + b"\x00" * 64,
    pack({1: 2}) + b"\x00" * 64,  # non-string map key
    pack([1] * 8) + b"\x00" * 64,
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
        env = decode_envelope(data, TOPIC)
    except EnvelopeError:
        return
    assert env.encode() == data


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
        env = decode_envelope(bytes(data), TOPIC)
    except EnvelopeError:
        return
    if bytes(data) != original:
        # Either not a valid signature any more, or exactly the original signed content.
        assert not env.verify_signature() or (env.signed == sample().signed)
