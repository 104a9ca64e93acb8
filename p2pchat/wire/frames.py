"""Frame types: frozen dataclasses, one wire tag each.

Every field declares its limits in ``metadata`` (see :func:`limits`); the codec
validates decoded maps against them strictly: exactly the declared keys, the
declared types (``bool`` is not an ``int``), lengths and ranges. Adding a frame
type is adding a class here with the :func:`frame` decorator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from p2pchat.identity.did import MAX_DID_LENGTH

U64_MAX = 2**64 - 1
NONCE_SIZE = 32
MAX_NAME_LENGTH = 64
MAX_AGENT_LENGTH = 64


def limits(
    *, min_len: int = 0, max_len: int | None = None, lo: int = 0, hi: int = U64_MAX,
    printable: bool = False, max_items: int = 0,
) -> Any:
    """Field metadata: length bounds for str/bytes, value bounds for int.

    ``printable`` strings may not contain control characters (Unicode category C*),
    so a peer cannot smuggle terminal escapes into our output. A ``tuple[X, ...]``
    field must set ``max_items``; the other limits then apply to each element.
    """
    return field(metadata={"min_len": min_len, "max_len": max_len, "lo": lo, "hi": hi,
                           "printable": printable, "max_items": max_items})


class Frame:
    """Base of every frame. ``TAG`` is the wire type tag."""

    TAG: ClassVar[str] = ""
    __slots__ = ()


class Record:
    """Base of small records nested in frames; encoded as msgpack arrays of their fields."""

    __slots__ = ()


FRAME_TYPES: dict[str, type[Frame]] = {}

F = TypeVar("F", bound=type[Frame])


def frame(tag: str) -> Any:
    """Register a frame class under ``tag``; tags are unique."""

    def register(cls: F) -> F:
        if tag in FRAME_TYPES:
            raise ValueError(f"duplicate frame tag {tag!r}")
        cls.TAG = tag
        FRAME_TYPES[tag] = cls
        return cls

    return register


# --- link handshake -------------------------------------------------------------


@frame("hello")
@dataclass(frozen=True, slots=True)
class Hello(Frame):
    """First frame each side sends: who I claim to be and my fresh nonce."""

    did: str = limits(min_len=1, max_len=MAX_DID_LENGTH, printable=True)
    nonce: bytes = limits(min_len=NONCE_SIZE, max_len=NONCE_SIZE)
    name: str = limits(max_len=MAX_NAME_LENGTH, printable=True)
    agent: str = limits(max_len=MAX_AGENT_LENGTH, printable=True)


@frame("auth")
@dataclass(frozen=True, slots=True)
class Auth(Frame):
    """The DID proof: a signature over the link transcript (see ``core.link``)."""

    signature: bytes = limits(min_len=64, max_len=64)


@frame("ready")
@dataclass(frozen=True, slots=True)
class Ready(Frame):
    """Server to client: your proof verified, the link is open."""


# --- link liveness ---------------------------------------------------------------


@frame("ping")
@dataclass(frozen=True, slots=True)
class Ping(Frame):
    nonce: int = limits()


@frame("pong")
@dataclass(frozen=True, slots=True)
class Pong(Frame):
    nonce: int = limits()


# --- channel replication (DESIGN §7) -------------------------------------------------------

#: Bytes of a per-link blinded channel topic.
TOPIC_SIZE = 16
#: Largest encoded envelope, in bytes (the channel layer enforces the same bound).
MAX_ENVELOPE_BYTES = 128 * 1024
MAX_TOPICS = 1024
MAX_VECTOR_ENTRIES = 4096
MAX_BATCH_ITEMS = 1024
ID_PREFIX_SIZE = 8
DEVICE_SIZE = 16


@dataclass(frozen=True, slots=True)
class VectorEntry(Record):
    """One device's progress: every envelope up to ``seq`` is held; ``last`` prefixes its id."""

    author: str = limits(min_len=1, max_len=MAX_DID_LENGTH, printable=True)
    device: bytes = limits(min_len=DEVICE_SIZE, max_len=DEVICE_SIZE)
    seq: int = limits()
    last: bytes = limits(min_len=ID_PREFIX_SIZE, max_len=ID_PREFIX_SIZE)


@frame("subscribe")
@dataclass(frozen=True, slots=True)
class Subscribe(Frame):
    """The channels I hold, as topics blinded with this link's session id."""

    topics: tuple[bytes, ...] = limits(min_len=TOPIC_SIZE, max_len=TOPIC_SIZE,
                                       max_items=MAX_TOPICS)


#: Longest invite an Offer carries (the invite format's own bound).
MAX_OFFER_LENGTH = 8192


@frame("offer")
@dataclass(frozen=True, slots=True)
class Offer(Frame):
    """A direct-message channel for the receiver: an invite, by the sender, whose
    genesis names the receiver as the other member (DESIGN §10.15)."""

    invite: str = limits(max_len=MAX_OFFER_LENGTH, printable=True)


#: Relays a relayed message may still pass through after the first (design.md §10.15).
MAX_RELAY_HOPS = 2
#: Largest sealed body of a relayed message: one envelope of the largest size and room
#: for its sealing and framing.
MAX_RELAY_BODY = MAX_ENVELOPE_BYTES + 8 * 1024
RELAY_ID_SIZE = 16


@frame("relay")
@dataclass(frozen=True, slots=True)
class Relay(Frame):
    """A direct-message item for ``target`` from ``origin``, carried by any node that can
    get it closer: ``body`` is sealed to ``target``'s identity key and ``signature`` is
    ``origin``'s over ``[1, id, origin, target, body]`` (domain ``p2pchat/v1/relay``), so a
    relay can neither read nor alter it. ``hops``: how many more relays may pass it on
    to relays (unsigned; each relay lowers it, and ``(origin, id)`` is forwarded once)."""

    id: bytes = limits(min_len=RELAY_ID_SIZE, max_len=RELAY_ID_SIZE)
    origin: str = limits(min_len=1, max_len=MAX_DID_LENGTH, printable=True)
    target: str = limits(min_len=1, max_len=MAX_DID_LENGTH, printable=True)
    hops: int = limits(hi=MAX_RELAY_HOPS)
    body: bytes = limits(min_len=1, max_len=MAX_RELAY_BODY)
    signature: bytes = limits(min_len=64, max_len=64)


@frame("summary")
@dataclass(frozen=True, slots=True)
class Summary(Frame):
    """What I hold of one shared channel; the receiver sends what I lack."""

    topic: bytes = limits(min_len=TOPIC_SIZE, max_len=TOPIC_SIZE)
    entries: tuple[VectorEntry, ...] = limits(max_items=MAX_VECTOR_ENTRIES)


@frame("envelopes")
@dataclass(frozen=True, slots=True)
class Envelopes(Frame):
    """Envelopes of one channel, in causal order.

    ``more``: this answer to a summary was cut at the sender's sync window; the
    receiver asks for the rest with a fresh summary once it has applied these.
    """

    topic: bytes = limits(min_len=TOPIC_SIZE, max_len=TOPIC_SIZE)
    items: tuple[bytes, ...] = limits(min_len=1, max_len=MAX_ENVELOPE_BYTES,
                                      max_items=MAX_BATCH_ITEMS)
    more: bool = False


# --- bootstrap services (DESIGN §8; docs/protocol.md §12) ------------------------------------
#
# A node talks to a bootstrap server over an ordinary link. Topics here are *server
# topics*: BLAKE2b-256 of the channel id under a fixed personalisation (see
# p2pchat.bootstrap_proto.server_topic), the same on every link, so members meet
# under them while the server never sees a channel id in a lookup.

SERVER_TOPIC_SIZE = 32
MAX_RECORD_BYTES = 2048
MAX_PEER_RECORDS = 32
MAX_ADDRESSES = 8
MAX_STORED_ITEMS = 256
MAX_REASON_LENGTH = 200


@dataclass(frozen=True, slots=True)
class PeerRecord(Record):
    """A signed rendezvous record: msgpack ``[1, topic, did, [[host, port]...], expires_ms]``
    signed by ``did`` in domain ``p2pchat/v1/rendezvous``."""

    record: bytes = limits(min_len=1, max_len=MAX_RECORD_BYTES)
    signature: bytes = limits(min_len=64, max_len=64)


@dataclass(frozen=True, slots=True)
class StoredItem(Record):
    """One stored envelope and the server's sequence number for it in its topic."""

    seq: int = limits(lo=1)
    envelope: bytes = limits(min_len=1, max_len=MAX_ENVELOPE_BYTES)


@frame("announce")
@dataclass(frozen=True, slots=True)
class Announce(Frame):
    """Client to server: where I can be reached for this topic (until the record expires)."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    peer: PeerRecord = limits()  # noqa: RUF009 (a field() with metadata, not a default)


@frame("lookup")
@dataclass(frozen=True, slots=True)
class Lookup(Frame):
    """Client to server: who announced this topic? Answered with ``peers``."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)


@frame("peers")
@dataclass(frozen=True, slots=True)
class Peers(Frame):
    """Server to client: unexpired records of a topic (the asker's own left out)."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    records: tuple[PeerRecord, ...] = limits(max_items=MAX_PEER_RECORDS)


@frame("upload")
@dataclass(frozen=True, slots=True)
class Upload(Frame):
    """Client to server: store these envelopes (each signature is verified; duplicates are
    ignored). Answered with ``uploaded`` or ``refused``."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    items: tuple[bytes, ...] = limits(min_len=1, max_len=MAX_ENVELOPE_BYTES,
                                      max_items=MAX_BATCH_ITEMS)


@frame("uploaded")
@dataclass(frozen=True, slots=True)
class Uploaded(Frame):
    """Server to client: how an ``upload`` went; ``last`` is the topic's newest seq."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    accepted: int = limits()
    duplicates: int = limits()
    last: int = limits()


@frame("watch")
@dataclass(frozen=True, slots=True)
class Watch(Frame):
    """Client to server: send every stored envelope of the topic after ``cursor`` (0: all),
    in ``stored`` batches, then each new one as it arrives (a firehose with backfill)."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    cursor: int = limits()


@frame("stored")
@dataclass(frozen=True, slots=True)
class Stored(Frame):
    """Server to client: envelopes of a watched topic in seq order. ``backfill``: more
    stored ones follow; False once the client is live."""

    topic: bytes = limits(min_len=SERVER_TOPIC_SIZE, max_len=SERVER_TOPIC_SIZE)
    items: tuple[StoredItem, ...] = limits(max_items=MAX_STORED_ITEMS)
    backfill: bool = False


@frame("refused")
@dataclass(frozen=True, slots=True)
class Refused(Frame):
    """Server to client: a request was not carried out (over a quota or rate limit, an
    envelope failed verification, …). ``request`` is the refused frame's tag; the link
    stays open."""

    request: str = limits(min_len=1, max_len=32, printable=True)
    topic: bytes = limits(max_len=SERVER_TOPIC_SIZE)
    code: str = limits(min_len=1, max_len=32, printable=True)
    reason: str = limits(max_len=MAX_REASON_LENGTH, printable=True)
