"""What nodes and bootstrap servers agree on besides the frames: server topics and
signed peer records (DESIGN §8; docs/protocol.md §12). Pure functions, no I/O.

A *server topic* is BLAKE2b-256 of the channel id under the personalisation
``p2pchat-server``: every member computes the same one, and a lookup names it
without naming the channel. (Envelope headers still carry the channel id in the
clear, so a server that stores envelopes sees which topic is which channel;
see docs/threat-model.md.)

A *peer record* is msgpack ``[1, topic, did, [[host, port], ...], expires_ms]``
signed by ``did`` in domain ``p2pchat/v1/peer-record``. A server stores it only
if ``did`` is the DID proven on the link that announced it, and it is checked
again by whoever looks it up, so a server cannot forge where someone is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import msgpack

from p2pchat.crypto import Domain, blake2b, verify
from p2pchat.errors import IdentityError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.identity.did import MAX_DID_LENGTH
from p2pchat.wire.frames import MAX_ADDRESSES, MAX_RECORD_BYTES, SERVER_TOPIC_SIZE, PeerRecord

RECORD_VERSION = 1
_TOPIC_PERSON = b"p2pchat-server"
#: Longest a peer record may live; servers clamp to their own (shorter) maximum.
MAX_RECORD_TTL_MS = 24 * 3600 * 1000
MAX_HOST_LENGTH = 253


class RecordError(ValueError):
    """A peer record that is malformed, expired, or not signed by its DID."""


def server_topic(channel: bytes) -> bytes:
    return blake2b(b"", key=channel, person=_TOPIC_PERSON, size=SERVER_TOPIC_SIZE)


@dataclass(frozen=True)
class PeerInfoRecord:
    topic: bytes
    did: str
    addresses: tuple[tuple[str, int], ...]
    expires_ms: int


def make_record(identity: Identity, topic: bytes, addresses: list[tuple[str, int]],
                expires_ms: int) -> PeerRecord:
    body = msgpack.packb([RECORD_VERSION, topic, identity.did,
                          [[h, p] for h, p in addresses[:MAX_ADDRESSES]], expires_ms],
                         use_bin_type=True)
    return PeerRecord(record=body, signature=identity.sign(Domain.PEER_RECORD, body))


def open_record(peer: PeerRecord, now_ms: int) -> PeerInfoRecord:
    """Check and decode a record; raises :class:`RecordError` with the reason."""
    if len(peer.record) > MAX_RECORD_BYTES:
        raise RecordError("record too large")
    try:
        fields = msgpack.unpackb(peer.record, raw=False, strict_map_key=True)
    except Exception:
        raise RecordError("record is not msgpack") from None
    if not isinstance(fields, list) or len(fields) != 5 or fields[0] != RECORD_VERSION:
        raise RecordError("unknown record version")
    _, topic, did, addresses, expires = fields
    if type(topic) is not bytes or len(topic) != SERVER_TOPIC_SIZE:
        raise RecordError("bad topic")
    if type(did) is not str or len(did) > MAX_DID_LENGTH:
        raise RecordError("bad DID")
    if type(expires) is not int or expires <= now_ms:
        raise RecordError("record expired")
    if not isinstance(addresses, list) or len(addresses) > MAX_ADDRESSES:
        raise RecordError("bad address list")
    parsed: list[tuple[str, int]] = []
    for entry in addresses:
        if not isinstance(entry, list) or len(entry) != 2:
            raise RecordError("bad address")
        host, port = entry
        if type(host) is not str or not 0 < len(host) <= MAX_HOST_LENGTH \
                or type(port) is not int or not 0 < port < 65536:
            raise RecordError("bad address")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise RecordError("addresses must be IP literals") from None
        parsed.append((host, port))
    try:
        key = public_key_from_did(did)
    except IdentityError:
        raise RecordError("bad DID") from None
    if not verify(key, Domain.PEER_RECORD, peer.record, peer.signature):
        raise RecordError("record signature does not verify")
    return PeerInfoRecord(topic, did, tuple(parsed), expires)
