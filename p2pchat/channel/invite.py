"""Channel ids in text form and invite links.

``p2pchat://join/<channel-id>?i=<payload>`` where the channel id is base58 and the
payload is base64url(msgpack ``[signed, signature]``), ``signed`` being msgpack
``[version, channel, key, name, inviter, peers]`` with ``peers`` a list of
``[did, host, port]``. The inviter signs in domain ``p2pchat/v1/invite``, so a
tampered invite (other peers, other key) is refused. The key inside is the
channel's read/write capability: whoever holds the invite can join (the E2EE
issue replaces this with DID-signed group keys).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import base58
import msgpack

from p2pchat.crypto import Domain, verify
from p2pchat.errors import IdentityError, LocalError
from p2pchat.identity import Identity, public_key_from_did

INVITE_VERSION = 1
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
    key: bytes
    name: str
    inviter: str
    peers: tuple[tuple[str, str, int], ...]

    def to_uri(self, identity: Identity) -> str:
        signed = msgpack.packb([INVITE_VERSION, self.channel, self.key, self.name, self.inviter,
                                [list(p) for p in self.peers]], use_bin_type=True)
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
        version, chan, key, name, inviter, peers = msgpack.unpackb(signed, raw=False)
    except (ValueError, TypeError, binascii.Error, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError):
        raise InviteError("invite payload is malformed") from None
    if version != INVITE_VERSION:
        raise InviteError(f"unsupported invite version {version!r}")
    if chan != channel:
        raise InviteError("invite payload names another channel")
    if type(key) is not bytes or len(key) != 32 or type(name) is not str or len(name) > 100:
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
    return Invite(channel, key, name, inviter, tuple(out))
