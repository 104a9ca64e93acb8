"""Channel ids in text form and invite links.

``p2pchat://join/<channel-id>?i=<payload>`` where the channel id is base58 and the
payload is base64url(msgpack ``[signed, signature]``), ``signed`` being msgpack
``[version, channel, cap, name, inviter, peers, grant, grant signature, genesis]`` with
``peers`` a list of ``[did, host, port]``. The inviter signs in domain
``p2pchat/v1/invite``, so a tampered invite (other peers, other capability) is refused.

An invite carries a **capability, not a key** (DESIGN §5). ``cap`` is the 32-byte seed
of a one-off Ed25519 key; the *grant* is the inviter's signature (domain
``p2pchat/v1/join``) over ``[tag, channel, cap public key, inviter, expires_ms]``. To
join, the invitee writes a ``join`` operation into the channel carrying the grant and a
*proof*: the capability key's signature over ``[tag, channel, invitee DID]``, so a
server or peer that sees the join cannot reuse it for another identity. A member who
may admit checks both and answers with a history share sealed to the invitee's prekey.
``genesis`` is the channel's genesis envelope (public, in the clear epoch), so the
invitee can author its join before it has synced anything.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import base58
import msgpack

from p2pchat.crypto import Domain, public_key_from_bytes, secret_key_from_seed, verify
from p2pchat.errors import IdentityError, LocalError
from p2pchat.identity import Identity, public_key_from_did

INVITE_VERSION = 2
#: An invite's capability is good for this long (the grant carries the expiry).
INVITE_TTL_MS = 30 * 24 * 3600 * 1000
_GRANT_TAG = b"p2pchat/v1/grant"
_PROOF_TAG = b"p2pchat/v1/join-proof"
MAX_GRANT_SIZE = 512
SCHEME = "p2pchat"
MAX_INVITE_LENGTH = 8192
MAX_INVITE_PEERS = 16
CHANNEL_ID_SIZE = 32


class InviteError(LocalError):
    """An invite link or channel id is malformed or not authentic."""


def format_channel_id(channel_id: bytes) -> str:
    return base58.b58encode(channel_id).decode("ascii")


def parse_channel_id(text: str) -> bytes:
    try:
        raw = base58.b58decode(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise InviteError(f"not a channel id: {text!r}") from None
    if len(raw) != CHANNEL_ID_SIZE or format_channel_id(raw) != text.strip():
        raise InviteError(f"not a channel id: {text!r}")
    return raw


@dataclass(frozen=True)
class Invite:
    channel: bytes
    cap: bytes  # seed of the one-off capability key
    name: str
    inviter: str
    peers: tuple[tuple[str, str, int], ...]
    grant: bytes = b""
    grant_signature: bytes = b""
    genesis: bytes = b""

    def to_uri(self, identity: Identity) -> str:
        signed = msgpack.packb([INVITE_VERSION, self.channel, self.cap, self.name, self.inviter,
                                [list(p) for p in self.peers], self.grant,
                                self.grant_signature, self.genesis], use_bin_type=True)
        sig = identity.sign(Domain.INVITE, signed)
        payload = base64.urlsafe_b64encode(msgpack.packb([signed, sig], use_bin_type=True))
        return f"{SCHEME}://join/{format_channel_id(self.channel)}?i={payload.decode().rstrip('=')}"


def parse_invite(uri: str) -> Invite:
    uri = uri.strip()
    if len(uri) > MAX_INVITE_LENGTH:
        raise InviteError("invite is too long")
    parts = urlsplit(uri)
    if parts.scheme != SCHEME or parts.netloc != "join":
        raise InviteError("not a p2pchat invite (expected p2pchat://join/…)")
    channel = parse_channel_id(parts.path.lstrip("/"))
    query = parse_qs(parts.query)
    if len(query.get("i", [])) != 1:
        raise InviteError("invite has no payload")
    text = query["i"][0]
    try:
        outer = msgpack.unpackb(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)),
                                raw=False)
        signed, sig = outer
        version, chan, key, name, inviter, peers, grant, grant_sig, genesis = \
            msgpack.unpackb(signed, raw=False)
    except (ValueError, TypeError, binascii.Error, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError):
        raise InviteError("invite payload is malformed") from None
    if version != INVITE_VERSION:
        raise InviteError(f"unsupported invite version {version!r}")
    if chan != channel:
        raise InviteError("invite payload names another channel")
    if type(key) is not bytes or len(key) != 32 or type(name) is not str or len(name) > 100 \
            or type(grant) is not bytes or type(grant_sig) is not bytes \
            or type(genesis) is not bytes:
        raise InviteError("invite payload is malformed")
    try:
        if type(inviter) is not str or type(sig) is not bytes or not verify(
                public_key_from_did(inviter), Domain.INVITE, signed, sig):
            raise InviteError("invite signature does not verify")
    except IdentityError:
        raise InviteError("invite names an invalid inviter") from None
    if not isinstance(peers, list) or len(peers) > MAX_INVITE_PEERS:
        raise InviteError("invite has too many peers")
    out = []
    for p in peers:
        if not (isinstance(p, list) and len(p) == 3 and type(p[0]) is str and
                type(p[1]) is str and type(p[2]) is int and 0 < p[2] < 65536 and
                0 < len(p[1]) <= 255):
            raise InviteError("invite peer entry is malformed")
        try:
            public_key_from_did(p[0])
        except IdentityError:
            raise InviteError("invite peer has an invalid DID") from None
        out.append((p[0], p[1], p[2]))
    try:
        check_grant(channel, grant, grant_sig)
    except ValueError as exc:
        raise InviteError(f"invite capability is invalid: {exc}") from None
    return Invite(channel, key, name, inviter, tuple(out), grant, grant_sig, genesis)


# --- capabilities ---------------------------------------------------------------------


def make_grant(inviter: Identity, channel: bytes, cap_seed: bytes, expires_ms: int
               ) -> tuple[bytes, bytes]:
    """The inviter's signed grant for capability key ``cap_seed``: (grant, signature)."""
    cap_public = secret_key_from_seed(cap_seed).public_key.raw
    grant: bytes = msgpack.packb([_GRANT_TAG, channel, cap_public, inviter.did, expires_ms],
                                 use_bin_type=True)
    return grant, inviter.sign(Domain.JOIN, grant)


def check_grant(channel: bytes, grant: bytes, signature: bytes) -> tuple[str, bytes, int]:
    """(inviter, capability public key, expires_ms) of a grant; ValueError if bad."""
    if len(grant) > MAX_GRANT_SIZE:
        raise ValueError("grant too large")
    try:
        tag, chan, cap_public, inviter, expires = msgpack.unpackb(grant, raw=False)
    except Exception:
        raise ValueError("malformed grant") from None
    if tag != _GRANT_TAG or chan != channel or type(cap_public) is not bytes \
            or len(cap_public) != 32 or type(inviter) is not str or type(expires) is not int:
        raise ValueError("malformed grant")
    try:
        if not verify(public_key_from_did(inviter), Domain.JOIN, grant, signature):
            raise ValueError("grant signature does not verify")
    except IdentityError:
        raise ValueError("grant names an invalid inviter") from None
    return inviter, cap_public, expires


def make_proof(cap_seed: bytes, channel: bytes, joiner: str) -> bytes:
    """The capability key's signature binding this join to the joiner's DID."""
    from p2pchat.crypto import sign

    message = msgpack.packb([_PROOF_TAG, channel, joiner], use_bin_type=True)
    return sign(secret_key_from_seed(cap_seed), Domain.JOIN, message)


def check_proof(cap_public: bytes, channel: bytes, joiner: str, proof: bytes) -> bool:
    message = msgpack.packb([_PROOF_TAG, channel, joiner], use_bin_type=True)
    try:
        return verify(public_key_from_bytes(cap_public), Domain.JOIN, message, proof)
    except Exception:
        return False
