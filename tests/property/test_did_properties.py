"""Property tests of did:key: round trip, and decoding is total (IdentityError only)."""

from __future__ import annotations

import base58
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.crypto import public_key_from_bytes
from p2pchat.errors import IdentityError
from p2pchat.identity import did_from_public_key, public_key_from_did

BASE58_ALPHABET = base58.alphabet.decode()


@settings(max_examples=300)
@given(raw=st.binary(min_size=32, max_size=32))
def test_round_trip(raw: bytes) -> None:
    did = did_from_public_key(public_key_from_bytes(raw))
    assert raw == public_key_from_did(did).raw
    assert did.startswith("did:key:z6Mk")
    assert 56 == len(did)


def assert_total(text: str) -> None:
    try:
        key = public_key_from_did(text)
    except IdentityError as exc:
        assert str(exc), "errors say what is wrong"
        return
    assert text == did_from_public_key(key), "only canonical DIDs are accepted"


@settings(max_examples=300)
@given(text=st.text(max_size=80))
def test_arbitrary_text_is_accepted_only_if_canonical(text: str) -> None:
    assert_total(text)


@settings(max_examples=300)
@given(body=st.text(alphabet=BASE58_ALPHABET + " \n0OIl", max_size=60),
       multibase=st.sampled_from(["z", "Z", "f", ""]))
def test_did_shaped_text_is_accepted_only_if_canonical(body: str, multibase: str) -> None:
    assert_total("did:key:" + multibase + body)


@settings(max_examples=300)
@given(prefix=st.binary(min_size=0, max_size=3), key=st.binary(min_size=0, max_size=40))
def test_encoded_bytes_decode_only_as_ed25519_keys(prefix: bytes, key: bytes) -> None:
    did = "did:key:z" + base58.b58encode(prefix + key).decode()
    try:
        decoded = public_key_from_did(did)
    except IdentityError:
        assert (prefix + key)[:2] != b"\xed\x01" or len(prefix + key) != 34
        return
    assert prefix + key == b"\xed\x01" + decoded.raw
