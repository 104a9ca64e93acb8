"""An identity in memory: the signing key, its DID, a display name and the device salt."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from p2pchat.crypto import Domain, PublicKey, SecretKey, sign, verify
from p2pchat.identity.did import did_from_public_key, public_key_from_did

DEVICE_SALT_SIZE = 16
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Identity:
    """A node's identity. Names are for display only and never confer authority."""

    secret_key: SecretKey = field(repr=False)
    device_salt: bytes = field(repr=False)
    name: str = ""

    @cached_property
    def public_key(self) -> PublicKey:
        return self.secret_key.public_key

    @cached_property
    def did(self) -> str:
        # cached: base58 encoding costs ~30 µs and the hot paths ask for it often
        return did_from_public_key(self.public_key)

    def sign(self, domain: Domain, message: bytes) -> bytes:
        return sign(self.secret_key, domain, message)


def verify_did_signature(did: str, domain: Domain, message: bytes, signature: bytes) -> bool:
    """Verify ``signature`` by the key that ``did`` names; False for a malformed DID."""
    from p2pchat.errors import IdentityError

    try:
        key = public_key_from_did(did)
    except IdentityError:
        return False
    return verify(key, domain, message, signature)
