"""The node's side of bootstrap servers (DESIGN §8). Sans-IO; owned by NodeCore.

Theory of operation
-------------------
A bootstrap server is an ordinary link peer that the node dials because it is
configured (``run --bootstrap``), not because it shares a channel: the core
keeps a persistent wanted entry per server address (redialled with backoff, so
any subset of servers may be down), and a link to one of those addresses is a
*server link*. On every server link, for every channel the node holds:

* ``watch`` from the cursor last stored for (server DID, server topic): the
  server sends what it stored after that, then each new upload live. Received
  envelopes go through the same verification and apply path as envelopes from
  peers (``ChannelHub.receive_stored``); a bad one is skipped, not fatal (the
  server verified only the signature). The cursor is persisted after the
  envelopes it covers (``PersistCursor``), so a restart resumes there.
* ``upload`` the node's own envelopes (all of them on each new server link, the
  server drops duplicates; then each new one as it is written).
* ``announce`` a signed peer record with the node's listen address (none when
  it listens on a wildcard address: that is not an address others can dial),
  renewed every ANNOUNCE_INTERVAL, and ``lookup`` every LOOKUP_INTERVAL; peers
  found are dialled like mDNS finds (``PeerDiscovered``, source ``bootstrap``).

``refused`` frames are kept per server as its last error (``doctor`` shows them).

Direct-message **mailboxes** (``p2pchat.core.dm``): the node watches its own
mailbox topic on every server, and uploads the sealed offers of its pending
DMs to the recipients' mailbox topics (no announce or lookup there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from p2pchat.bootstrap_proto import RecordError, make_record, open_record, server_topic
from p2pchat.core.channels import cut_batches
from p2pchat.core.dm import mailbox_topic
from p2pchat.core.events import Address, Effect, PersistCursor
from p2pchat.core.link import Link
from p2pchat.identity import Identity
from p2pchat.wire import Frame
from p2pchat.wire.frames import (
    MAX_BATCH_ITEMS,
    Announce,
    Lookup,
    Peers,
    Refused,
    Stored,
    Upload,
    Uploaded,
    Watch,
)

#: Renew our peer record this often; records live RECORD_TTL.
ANNOUNCE_INTERVAL = 300.0
RECORD_TTL = 900.0
#: Ask servers who else is in our channels this often.
LOOKUP_INTERVAL = 60.0
#: Envelope bytes per ``upload`` frame.
MAX_UPLOAD_BYTES = 256 * 1024

#: (server DID, server topic) -> last stored seq received
Cursors = dict[tuple[str, bytes], int]


@dataclass
class ServerStatus:
    """What the node knows about one configured server (for ``doctor``)."""

    address: Address
    did: str | None = None
    link_id: int | None = None
    last_error: str = ""
    uploaded: int = 0
    #: uploaded envelopes the server has answered as stored
    acknowledged: int = 0
    received: int = 0


@dataclass
class _ServerLink:
    link: Link
    status: ServerStatus
    topics: dict[bytes, bytes] = field(default_factory=dict)  # server topic -> channel
    #: per topic, the item counts of uploads not yet answered (the server answers in order)
    unanswered: dict[bytes, list[int]] = field(default_factory=dict)


class BootstrapClient:
    def __init__(self, identity: Identity, servers: tuple[Address, ...]) -> None:
        self.identity = identity
        self.servers = {address: ServerStatus(address) for address in servers}
        self.cursors: Cursors = {}
        self.listen: Address | None = None
        self._open: dict[int, _ServerLink] = {}
        #: (server DID, server topic) -> how many of our own envelopes (in log order) that
        #: server has acknowledged in this process's lifetime: a reconnect uploads the rest
        self.acked: dict[tuple[str, bytes], int] = {}
        self._next_announce: float | None = None
        self._next_lookup: float | None = None
        #: where offers for this node wait on servers (design.md §10.15)
        self.mailbox_topic = mailbox_topic(identity.did)

    # --- queries --------------------------------------------------------------------

    def is_server(self, link: Link) -> bool:
        return link.outbound and link.address in self.servers

    def is_server_link(self, link_id: int) -> bool:
        return link_id in self._open

    def next_deadline(self) -> float | None:
        if not self._open:
            return None
        times = [t for t in (self._next_announce, self._next_lookup) if t is not None]
        return min(times, default=None)

    # --- lifecycle -------------------------------------------------------------------

    def on_server_open(self, link: Link, channels: list[bytes], own: Callable[[bytes],
                       list[bytes]], now: float, now_ms: int,
                       mailbox: Sequence[tuple[str, bytes]] = ()) -> list[Effect]:
        status = self.servers[link.address]
        status.did, status.link_id, status.last_error = link.peer_did, link.link_id, ""
        sl = _ServerLink(link, status)
        self._open[link.link_id] = sl
        effects: list[Effect] = []
        for channel in channels:
            effects += self._start_channel(sl, channel, own(channel), now_ms)
        assert link.peer_did is not None
        cursor = self.cursors.get((link.peer_did, self.mailbox_topic), 0)
        effects.append(link.send(Watch(topic=self.mailbox_topic, cursor=cursor)))
        for did, item in mailbox:
            effects += self._uploads(sl, mailbox_topic(did), [item])
        self._next_announce = now + ANNOUNCE_INTERVAL
        self._next_lookup = now + LOOKUP_INTERVAL
        return effects

    def on_link_closed(self, link_id: int, reason: str) -> None:
        sl = self._open.pop(link_id, None)
        if sl is not None:
            sl.status.link_id = None
            sl.status.last_error = sl.status.last_error or f"link closed: {reason}"

    def on_channel(self, channel: bytes, own: list[bytes], now_ms: int) -> list[Effect]:
        """A channel was created or joined: start it on every open server link."""
        effects: list[Effect] = []
        for sl in self._open.values():
            effects += self._start_channel(sl, channel, own, now_ms)
        return effects

    def _start_channel(self, sl: _ServerLink, channel: bytes, own: list[bytes], now_ms: int
                       ) -> list[Effect]:
        topic = server_topic(channel)
        if topic in sl.topics:
            return []
        sl.topics[topic] = channel
        assert sl.link.peer_did is not None
        cursor = self.cursors.get((sl.link.peer_did, topic), 0)
        effects = [sl.link.send(Watch(topic=topic, cursor=cursor))]
        effects += self._uploads(sl, topic, own[self.acked.get((sl.link.peer_did, topic), 0):])
        effects += self._announce(sl, topic, now_ms)
        effects.append(sl.link.send(Lookup(topic=topic)))
        return effects

    # --- writes ----------------------------------------------------------------------------

    def upload(self, channel: bytes, raws: list[bytes]) -> list[Effect]:
        """Own envelopes just written: to every open server link."""
        if not self._open:
            return []
        topic = server_topic(channel)
        effects: list[Effect] = []
        for sl in self._open.values():
            if topic in sl.topics:
                effects += self._uploads(sl, topic, raws)
        return effects

    def upload_mailbox(self, items: list[tuple[str, bytes]]) -> list[Effect]:
        """Sealed DM offers just made: to each recipient's mailbox on every open server."""
        effects: list[Effect] = []
        for sl in self._open.values():
            for did, item in items:
                effects += self._uploads(sl, mailbox_topic(did), [item])
        return effects

    def acknowledged(self, channel: bytes) -> int:
        """The most of our own envelopes of ``channel`` (in log order) one server has
        acknowledged in this run."""
        topic = server_topic(channel)
        return max((n for (_, t), n in self.acked.items() if t == topic), default=0)

    def _uploads(self, sl: _ServerLink, topic: bytes, raws: list[bytes]) -> list[Effect]:
        batches = cut_batches(raws, MAX_BATCH_ITEMS, MAX_UPLOAD_BYTES)
        sl.unanswered.setdefault(topic, []).extend(len(b) for b in batches)
        sl.status.uploaded += len(raws)
        # own envelopes leave only after their commit: a server must never hold what a
        # crash could make this node forget (a restart would reuse the seq: a fork)
        return [sl.link.send(Upload(topic=topic, items=batch), after_store=True)
                for batch in batches]

    def _announce(self, sl: _ServerLink, topic: bytes, now_ms: int) -> list[Effect]:
        if self.listen is None:
            return []
        record = make_record(self.identity, topic, [self.listen],
                             now_ms + int(RECORD_TTL * 1000))
        return [sl.link.send(Announce(topic=topic, peer=record))]

    # --- timers ------------------------------------------------------------------------

    def on_timer(self, now: float, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        if self._next_announce is not None and self._next_announce <= now:
            self._next_announce = now + ANNOUNCE_INTERVAL
            for sl in self._open.values():
                for topic in sl.topics:
                    effects += self._announce(sl, topic, now_ms)
        if self._next_lookup is not None and self._next_lookup <= now:
            self._next_lookup = now + LOOKUP_INTERVAL
            for sl in self._open.values():
                effects += [sl.link.send(Lookup(topic=t)) for t in sl.topics]
        return effects

    # --- frames from servers ---------------------------------------------------------------

    def on_frame(self, link: Link, frame: Frame, now_ms: int,
                 receive: Callable[[bytes, list[bytes]], list[Effect]],
                 discovered: Callable[[str, Address], list[Effect]],
                 mailbox: Callable[[list[bytes]], list[Effect]] | None = None
                 ) -> list[Effect]:
        sl = self._open[link.link_id]
        if isinstance(frame, Stored):
            channel = sl.topics.get(frame.topic)
            is_mailbox = frame.topic == self.mailbox_topic and mailbox is not None
            if (channel is None and not is_mailbox) or not frame.items:
                return []
            items = sorted(frame.items, key=lambda i: i.seq)
            raws = [i.envelope for i in items]
            if channel is not None:
                effects = receive(channel, raws)
            else:
                assert mailbox is not None
                effects = mailbox(raws)
            sl.status.received += len(items)
            assert link.peer_did is not None
            key = (link.peer_did, frame.topic)
            last = max(self.cursors.get(key, 0), items[-1].seq)
            self.cursors[key] = last
            effects.append(PersistCursor(link.peer_did, frame.topic, last))
            return effects
        if isinstance(frame, Peers):
            effects = []
            for peer in frame.records:
                try:
                    record = open_record(peer, now_ms)
                except RecordError:
                    continue  # a server cannot vouch for what a record does not prove
                if record.topic != frame.topic or record.did == self.identity.did:
                    continue
                for address in record.addresses[:1]:
                    effects += discovered(record.did, address)
            return effects
        if isinstance(frame, Uploaded):
            pending = sl.unanswered.get(frame.topic)
            if pending:
                assert link.peer_did is not None
                key = (link.peer_did, frame.topic)
                count = pending.pop(0)
                self.acked[key] = self.acked.get(key, 0) + count
                sl.status.acknowledged += count
            return []
        if isinstance(frame, Refused):
            sl.status.last_error = f"{frame.request} refused: {frame.code}: {frame.reason}"
            if frame.request == Upload.TAG and sl.unanswered.get(frame.topic):
                sl.unanswered[frame.topic].pop(0)  # not stored: uploaded again next time
            return []
        return []
