"""Ed25519 signatures with domain separation (DESIGN §2)."""

from __future__ import annotations

import itertools

import nacl.signing
import pytest

from p2pchat.crypto import (
    Domain,
    PublicKey,
    generate_secret_key,
    public_key_from_bytes,
    secret_key_from_seed,
    sign,
    verify,
)
from p2pchat.errors import IdentityError
from p2pchat.identity import Identity
from p2pchat.identity.identity import verify_did_signature

# RFC 8032 §7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

KEY = secret_key_from_seed(b"\x42" * 32)
MESSAGE = b"hello, domain-separated world"


def test_seed_gives_the_rfc8032_public_key() -> None:
    assert RFC8032_PUBLIC == secret_key_from_seed(RFC8032_SEED).public_key.raw


@pytest.mark.parametrize("domain", list(Domain))
def test_signature_verifies_in_its_own_domain(domain: Domain) -> None:
    assert verify(KEY.public_key, domain, MESSAGE, sign(KEY, domain, MESSAGE))


@pytest.mark.parametrize(
    ("signed_for", "checked_for"), list(itertools.permutations(Domain, 2)),
    ids=lambda d: d.value,
)
def test_signature_does_not_verify_in_another_domain(
    signed_for: Domain, checked_for: Domain
) -> None:
    signature = sign(KEY, signed_for, MESSAGE)
    assert not verify(KEY.public_key, checked_for, MESSAGE, signature)


def test_link_signature_is_not_an_envelope_signature() -> None:
    signature = sign(KEY, Domain.LINK, MESSAGE)
    assert not verify(KEY.public_key, Domain.ENVELOPE, MESSAGE, signature)


def test_signed_bytes_carry_the_documented_prefix() -> None:
    # Other implementations must sign exactly b"p2pchat/v1/<domain>\0<message>".
    signature = sign(KEY, Domain.ENVELOPE, MESSAGE)
    signed = b"p2pchat/v1/envelope\x00" + MESSAGE
    nacl.signing.VerifyKey(KEY.public_key.raw).verify(signed, signature)


def test_plain_signature_without_domain_does_not_verify() -> None:
    raw = nacl.signing.SigningKey(KEY.seed).sign(MESSAGE).signature
    assert not any(verify(KEY.public_key, d, MESSAGE, raw) for d in Domain)


def test_domain_values_are_unique() -> None:
    values = [d.value for d in Domain]
    assert sorted(set(values)) == sorted(values)


@pytest.mark.parametrize("index", [0, 1, len(MESSAGE) // 2, len(MESSAGE) - 1])
def test_tampered_message_fails(index: int) -> None:
    signature = sign(KEY, Domain.LINK, MESSAGE)
    tampered = bytearray(MESSAGE)
    tampered[index] ^= 0x01
    assert not verify(KEY.public_key, Domain.LINK, bytes(tampered), signature)


@pytest.mark.parametrize("other", [MESSAGE[:-1], MESSAGE + b"\x00", b"", MESSAGE * 2])
def test_extended_or_truncated_message_fails(other: bytes) -> None:
    signature = sign(KEY, Domain.LINK, MESSAGE)
    assert not verify(KEY.public_key, Domain.LINK, other, signature)


@pytest.mark.parametrize("index", [0, 31, 32, 63])
def test_tampered_signature_fails(index: int) -> None:
    signature = bytearray(sign(KEY, Domain.LINK, MESSAGE))
    signature[index] ^= 0x80
    assert not verify(KEY.public_key, Domain.LINK, MESSAGE, bytes(signature))


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_wrong_length_signature_returns_false(length: int) -> None:
    signature = (sign(KEY, Domain.LINK, MESSAGE) * 2)[:length]
    assert verify(KEY.public_key, Domain.LINK, MESSAGE, signature) is False


def test_all_zero_signature_returns_false() -> None:
    assert verify(KEY.public_key, Domain.LINK, MESSAGE, bytes(64)) is False


def test_other_key_fails() -> None:
    other = secret_key_from_seed(b"\x43" * 32)
    assert not verify(other.public_key, Domain.LINK, MESSAGE, sign(KEY, Domain.LINK, MESSAGE))


def test_signatures_are_deterministic_and_64_bytes() -> None:
    first, second = sign(KEY, Domain.INVITE, MESSAGE), sign(KEY, Domain.INVITE, MESSAGE)
    assert first == second
    assert 64 == len(first)


def test_generated_keys_differ() -> None:
    assert generate_secret_key().seed != generate_secret_key().seed


def test_secret_key_repr_hides_the_secret() -> None:
    for text in (repr(KEY), str(KEY), f"{KEY}", f"{KEY!r}", repr([KEY])):
        assert "SecretKey(<hidden>)" in text
        assert KEY.seed.hex() not in text
        assert repr(KEY.seed) not in text


def test_identity_repr_hides_the_secret_and_salt() -> None:
    identity = Identity(KEY, b"\x99" * 16, "alice")
    text = repr(identity)
    assert KEY.seed.hex() not in text
    assert "SecretKey" not in text
    assert (b"\x99" * 16).hex() not in text
    assert "alice" in text


def test_public_key_equality_and_hash() -> None:
    a, b = public_key_from_bytes(RFC8032_PUBLIC), public_key_from_bytes(RFC8032_PUBLIC)
    assert a == b
    assert hash(a) == hash(b)
    assert a != KEY.public_key
    assert a != RFC8032_PUBLIC


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_public_key_of_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(IdentityError, match=f"got {length}"):
        PublicKey(b"\x01" * length)


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_seed_of_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(IdentityError, match=f"got {length}"):
        secret_key_from_seed(b"\x01" * length)


def test_did_signature_helper() -> None:
    identity = Identity(KEY, b"\x00" * 16)
    signature = identity.sign(Domain.PREKEY, MESSAGE)
    assert verify_did_signature(identity.did, Domain.PREKEY, MESSAGE, signature)
    assert not verify_did_signature(identity.did, Domain.BUNDLE, MESSAGE, signature)
    assert not verify_did_signature("did:key:nonsense", Domain.PREKEY, MESSAGE, signature)


def test_blake2b_matches_libsodium() -> None:
    """Our BLAKE2b (hashlib) is the same function as libsodium's keyed, personalised one."""
    import nacl.encoding
    import nacl.hash

    from p2pchat.crypto import blake2b

    for size, key, data in ((32, b"", b"abc"), (16, b"k" * 32, b"x" * 300), (8, b"k", b"")):
        expected = nacl.hash.blake2b(data, digest_size=size, key=key,
                                     person=b"p2pchat-env".ljust(16, b"\0"),
                                     encoder=nacl.encoding.RawEncoder)
        assert expected == blake2b(data, person=b"p2pchat-env", key=key, size=size)
