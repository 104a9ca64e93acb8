"""Inputs to and outputs of :class:`~p2pchat.core.node.NodeCore`.

Events (inputs) are named in the past tense or as requests; effects (outputs) are
commands for the runtime to carry out, in order. All are frozen, slotted
dataclasses, gathered in two closed unions at the end of this module, :data:`Event`
and :data:`Effect`: every executor dispatches with ``match`` and ends in
``assert_never``, so a new kind is a type error wherever it is not handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from p2pchat.errors import CloseCode

Address = tuple[str, int]


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RandomSource(Protocol):
    """What the core needs of randomness; ``random.Random`` and ``SystemRandom`` fit."""

    def random(self) -> float: ...

    def randbytes(self, n: int, /) -> bytes: ...


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """The transport finished its (TLS) handshake for a new link.

    ``cert_fingerprint`` is SHA-256 of the server certificate's DER (ours when
    inbound, the peer's when outbound). ``peer_cert_key`` is the raw Ed25519
    public key of the server certificate when outbound, else ``None``.
    """

    link_id: int
    outbound: bool
    address: Address
    cert_fingerprint: bytes
    peer_cert_key: bytes | None = None
    dial_id: int | None = None


@dataclass(frozen=True, slots=True)
class DataReceived:
    link_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The transport closed the link (peer close, QUIC idle, unreachable)."""

    link_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class DialFailed:
    dial_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TimerExpired:
    """The deadline from :meth:`NodeCore.next_deadline` has passed."""

    #: some peer has not acknowledged what we sent it for longer than its round trip
    #: (the transport's ``lagging``): a seal lingers for more posts (core.batching)
    lagging: bool = False


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    request_id: int
    address: Address
    expected_did: str | None = None


@dataclass(frozen=True, slots=True)
class DisconnectRequested:
    """Close links to a peer (by DID or dialled address) and stop redialling it."""

    request_id: int
    did: str | None = None
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class PingRequested:
    request_id: int
    did: str


@dataclass(frozen=True, slots=True)
class Started:
    """The runtime listens at ``listen``: dial the bootstrap servers, announce there."""

    listen: Address
    wall_ms: int  # the wall clock now, in Unix ms (peer records carry expiry times)
    #: (server DID, server topic, cursor) as stored by earlier runs
    cursors: tuple[tuple[str, bytes, int], ...] = ()
    #: this node's prekeys kept by earlier runs: (record, private key)
    prekeys: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PeerDiscovered:
    """A discovery mechanism saw ``did`` at ``address``: dial it unless already connected.

    ``source`` says how it was found (``mdns``, ``bootstrap``); shown by ``peers``.
    """

    did: str
    address: Address
    source: str


@dataclass(frozen=True, slots=True)
class WantedPeersLoaded:
    """Peers the node should keep connected to, as stored by earlier runs."""

    peers: tuple[tuple[Address, str], ...]


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    reason: str = "node shutting down"


# --- effects --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send ``data`` on a link. ``after_store``: only once every store write queued
    before this effect has committed (our own new envelopes: what peers hold we must
    never lose, or a restart would reuse its sequence number)."""

    link_id: int
    data: bytes
    after_store: bool = False


@dataclass(frozen=True, slots=True)
class CloseLink:
    link_id: int
    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class Dial:
    dial_id: int
    address: Address
    timeout: float


@dataclass(frozen=True, slots=True)
class PeerConnected:
    did: str
    name: str
    link_id: int
    address: Address
    outbound: bool


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    did: str
    link_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFinished:
    """Answer to :class:`ConnectRequested`: ``did`` on success, else ``error``."""

    request_id: int
    did: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class PingFinished:
    request_id: int
    rtt: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class DisconnectFinished:
    request_id: int
    closed: int
    forgotten: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class ForgetPeer:
    """Stop remembering ``address`` as a peer to reconnect to."""

    address: Address


@dataclass(frozen=True, slots=True)
class SavePeer:
    """Remember ``address`` as a peer to reconnect to (it answered as ``did``)."""

    address: Address
    did: str


# --- channels (issue 3) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredChannel:
    """A channel as stored: the newest snapshot covers the first ``covered`` envelopes."""

    channel: bytes
    name: str
    key: bytes
    envelopes: tuple[bytes, ...]
    snapshot: bytes | None = None
    covered: int = 0
    #: the keyring: (epoch id, group secret) of every epoch this node can read
    secrets: tuple[tuple[bytes, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelsLoaded:
    """Channels and their envelopes (in stored order) from earlier runs."""

    channels: tuple[StoredChannel, ...]
    #: the last run may have lost stored writes that peers already hold (it did not
    #: stop cleanly and the machine restarted since, design.md §10.5): each channel's
    #: own chain head is unsure until a peer's summary shows it
    head_unsure: bool = False


@dataclass(frozen=True, slots=True)
class ChannelCreateRequested:
    request_id: int
    name: str
    wall_ms: int
    policy: str = "history"


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """Join with an invite's capability (see :mod:`p2pchat.channel.invite`)."""

    request_id: int
    channel: bytes
    name: str
    peers: tuple[tuple[str, Address], ...]
    wall_ms: int
    cap: bytes
    grant: bytes
    grant_signature: bytes
    genesis: bytes


@dataclass(frozen=True, slots=True)
class DmRequested:
    """Send ``text`` to ``did`` in the direct-message channel with it (made on first use)."""

    request_id: int
    did: str
    text: str
    wall_ms: int


@dataclass(frozen=True, slots=True)
class SendRequested:
    request_id: int
    channel: bytes
    text: str
    wall_ms: int
    reply_to: str = ""
    #: as :attr:`TimerExpired.lagging`: a post made while a peer lags is batched
    lagging: bool = False


@dataclass(frozen=True, slots=True)
class MessageOpRequested:
    """Edit or delete one of our messages, or react to any message."""

    request_id: int
    channel: bytes
    op: str  # "edit" | "delete" | "react"
    msg_id: str
    wall_ms: int
    text: str = ""
    emoji: str = ""
    on: bool = True


@dataclass(frozen=True, slots=True)
class ModRequested:
    """A moderation action by this node's user (DESIGN §4)."""

    request_id: int
    channel: bytes
    action: str
    wall_ms: int
    target: str = ""  # a DID, for add/kick/ban/unban/mute/unmute/op/deop
    value: str = ""  # the topic, or the mode's name
    on: bool = True  # mode set (True) or cleared
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PersistCursor:
    """Remember how far the node has read a bootstrap server's topic (after the
    envelopes before it are stored: effects are written in order)."""

    server_did: str
    topic: bytes
    cursor: int


@dataclass(frozen=True, slots=True)
class PersistPrekey:
    """Keep a prekey's private key (until it has expired) with its published record.
    Written before the record is published: effects are written in order."""

    prekey_id: bytes
    record: bytes
    private: bytes
    expires_ms: int


@dataclass(frozen=True, slots=True)
class PersistEpochKey:
    """Keep an epoch's group secret (the store file is 0600). Written in the same
    transaction as the envelopes that need it."""

    channel: bytes
    epoch: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ForgetEpochKey:
    """Delete an epoch's secret (``ephemeral`` channels: forward secrecy)."""

    channel: bytes
    epoch: bytes


@dataclass(frozen=True, slots=True)
class PersistChannel:
    channel: bytes
    name: str
    key: bytes


@dataclass(frozen=True, slots=True)
class PersistEnvelopes:
    """Store these verified envelopes (id, bytes) of ``channel``, in this order."""

    channel: bytes
    items: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class PersistSnapshot:
    """Replace the channel's snapshot; it covers the first ``covered`` stored envelopes."""

    channel: bytes
    data: bytes
    covered: int


@dataclass(frozen=True, slots=True)
class IndexMessages:
    """Search index rows (id, author, text, deleted) for messages that changed."""

    channel: bytes
    rows: tuple[tuple[str, str, str, bool], ...]


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """A channel catching up (``ChannelHub.sync_progress``): envelopes received since
    it began, and how many the linked peers' summaries say this node still lacks."""

    received: int
    behind: int

    @property
    def expected(self) -> int:
        return self.received + self.behind


@dataclass(frozen=True, slots=True)
class SyncChanged:
    """A channel's catch-up progress changed (``sync`` watch events); None once nothing
    peers announced is missing."""

    channel: bytes
    progress: SyncProgress | None


@dataclass(frozen=True, slots=True)
class ChannelAnswer:
    """Answer to a channel request: ``result`` on success, else ``error``."""

    request_id: int
    result: dict[str, object] | None
    error: str | None


# --- the closed unions ------------------------------------------------------------

#: What the link layer takes (``LinkCore.handle``, :mod:`p2pchat.core.links`): the
#: transport's events, timers, requests about peers, shutdown.
LinkEvent: TypeAlias = (
    LinkEstablished | DataReceived | LinkLost | DialFailed | TimerExpired | ConnectRequested
    | DisconnectRequested | PingRequested | PeerDiscovered | WantedPeersLoaded
    | ShutdownRequested
)

#: Everything the node core takes (``NodeCore.handle``): the link layer's events and the
#: chat application's.
Event: TypeAlias = (
    LinkEvent | Started | ChannelsLoaded | ChannelCreateRequested | JoinRequested
    | DmRequested | SendRequested | MessageOpRequested | ModRequested
)

#: The effects a store carries out (``Store.write``), in order, all or nothing.
Persistence: TypeAlias = (
    PersistChannel | PersistEnvelopes | IndexMessages | PersistSnapshot | SavePeer
    | ForgetPeer | PersistPrekey | PersistEpochKey | ForgetEpochKey | PersistCursor
)

#: Answers to requests (by request id).
Answer: TypeAlias = ConnectFinished | PingFinished | DisconnectFinished | ChannelAnswer
#: What a runtime may tell its user about (peers, catch-up progress).
Notice: TypeAlias = PeerConnected | PeerDisconnected | SyncChanged
#: What goes to the transport.
LinkWork: TypeAlias = Transmit | CloseLink | Dial

#: Everything the node core asks its runtime to do, in order.
Effect: TypeAlias = LinkWork | Notice | Answer | Persistence
