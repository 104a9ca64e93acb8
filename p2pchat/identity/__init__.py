"""Node identity: Ed25519 keys shown as ``did:key`` strings."""

from p2pchat.identity.did import DID_PREFIX, did_from_public_key, public_key_from_did, short_did
from p2pchat.identity.identity import Identity

__all__ = ["DID_PREFIX", "Identity", "did_from_public_key", "public_key_from_did", "short_did"]
