"""Cryptographic primitives. The only package that imports PyNaCl."""

from p2pchat.crypto.aead import DecryptionError, blake2b, open_sealed, seal
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
    "DecryptionError",
    "Domain",
    "PublicKey",
    "SecretKey",
    "blake2b",
    "generate_secret_key",
    "open_sealed",
    "public_key_from_bytes",
    "seal",
    "secret_key_from_seed",
    "sign",
    "verify",
]
