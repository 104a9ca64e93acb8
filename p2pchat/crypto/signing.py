"""Ed25519 signatures with explicit domain separation (DESIGN §2).

Every signature covers ``b"p2pchat/v1/" + domain + b"\\x00" + message``. A
signature made for one domain therefore never verifies in another, so no signed
object can be replayed as a different kind of object.
"""

from __future__ import annotations

from enum import Enum

import nacl.exceptions
import nacl.signing

from p2pchat.errors import IdentityError

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
_PREFIX = b"p2pchat/v1/"


class Domain(Enum):
    """What a signature is for. Add a member for every new kind of signed object."""

    LINK = "link"
    ENVELOPE = "envelope"
    BUNDLE = "bundle"
    INVITE = "invite"
    PREKEY = "prekey"
    PEER_RECORD = "peer-record"
    SHARE = "share"
    JOIN = "join"
    RELAY = "relay"


def _signed_bytes(domain: Domain, message: bytes) -> bytes:
    return _PREFIX + domain.value.encode() + b"\x00" + message


class PublicKey:
    """An Ed25519 verify key."""

    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != PUBLIC_KEY_SIZE:
            raise IdentityError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, got {len(raw)}")
        self._key = nacl.signing.VerifyKey(raw)

    @property
    def raw(self) -> bytes:
        return bytes(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()[:16]}…)"


class SecretKey:
    """An Ed25519 signing key. ``repr`` never shows the secret."""

    __slots__ = ("_key",)

    def __init__(self, key: nacl.signing.SigningKey) -> None:
        self._key = key

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Only the keystore should ever read this."""
        return bytes(self._key)

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(bytes(self._key.verify_key))

    def __repr__(self) -> str:
        return "SecretKey(<hidden>)"


def generate_secret_key() -> SecretKey:
    """A fresh key from the operating system's CSPRNG (libsodium)."""
    return SecretKey(nacl.signing.SigningKey.generate())


def secret_key_from_seed(seed: bytes) -> SecretKey:
    if len(seed) != SEED_SIZE:
        raise IdentityError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
    return SecretKey(nacl.signing.SigningKey(seed))


def public_key_from_bytes(raw: bytes) -> PublicKey:
    return PublicKey(raw)


def sign(key: SecretKey, domain: Domain, message: bytes) -> bytes:
    """Sign ``message`` for ``domain``; returns the 64-byte detached signature."""
    return bytes(key._key.sign(_signed_bytes(domain, message)).signature)


def verify(key: PublicKey, domain: Domain, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``key``'s signature of ``message`` for ``domain``."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    try:
        key._key.verify(_signed_bytes(domain, message), signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True
