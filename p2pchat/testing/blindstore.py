"""A bootstrap server for the simulator: a blind store of ciphertext, sans-IO.

Theory of operation
-------------------
A scenario's *server* is a simulated node whose :class:`~p2pchat.core.NodeCore` keeps
its link layer (handshake, DIDs, keepalive) and has :class:`BlindStoreHub` in the slot
where a node keeps its :class:`~p2pchat.core.channels.ChannelHub` (NodeCore hands its
hub every link its :class:`~p2pchat.core.links.LinkCore` opens, frames and closes;
``bootstrap/core.py`` instead composes a LinkCore with the real service through the
link layer's port). It holds no channel and no key, is never a member, and answers the
bootstrap frames of docs/protocol.md §12 with :class:`BlindStore`:

* ``upload``: every item must decode as an envelope of the frame's topic and carry a
  valid signature over it, or the whole frame is refused (``bad-envelope``, the item's
  index in the reason); envelopes already held (by id) count as duplicates; each new one
  gets the topic's next server seq; the answer is ``uploaded{accepted, duplicates,
  last}``, in request order; then every live watcher of the topic gets the new ones;
* ``watch{topic, cursor}``: the stored envelopes after ``cursor`` (a cursor beyond the
  newest counts as the newest) in ``stored`` frames of at most
  :data:`~p2pchat.wire.frames.MAX_STORED_ITEMS` items and :data:`STORED_FRAME_BYTES`,
  ``backfill`` true on each but the last; from then on live;
* ``announce`` / ``lookup``: signed peer records, checked, one per (topic, DID), only
  for the DID proven on the link; a lookup gets the unexpired ones except the asker's,
  newest first, at most :data:`~p2pchat.wire.frames.MAX_PEER_RECORDS`;
* replication frames are ignored (a server holds no channels); any other frame is a
  protocol error (the link closes).

Why here and not ``bootstrap/``: ``p2pchat`` never imports ``bootstrap``
(tests/test_layering.py), and ``p2pchat sim FILE`` must run a scenario with servers
from p2pchat alone. The real server's store is asynchronous, rate-limited, quota'd
and retains for 30 days; none of that changes what a node sees of a well-behaved
server, so this store leaves it out. ``tests/sim/test_blindstore.py`` feeds the same
frames to this store and to ``bootstrap``'s service and compares the answers.

The store (:attr:`BlindStore.topics`) outlives the core: a crashed server restarts
with its ciphertext and forgets its links and watches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from p2pchat.bootstrap_proto import RecordError, open_record
from p2pchat.channel.envelope import Envelope, decode_envelope
from p2pchat.core.channels import ChannelHub, verify_in_order
from p2pchat.core.events import Effect, RandomSource
from p2pchat.core.link import Link
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity, short_did
from p2pchat.wire import Envelopes, Frame, Subscribe, Summary
from p2pchat.wire.frames import (
    MAX_PEER_RECORDS,
    MAX_REASON_LENGTH,
    MAX_STORED_ITEMS,
    Announce,
    Lookup,
    PeerRecord,
    Peers,
    Refused,
    Stored,
    StoredItem,
    Upload,
    Uploaded,
    Watch,
)

#: Envelope bytes per ``stored`` frame (the real server's default ``stored_frame_bytes``).
STORED_FRAME_BYTES = 512 * 1024
#: Longest a record is kept after its announce, ms (the real server's ``record_max_ttl``).
RECORD_MAX_TTL_MS = 3600 * 1000

Verifier = Callable[[list[Envelope]], list[bool]]


@dataclass
class _Topic:
    #: (seq, envelope id, envelope bytes), oldest first
    items: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    ids: set[bytes] = field(default_factory=set)
    last: int = 0


@dataclass
class _Record:
    peer: PeerRecord
    expires_ms: int
    announced_ms: int


class BlindStore:
    """What a bootstrap server holds and answers; see the module docstring.

    ``handle(link_id, did, frame, wall_ms)`` returns ``(link id, frame)`` pairs to send.
    """

    def __init__(self, verify: Verifier = verify_in_order) -> None:
        self.verify = verify
        self.topics: dict[bytes, _Topic] = {}
        self.records: dict[bytes, dict[str, _Record]] = {}
        #: link id -> topics it watches live
        self.watching: dict[int, set[bytes]] = {}
        #: counters for scenario assertions
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0
        self.served = 0

    def held(self, topic: bytes) -> int:
        """How many envelopes the store holds for ``topic``."""
        t = self.topics.get(topic)
        return len(t.items) if t is not None else 0

    def closed(self, link_id: int) -> None:
        self.watching.pop(link_id, None)

    def forget_links(self) -> None:
        """A restart: the ciphertext stays, links and watches are gone."""
        self.watching.clear()

    def handle(self, link_id: int, did: str, frame: Frame, wall_ms: int
               ) -> list[tuple[int, Frame]]:
        if isinstance(frame, Upload):
            return self._upload(link_id, frame)
        if isinstance(frame, Watch):
            return self._watch(link_id, frame)
        if isinstance(frame, Announce):
            return self._announce(link_id, did, frame, wall_ms)
        if isinstance(frame, Lookup):
            return self._lookup(link_id, did, frame, wall_ms)
        if isinstance(frame, Subscribe | Summary | Envelopes):
            return []  # a node treating us as a peer: we hold no channels
        raise RemoteProtocolError(f"unexpected {frame.TAG!r} frame (this is a bootstrap server)")

    def _refuse(self, link_id: int, request: str, topic: bytes, code: str, reason: str
                ) -> list[tuple[int, Frame]]:
        self.refused += 1
        return [(link_id, Refused(request=request, topic=topic, code=code,
                                  reason=reason[:MAX_REASON_LENGTH]))]

    def _upload(self, link_id: int, frame: Upload) -> list[tuple[int, Frame]]:
        topic = frame.topic
        unique: dict[bytes, tuple[int, Envelope, bytes]] = {}
        for i, raw in enumerate(frame.items):
            try:
                env = decode_envelope(raw, topic)
            except RemoteProtocolError as exc:
                return self._refuse(link_id, Upload.TAG, topic, "bad-envelope", f"item {i}: {exc}")
            unique.setdefault(env.id, (i, env, raw))
        entries = list(unique.values())
        for (i, _, _), ok in zip(entries, self.verify([e for _, e, _ in entries]), strict=True):
            if not ok:
                return self._refuse(link_id, Upload.TAG, topic, "bad-envelope",
                                    f"item {i}: signature does not verify (or the envelope "
                                    "belongs to another topic)")
        t = self.topics.setdefault(topic, _Topic())
        new: list[tuple[int, bytes]] = []
        for _, env, raw in entries:
            if env.id in t.ids:
                continue
            t.last += 1
            t.ids.add(env.id)
            t.items.append((t.last, env.id, raw))
            new.append((t.last, raw))
        dupes = len(frame.items) - len(new)
        self.accepted += len(new)
        self.duplicates += dupes
        out: list[tuple[int, Frame]] = [(link_id, Uploaded(topic=topic, accepted=len(new),
                                                           duplicates=dupes, last=t.last))]
        if new:
            for watcher in sorted(self.watching):
                if topic in self.watching[watcher]:
                    out += [(watcher, f) for f in self._frames(topic, new, backfill=False)]
        return out

    def _watch(self, link_id: int, frame: Watch) -> list[tuple[int, Frame]]:
        t = self.topics.setdefault(frame.topic, _Topic())
        cursor = min(frame.cursor, t.last)
        items = [(seq, raw) for seq, _, raw in t.items if seq > cursor]
        self.watching.setdefault(link_id, set()).add(frame.topic)
        return [(link_id, f) for f in self._frames(frame.topic, items, backfill=False)]

    def _frames(self, topic: bytes, items: list[tuple[int, bytes]], backfill: bool
                ) -> list[Stored]:
        """``stored`` frames within the item and byte limits: ``backfill`` true on every
        frame but the last (more follow), the given ``backfill`` on the last."""
        self.served += len(items)
        frames: list[Stored] = []
        batch: list[StoredItem] = []
        size = 0
        for seq, raw in items:
            if batch and (len(batch) >= MAX_STORED_ITEMS or size + len(raw) > STORED_FRAME_BYTES):
                frames.append(Stored(topic=topic, items=tuple(batch), backfill=True))
                batch, size = [], 0
            batch.append(StoredItem(seq=seq, envelope=raw))
            size += len(raw)
        frames.append(Stored(topic=topic, items=tuple(batch), backfill=backfill))
        return frames

    def _announce(self, link_id: int, did: str, frame: Announce, wall_ms: int
                  ) -> list[tuple[int, Frame]]:
        try:
            info = open_record(frame.peer, wall_ms)
        except RecordError as exc:
            return self._refuse(link_id, Announce.TAG, frame.topic, "bad-record", str(exc))
        if info.topic != frame.topic:
            return self._refuse(link_id, Announce.TAG, frame.topic, "bad-record",
                                "the record names another topic")
        if info.did != did:
            return self._refuse(link_id, Announce.TAG, frame.topic, "bad-record",
                                f"the record is signed by {short_did(info.did)}, not by the "
                                "DID proven on this link")
        expires = min(info.expires_ms, wall_ms + RECORD_MAX_TTL_MS)
        self.records.setdefault(frame.topic, {})[did] = _Record(frame.peer, expires, wall_ms)
        return []

    def _lookup(self, link_id: int, did: str, frame: Lookup, wall_ms: int
                ) -> list[tuple[int, Frame]]:
        records = self.records.get(frame.topic, {})
        found = sorted(((r.announced_ms, d, r) for d, r in records.items()
                        if d != did and r.expires_ms > wall_ms),
                       key=lambda x: (-x[0], x[1]))[:MAX_PEER_RECORDS]
        return [(link_id, Peers(topic=frame.topic, records=tuple(r.peer for _, _, r in found)))]


class BlindStoreHub(ChannelHub):
    """NodeCore's hub slot on a simulated server: no channels; frames go to the store."""

    def __init__(self, identity: Identity, rng: RandomSource, store: BlindStore) -> None:
        super().__init__(identity, rng.randbytes)
        self.snapshot_every = 0
        self.index_messages = False
        self.store = store
        self._server_links: dict[int, Link] = {}

    def load_prekeys(self, items: tuple[tuple[bytes, bytes], ...], now_ms: int) -> None:
        """A server publishes no prekeys (it is never a member)."""

    def on_link_open(self, link: Link) -> list[Effect]:
        self._server_links[link.link_id] = link
        return []

    def on_link_closed(self, link_id: int) -> None:
        self._server_links.pop(link_id, None)
        self.store.closed(link_id)

    def on_frame(self, link: Link, frame: Frame, now_ms: int) -> list[Effect]:
        assert link.peer_did is not None
        effects: list[Effect] = []
        for target, out in self.store.handle(link.link_id, link.peer_did, frame, now_ms):
            peer = self._server_links.get(target)
            if peer is not None and peer.is_open:
                effects.append(peer.send(out))
        return effects


__all__ = ["RECORD_MAX_TTL_MS", "STORED_FRAME_BYTES", "BlindStore", "BlindStoreHub"]
