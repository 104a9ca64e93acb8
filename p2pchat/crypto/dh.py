"""X25519 key agreement (libsodium), and Ed25519 -> X25519 key conversion."""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings as sodium

from p2pchat.errors import RemoteProtocolError

X25519_SIZE = 32


class KeyAgreementError(RemoteProtocolError):
    """A peer's X25519 public key is malformed or of small order."""


def x25519_keypair(randbytes: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """(private, public) from 32 random bytes (libsodium clamps the scalar)."""
    private = randbytes(X25519_SIZE)
    return private, bytes(sodium.crypto_scalarmult_base(private))


def x25519_public(private: bytes) -> bytes:
    return bytes(sodium.crypto_scalarmult_base(private))


def x25519(private: bytes, public: bytes) -> bytes:
    """The shared secret; refuses small-order points (libsodium returns an error for an
    all-zero result), so a malicious key cannot force a known secret."""
    if len(private) != X25519_SIZE or len(public) != X25519_SIZE:
        raise KeyAgreementError("X25519 keys are 32 bytes")
    try:
        shared = bytes(sodium.crypto_scalarmult(private, public))
    except RuntimeError:
        raise KeyAgreementError("X25519 public key of small order") from None
    if shared == bytes(X25519_SIZE):
        raise KeyAgreementError("X25519 public key of small order")
    return shared


def ed25519_public_to_x25519(public: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public))
    except RuntimeError:
        raise KeyAgreementError("Ed25519 key has no X25519 equivalent") from None


def ed25519_seed_to_x25519(seed: bytes) -> bytes:
    _, secret = sodium.crypto_sign_seed_keypair(seed)
    return bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(secret))
