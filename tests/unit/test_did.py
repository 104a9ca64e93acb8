"""did:key encoding and strict decoding (DESIGN §2)."""

from __future__ import annotations

import base58
import pytest

from p2pchat.crypto import public_key_from_bytes, secret_key_from_seed
from p2pchat.errors import IdentityError
from p2pchat.identity import DID_PREFIX, did_from_public_key, public_key_from_did, short_did
from p2pchat.identity.did import MAX_DID_LENGTH

# From the did:key method spec (w3c-ccg.github.io/did-method-key): this DID's
# publicKeyJwk has x = "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik".
SPEC_DID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
SPEC_KEY_HEX = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
# A secp256k1 did:key from the same spec (multicodec 0xe701).
SPEC_SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"

KEY = bytes(range(32))


def _did_for_raw(raw: bytes) -> str:
    return DID_PREFIX + "z" + base58.b58encode(raw).decode()


def test_spec_vector_decodes_to_its_key() -> None:
    assert SPEC_KEY_HEX == public_key_from_did(SPEC_DID).raw.hex()


def test_spec_vector_encodes_to_the_spec_did() -> None:
    assert SPEC_DID == did_from_public_key(public_key_from_bytes(bytes.fromhex(SPEC_KEY_HEX)))


def test_ed25519_dids_start_with_z6mk() -> None:
    key = secret_key_from_seed(b"\x01" * 32).public_key
    assert did_from_public_key(key).startswith("did:key:z6Mk")


@pytest.mark.parametrize("raw", [b"\x00" * 32, b"\xff" * 32, KEY])
def test_round_trip(raw: bytes) -> None:
    key = public_key_from_bytes(raw)
    assert key == public_key_from_did(did_from_public_key(key))


def test_longest_did_fits_the_limit() -> None:
    assert len(did_from_public_key(public_key_from_bytes(b"\xff" * 32))) <= MAX_DID_LENGTH


def _error(did: object) -> str:
    with pytest.raises(IdentityError) as info:
        public_key_from_did(did)  # type: ignore[arg-type]
    return str(info.value)


@pytest.mark.parametrize(
    "did",
    [
        SPEC_SECP256K1_DID,
        _did_for_raw(b"\xe7\x01\x02" + KEY),  # secp256k1, compressed point
        _did_for_raw(b"\x12\x00" + KEY),  # X25519 is 0xec01; 0x1200 is sr25519
        _did_for_raw(b"\xec\x01" + KEY),  # X25519: an encryption key, not a signing key
    ],
)
def test_rejects_other_multicodecs(did: str) -> None:
    message = _error(did)
    assert "not an Ed25519 key" in message
    assert "0xed01" in message


def test_secp256k1_message_names_its_multicodec() -> None:
    assert "0xe701" in _error(_did_for_raw(b"\xe7\x01\x02" + KEY))


@pytest.mark.parametrize("bad_char", ["0", "O", "I", "l", "+", "/", "-", "_", "é"])
def test_rejects_characters_outside_base58(bad_char: str) -> None:
    did = SPEC_DID[:20] + bad_char + SPEC_DID[21:]
    assert "invalid base58" in _error(did)


@pytest.mark.parametrize("length", [0, 1, 16, 31, 33])
def test_rejects_wrong_key_length(length: int) -> None:
    message = _error(_did_for_raw(b"\xed\x01" + b"\x07" * length))
    assert f"{length}-byte key" in message
    assert "want 32" in message


@pytest.mark.parametrize(
    "did",
    [
        "",
        "z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "did:web:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "DID:KEY:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        " did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "did:key",
    ],
)
def test_rejects_missing_prefix(did: str) -> None:
    assert "must start with 'did:key:'" in _error(did)


@pytest.mark.parametrize("multibase", ["", "Z", "f", "m", "u", "6"])
def test_rejects_other_multibase_encodings(multibase: str) -> None:
    body = SPEC_DID[len("did:key:z") :]
    assert "base58btc" in _error(DID_PREFIX + multibase + body)


def test_rejects_empty_key_material() -> None:
    assert "no key material" in _error("did:key:z")


@pytest.mark.parametrize("suffix", ["\n", " ", "\t", "\r", "\x0b"])
def test_rejects_trailing_whitespace_as_non_canonical(suffix: str) -> None:
    # base58 decoding ignores trailing whitespace; the DID must not.
    assert "canonical" in _error(SPEC_DID + suffix)


def test_rejects_leading_zero_bytes() -> None:
    # A leading "1" is a leading zero byte in base58: a different multicodec.
    did = DID_PREFIX + "z1" + SPEC_DID[len("did:key:z") :]
    assert "not an Ed25519 key" in _error(did)


def test_rejects_overlong_input_without_decoding_it() -> None:
    assert f"longer than {MAX_DID_LENGTH}" in _error(SPEC_DID + "1" * 10_000)


@pytest.mark.parametrize("value", [None, 5, b"did:key:z6Mk", ["did:key:z"]])
def test_rejects_non_strings(value: object) -> None:
    assert "must be a string" in _error(value)


def test_error_messages_quote_the_input() -> None:
    did = _did_for_raw(b"\xed\x01" + b"\x07" * 31)
    assert repr(did) in _error(did)


def test_short_did_keeps_both_ends() -> None:
    assert "z6MkiTBz1y…ooWp" == short_did(SPEC_DID)


def test_short_did_leaves_short_strings_alone() -> None:
    assert "abc" == short_did("did:key:abc")
