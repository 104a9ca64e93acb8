"""Cryptographic primitives. The only package that imports PyNaCl."""

from p2pchat.crypto.signing import (
    Domain,
    PublicKey,
    SecretKey,
    generate_secret_key,
    public_key_from_bytes,
    secret_key_from_seed,
    sign,
    verify,
)

__all__ = [
    "Domain",
    "PublicKey",
    "SecretKey",
    "generate_secret_key",
    "public_key_from_bytes",
    "secret_key_from_seed",
    "sign",
    "verify",
]
