"""``did:key`` encoding for Ed25519 public keys.

``did:key:z`` + base58btc(multicodec varint 0xed01 + 32-byte public key).
Decoding rejects anything else with an :class:`IdentityError` that says what is wrong.
"""

from __future__ import annotations

from functools import lru_cache

import base58

from p2pchat.crypto import PublicKey, public_key_from_bytes
from p2pchat.errors import IdentityError

DID_PREFIX = "did:key:"
_MULTIBASE_BASE58BTC = "z"
_ED25519_MULTICODEC = b"\xed\x01"
_KEY_SIZE = 32
# 34 bytes of base58 are at most 47 characters; anything longer is not a did:key of ours.
MAX_DID_LENGTH = len(DID_PREFIX) + 1 + 48


def did_from_public_key(key: PublicKey) -> str:
    encoded = base58.b58encode(_ED25519_MULTICODEC + key.raw).decode("ascii")
    return f"{DID_PREFIX}{_MULTIBASE_BASE58BTC}{encoded}"


#: Parsed DIDs kept: a node sees the same few DIDs on every envelope it verifies.
DID_CACHE_SIZE = 4096


def public_key_from_did(did: str) -> PublicKey:
    """Parse a ``did:key`` string; raises :class:`IdentityError` with the reason."""
    if not isinstance(did, str):
        raise IdentityError("a DID must be a string")
    return _parse_cached(did)


@lru_cache(maxsize=DID_CACHE_SIZE)
def _parse_cached(did: str) -> PublicKey:
    return _parse(did)


def _parse(did: str) -> PublicKey:
    if not isinstance(did, str):
        raise IdentityError("a DID must be a string")
    if len(did) > MAX_DID_LENGTH:
        raise IdentityError(f"not a did:key: longer than {MAX_DID_LENGTH} characters")
    if not did.startswith(DID_PREFIX):
        raise IdentityError(f"not a did:key (must start with {DID_PREFIX!r}): {did!r}")
    body = did[len(DID_PREFIX) :]
    if not body.startswith(_MULTIBASE_BASE58BTC):
        raise IdentityError(f"did:key must use base58btc multibase ('z'): {did!r}")
    try:
        raw = base58.b58decode(body[1:].encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise IdentityError(f"did:key has invalid base58: {did!r}") from exc
    if not body[1:]:
        raise IdentityError(f"did:key has no key material: {did!r}")
    if raw[:2] != _ED25519_MULTICODEC:
        raise IdentityError(
            f"did:key is not an Ed25519 key (multicodec 0x{raw[:2].hex()}, want 0xed01): {did!r}"
        )
    key = raw[2:]
    if len(key) != _KEY_SIZE:
        raise IdentityError(f"did:key has a {len(key)}-byte key, want {_KEY_SIZE}: {did!r}")
    if did_from_public_key(public_key_from_bytes(key)) != did:
        # base58 admits leading-zero variants; accept only the canonical spelling.
        raise IdentityError(f"did:key is not in canonical form: {did!r}")
    return public_key_from_bytes(key)


def short_did(did: str) -> str:
    """A display form for logs: the first and last characters of the key part."""
    body = did[len(DID_PREFIX) :] if did.startswith(DID_PREFIX) else did
    return f"{body[:10]}…{body[-4:]}" if len(body) > 16 else body
