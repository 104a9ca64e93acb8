"""The bootstrap services, as an I/O-free state machine (DESIGN §8; protocol.md §12).

Theory of operation
-------------------
``BootstrapService.handle(event, now, wall_ms) -> [effects]`` is the only way in:
link events and frames (from :mod:`bootstrap.core`), store answers (from the
runtime's store adapter) and :class:`TimerExpired`. ``now`` is a monotonic clock
in seconds (token buckets, timers); ``wall_ms`` is Unix time in ms (peer record
expiry, envelope age). Nothing here does I/O, reads a clock or draws randomness.

**Rendezvous** (the peer records of each topic) is :mod:`bootstrap.rendezvous`;
what a client may spend (request and upload rates, the per-identity quota and the
per-address-block budget) is :mod:`bootstrap.limits`. This module owns the rest:
the frame and store-answer handlers, the envelope store's aggregates, watches and
retention.

**Persistence** keeps only aggregates in memory (per topic: last seq assigned,
last seq committed, envelopes and bytes; per uploader and per address block: bytes),
never envelopes or their ids, so memory does not grow with the store. An ``upload``
goes through:

1. at once: rate limits, decode, topic check, signatures (all or nothing), then
   ``CheckIds`` (which ids does the topic hold already?);
2. ``IdsChecked``: drop known ids and ids of uploads in flight for the topic
   (``inflight``: a check that ran before an earlier upload was written cannot
   see it), check topic count, topic size, uploader quota and address budget against
   committed plus in-flight figures, assign the next seqs, ``AppendEnvelopes``;
3. ``AppendDone``: the envelopes are committed; answer ``uploaded``, push them to
   live watchers, trim the topic if it grew past its retention size.

An upload that counted envelopes of another upload in flight as duplicates is
answered only once that one is committed (and with ``store-error`` if it
failed): ``uploaded`` never counts what is not on disk.

The store answers its effects in emission order, so seqs commit in order and a
topic's ``committed`` only grows. Answers to one link's uploads leave in request
order (a per-link queue of reply slots), refusals included: a client matches
answers to requests by counting.

A ``watch`` reads the topic through ``ReadStored`` up to ``committed`` (so only
committed envelopes go out) in frames of at most MAX_STORED_ITEMS envelopes and
``stored_frame_bytes``, ``backfill=True`` while the read has not caught up with
``committed``; the frame that catches up has ``backfill=False`` and the watcher
is then *live*: each commit pushes the new envelopes to it as they are written.

**Retention** runs every ``retention_interval``: envelopes older than the max
age go (``PruneOlder``), then topics above their retention size are trimmed,
oldest first (``TrimTopic``); a topic is also trimmed as soon as a commit takes
it past that size. Retention does not wait for watchers: a client that reads
slowly (or comes back later) sees a gap in seqs where envelopes were deleted;
live watchers are pushed every envelope at commit, before it can be trimmed.
A topic left empty is forgotten; a topic created later starts its seqs above
every seq any forgotten topic used (``seq_floor``), so cursors never go back.

**The address budget** (see :mod:`bootstrap.limits`) keeps every identity uploading
from one address block within ``address_max_bytes`` together; the block of a
client is computed once, when it links, from the remote address in ``ClientLinked``.

Refusals (``refused`` frames) carry a code: see :data:`CODES`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

from bootstrap.config import ServiceConfig
from bootstrap.events import (
    AppendDone,
    AppendEnvelopes,
    CheckIds,
    ClientGone,
    ClientLinked,
    FrameArrived,
    IdsChecked,
    Note,
    PruneDone,
    PruneOlder,
    ReadStored,
    ServiceEvent,
    ServiceOutput,
    StoredRead,
    StoredRow,
    StoreLoaded,
    TrimTopic,
)
from bootstrap.limits import Ledger, RateLimits, ip_key
from bootstrap.rendezvous import Rendezvous
from p2pchat.channel.envelope import Envelope, decode_envelope
from p2pchat.core.channels import verify_in_order
from p2pchat.core.events import TimerExpired, Transmit
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import short_did
from p2pchat.wire import Envelopes, Frame, Subscribe, Summary, encode_frame
from p2pchat.wire.frames import (
    MAX_REASON_LENGTH,
    MAX_STORED_ITEMS,
    Announce,
    Lookup,
    Peers,
    Refused,
    Stored,
    StoredItem,
    Upload,
    Uploaded,
    Watch,
)

__all__ = ["CODES", "BootstrapService", "Stats", "Verifier", "ip_key"]

#: refusal codes and what each means (protocol.md §12.5)
CODES = {
    "rate-limited": "over a per-identity or per-IP rate; retry after the time in the reason",
    "bad-envelope": "an item does not decode or its signature does not verify; nothing stored",
    "quota": "the uploader's stored bytes would exceed its quota",
    "address-quota": "the stored bytes of every identity uploading from the client's address "
                     "block (IPv4 /24, IPv6 /56 by default) would exceed its budget",
    "topic-full": "the topic would exceed its hard size or envelope cap",
    "too-many-topics": "the server holds its maximum number of topics",
    "bad-record": "a peer record does not verify, has expired, names another topic or DID",
    "too-many-records": "the topic (or the server) holds its maximum of peer records",
    "too-many-watches": "this link watches its maximum number of topics",
    "store-error": "the server's database failed; nothing was stored",
}
#: Seconds between sweeps of expired peer records and idle token buckets.
RECORD_SWEEP_INTERVAL = 60.0
#: Rows one age-retention step deletes (then the next step follows at once).
PRUNE_BATCH_ROWS = 50_000

Verifier = Callable[[list[Envelope]], list[bool]]


@dataclass
class Stats:
    """Counters since start (the metrics adapter reads them; gauges come from state)."""

    envelopes_in: int = 0
    envelope_bytes_in: int = 0
    duplicates: int = 0
    envelopes_out: int = 0
    envelope_bytes_out: int = 0
    announces: int = 0
    lookups: int = 0
    watches: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    #: envelopes deleted by retention, by reason (age, size)
    pruned: dict[str, int] = field(default_factory=dict)


@dataclass
class _Topic:
    topic: bytes
    last_seq: int
    committed: int
    count: int = 0
    size: int = 0
    pending_count: int = 0
    pending_size: int = 0
    inflight: dict[bytes, int] = field(default_factory=dict)  # id -> append op
    watchers: set[int] = field(default_factory=set)
    trimming: bool = False

    @property
    def holds(self) -> bool:
        return self.count + self.pending_count > 0


@dataclass
class _Watch:
    cursor: int
    live: bool = False


@dataclass
class _Reply:
    frame: Frame | None = None


@dataclass
class _Client:
    link_id: int
    did: str
    ip: str
    #: address-budget key ("": exempt)
    block: str = ""
    watches: dict[bytes, _Watch] = field(default_factory=dict)
    replies: deque[_Reply] = field(default_factory=deque)


@dataclass
class _Upload:
    link_id: int
    uploader: str
    topic: bytes
    items: list[tuple[bytes, bytes]]  # (id, raw), unique within the frame
    duplicates: int  # repeated within the frame
    slot: _Reply
    block: str = ""  # the client's address block ("": exempt)
    rows: tuple[StoredRow, ...] = ()
    size: int = 0
    #: appends of other uploads holding envelopes this one counted as duplicates: its
    #: answer waits for them (an ``uploaded`` must never count what is not on disk)
    waits: set[int] = field(default_factory=set)
    #: one of those failed: answered ``store-error`` (the client uploads again)
    broken: bool = False
    #: its own append is still pending
    writing: bool = False


class BootstrapService:
    """Sans-IO rendezvous and envelope store. See the module docstring."""

    def __init__(self, config: ServiceConfig, now: float, verify_batch: Verifier = verify_in_order
                 ) -> None:
        self.config = config
        self.stats = Stats()
        self._verify = verify_batch
        self._clients: dict[int, _Client] = {}
        self._topics: dict[bytes, _Topic] = {}
        self._ledger = Ledger(config)
        self._limits = RateLimits()
        self._rendezvous = Rendezvous(config)
        self._seq_floor = 0
        self._next_op = 1
        self._checks: dict[int, _Upload] = {}
        self._appends: dict[int, _Upload] = {}
        self._waiters: dict[int, list[_Upload]] = {}  # append op -> uploads waiting
        self._reads: dict[int, tuple[int, bytes, _Watch]] = {}
        self._prunes: dict[int, bytes | None] = {}  # op -> trimmed topic (None: age)
        self._next_retention = now + config.retention_interval
        self._next_sweep = now + RECORD_SWEEP_INTERVAL
        self._age_cutoff = 0

    # --- queries (metrics, tests) -------------------------------------------------------

    def next_deadline(self) -> float:
        return min(self._next_retention, self._next_sweep)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    @property
    def watch_count(self) -> int:
        return sum(len(c.watches) for c in self._clients.values())

    @property
    def record_count(self) -> int:
        return self._rendezvous.count

    def store_totals(self) -> tuple[int, int, int]:
        """(topics holding envelopes, envelopes, bytes), committed."""
        topics = [t for t in self._topics.values() if t.count]
        return len(topics), sum(t.count for t in topics), sum(t.size for t in topics)

    def topic_info(self, topic: bytes) -> tuple[int, int, int] | None:
        """(committed seq, envelopes, bytes) of a topic, or None."""
        t = self._topics.get(topic)
        return None if t is None else (t.committed, t.count, t.size)

    def usage_of(self, did: str) -> int:
        return self._ledger.usage_of(did)

    def block_usage_of(self, block: str) -> int:
        """Committed bytes attributed to an address block (see
        :func:`~bootstrap.limits.address_block`)."""
        return self._ledger.block_usage_of(block)

    def block_totals(self) -> tuple[int, int]:
        """(address blocks holding bytes, bytes of the fullest one), committed."""
        return self._ledger.block_totals()

    def block_of(self, host: str) -> str:
        """The address block ``host`` is counted in ("" if it is exempt)."""
        return self._ledger.block_of(host)

    # --- the one entry point ------------------------------------------------------------

    def handle(self, event: ServiceEvent | TimerExpired, now: float, wall_ms: int
               ) -> list[ServiceOutput]:
        match event:
            case FrameArrived():
                client = self._clients.get(event.link_id)
                if client is None:
                    return []
                return self._on_frame(client, event.frame, now, wall_ms)
            case IdsChecked():
                return self._on_checked(event, wall_ms)
            case AppendDone():
                return self._on_appended(event)
            case StoredRead():
                return self._on_read(event)
            case PruneDone():
                return self._on_pruned(event)
            case ClientLinked():
                host = event.address[0]
                self._clients[event.link_id] = _Client(event.link_id, event.did, ip_key(host),
                                                       self.block_of(host))
                return []
            case ClientGone():
                return self._on_gone(event.link_id)
            case TimerExpired():
                return self._on_timer(now, wall_ms)
            case StoreLoaded():
                return self._on_loaded(event, wall_ms)
            case _:
                assert_never(event)

    def _on_frame(self, client: _Client, frame: Frame, now: float, wall_ms: int
                  ) -> list[ServiceOutput]:
        if isinstance(frame, Upload):
            return self._on_upload(client, frame, now, wall_ms)
        if isinstance(frame, Watch):
            return self._on_watch(client, frame, now)
        if isinstance(frame, Announce):
            return self._on_announce(client, frame, now, wall_ms)
        if isinstance(frame, Lookup):
            return self._on_lookup(client, frame, now, wall_ms)
        if isinstance(frame, (Subscribe, Summary, Envelopes)):
            # a node treating us as a peer: we hold no channels, so there is nothing to say
            return []
        raise RemoteProtocolError(f"unexpected {frame.TAG!r} frame (this is a bootstrap server)")

    # --- helpers ------------------------------------------------------------------------

    def _op(self) -> int:
        op = self._next_op
        self._next_op += 1
        return op

    def _send(self, client: _Client | int, frame: Frame) -> ServiceOutput:
        link_id = client if isinstance(client, int) else client.link_id
        return Transmit(link_id, encode_frame(frame))

    def _refusal(self, client: _Client, request: str, topic: bytes, code: str, reason: str
                 ) -> tuple[Refused, Note]:
        self.stats.refusals[code] = self.stats.refusals.get(code, 0) + 1
        frame = Refused(request=request, topic=topic, code=code,
                        reason=reason[:MAX_REASON_LENGTH])
        note = Note("info", "refused", (("request", request), ("code", code),
                                        ("did", short_did(client.did)), ("ip", client.ip),
                                        ("topic", topic[:4].hex()), ("reason", reason)))
        return frame, note

    def _refuse(self, client: _Client, request: str, topic: bytes, code: str, reason: str
                ) -> list[ServiceOutput]:
        frame, note = self._refusal(client, request, topic, code, reason)
        return [self._send(client, frame), note]

    def _request_limit(self, client: _Client, now: float) -> str | None:
        cfg = self.config
        bucket = self._limits.bucket("request", client.did, cfg.requests_per_second,
                                     cfg.request_burst, now)
        return self._limits.take([(bucket, "request rate per identity")], 1, now)

    def _topic(self, topic: bytes) -> _Topic:
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _Topic(topic, self._seq_floor, self._seq_floor)
        return t

    def _maybe_forget(self, t: _Topic) -> None:
        if t.holds or t.watchers or t.trimming or t.inflight:
            return
        self._seq_floor = max(self._seq_floor, t.last_seq)
        self._topics.pop(t.topic, None)

    def _stored_frames(self, topic: bytes, items: list[tuple[int, bytes]], backfill: bool
                       ) -> list[Stored]:
        """``stored`` frames for ``items`` within the item and byte limits (``backfill``
        only on the last frame; earlier ones are followed by more anyway)."""
        frames: list[Stored] = []
        batch: list[StoredItem] = []
        size = 0
        for seq, raw in items:
            if batch and (len(batch) >= MAX_STORED_ITEMS
                          or size + len(raw) > self.config.stored_frame_bytes):
                frames.append(Stored(topic=topic, items=tuple(batch), backfill=True))
                batch, size = [], 0
            batch.append(StoredItem(seq=seq, envelope=raw))
            size += len(raw)
        frames.append(Stored(topic=topic, items=tuple(batch), backfill=backfill))
        return frames

    def _deliver(self, client: _Client, topic: bytes, items: list[tuple[int, bytes]],
                 backfill: bool) -> list[ServiceOutput]:
        self.stats.envelopes_out += len(items)
        self.stats.envelope_bytes_out += sum(len(raw) for _, raw in items)
        return [self._send(client, f) for f in self._stored_frames(topic, items, backfill)]

    # --- rendezvous -------------------------------------------------------------------------

    def _on_announce(self, client: _Client, frame: Announce, now: float, wall_ms: int
                     ) -> list[ServiceOutput]:
        self.stats.announces += 1
        topic = frame.topic
        limited = self._request_limit(client, now)
        if limited:
            return self._refuse(client, Announce.TAG, topic, "rate-limited", limited)
        taken = self._rendezvous.announce(client.did, frame, wall_ms)
        if isinstance(taken, tuple):
            return self._refuse(client, Announce.TAG, topic, *taken)
        return [taken]

    def _on_lookup(self, client: _Client, frame: Lookup, now: float, wall_ms: int
                   ) -> list[ServiceOutput]:
        self.stats.lookups += 1
        limited = self._request_limit(client, now)
        if limited:
            return self._refuse(client, Lookup.TAG, frame.topic, "rate-limited", limited)
        records = self._rendezvous.lookup(client.did, frame.topic, wall_ms)
        return [self._send(client, Peers(topic=frame.topic, records=records))]

    # --- uploads -------------------------------------------------------------------------------

    def _on_upload(self, client: _Client, frame: Upload, now: float, wall_ms: int
                   ) -> list[ServiceOutput]:
        slot = _Reply()
        client.replies.append(slot)
        topic = frame.topic
        cfg = self.config

        def refuse(code: str, reason: str) -> list[ServiceOutput]:
            slot.frame, note = self._refusal(client, Upload.TAG, topic, code, reason)
            return [*self._release(client), note]

        limits = self._limits
        limited = limits.take([
            (limits.bucket("upload", client.did, cfg.uploads_per_second_per_identity,
                           cfg.upload_burst_per_identity, now), "upload rate per identity"),
            (limits.bucket("upload-ip", client.ip, cfg.uploads_per_second_per_ip,
                           cfg.upload_burst_per_ip, now), "upload rate per IP address"),
        ], len(frame.items), now)
        if limited:
            return refuse("rate-limited", limited)
        unique: dict[bytes, tuple[int, Envelope, bytes]] = {}  # id -> (index, envelope, raw)
        for i, raw in enumerate(frame.items):
            try:
                env = decode_envelope(raw, topic)
            except RemoteProtocolError as exc:
                return refuse("bad-envelope", f"item {i}: {exc}")
            unique.setdefault(env.id, (i, env, raw))
        entries = list(unique.values())
        verdicts = self._verify([env for _, env, _ in entries])
        for (i, _, _), ok in zip(entries, verdicts, strict=True):
            if not ok:
                # an envelope of another channel is signed over that channel's topic
                return refuse("bad-envelope", f"item {i}: signature does not verify "
                              "(or the envelope belongs to another topic)")
        items = [(env.id, raw) for _, env, raw in entries]
        op = self._op()
        self._checks[op] = _Upload(client.link_id, client.did, topic, items,
                                   len(frame.items) - len(items), slot, client.block)
        return [CheckIds(op, topic, tuple(i for i, _ in items))]

    def _on_checked(self, ev: IdsChecked, wall_ms: int) -> list[ServiceOutput]:
        up = self._checks.pop(ev.op, None)
        if up is None:
            return []
        client = self._clients.get(up.link_id)
        cfg = self.config
        t = self._topics.get(up.topic)

        def refuse(code: str, reason: str) -> list[ServiceOutput]:
            if client is None:
                return []
            up.slot.frame, note = self._refusal(client, Upload.TAG, up.topic, code, reason)
            return [*self._release(client), note]

        if ev.error:
            return refuse("store-error", "the server could not read its store")
        inflight = t.inflight if t is not None else {}
        new = [(i, raw) for i, raw in up.items if i not in ev.known and i not in inflight]
        up.duplicates += len(up.items) - len(new)
        size = sum(len(raw) for _, raw in new)
        if new and (t is None or not t.holds):
            held = sum(1 for x in self._topics.values() if x.holds)
            if held >= cfg.max_topics:
                return refuse("too-many-topics", f"the server holds {held} topics")
        if new and t is not None and (
                t.size + t.pending_size + size > cfg.topic_max_bytes
                or t.count + t.pending_count + len(new) > cfg.topic_max_envelopes):
            return refuse("topic-full",
                          f"the topic holds {t.count + t.pending_count} envelopes, "
                          f"{t.size + t.pending_size} bytes (caps {cfg.topic_max_envelopes}, "
                          f"{cfg.topic_max_bytes})")
        over = self._ledger.over(up.uploader, up.block, size) if new else None
        if over is not None:
            return refuse(*over)
        up.waits = {inflight[i] for i, _ in up.items if i in inflight}
        for op in up.waits:
            self._waiters.setdefault(op, []).append(up)
        if not new:
            return self._answer(up) if not up.waits else []
        t = self._topic(up.topic)
        op = self._op()
        rows = []
        for env_id, raw in new:
            t.last_seq += 1
            rows.append(StoredRow(t.last_seq, env_id, raw))
            t.inflight[env_id] = op
        t.pending_count += len(rows)
        t.pending_size += size
        self._ledger.reserve(up.uploader, up.block, size)
        up.rows, up.size, up.writing = tuple(rows), size, True
        self._appends[op] = up
        return [AppendEnvelopes(op, up.topic, up.rows, up.uploader, wall_ms, up.block)]

    def _on_appended(self, ev: AppendDone) -> list[ServiceOutput]:
        up = self._appends.pop(ev.op, None)
        if up is None:
            return []
        t = self._topics[up.topic]  # kept while it has pending envelopes
        t.pending_count -= len(up.rows)
        t.pending_size -= up.size
        for row in up.rows:
            del t.inflight[row.id]
        self._ledger.written(up.uploader, up.block, up.size, committed=not ev.error)
        up.writing = False
        effects: list[ServiceOutput] = []
        if ev.error:
            up.broken = True
            effects.append(Note("error", "store-write-failed", (("error", ev.error),)))
        else:
            t.count += len(up.rows)
            t.size += up.size
            t.committed = max(t.committed, up.rows[-1].seq)
            self.stats.envelopes_in += len(up.rows)
            self.stats.envelope_bytes_in += up.size
        for waiter in self._waiters.pop(ev.op, []):
            waiter.waits.discard(ev.op)
            waiter.broken |= bool(ev.error)
            if not waiter.waits and not waiter.writing:
                effects += self._answer(waiter)
        if not up.waits:
            effects += self._answer(up)
        if ev.error:
            self._maybe_forget(t)
            return effects
        for link_id in sorted(t.watchers):
            watcher = self._clients[link_id]
            w = watcher.watches[up.topic]
            if not w.live:
                continue  # still reading the backlog: it reads these too
            items = [(r.seq, r.data) for r in up.rows if r.seq > w.cursor]
            w.cursor = t.committed
            if items:
                effects += self._deliver(watcher, up.topic, items, backfill=False)
        return effects + self._trim(t)

    def _answer(self, up: _Upload) -> list[ServiceOutput]:
        """Answer an upload whose envelopes (its own and those it waited for) are written."""
        client = self._clients.get(up.link_id)
        if up.broken:
            if client is None:
                return []
            up.slot.frame, note = self._refusal(client, Upload.TAG, up.topic, "store-error",
                                                "the server could not store the envelopes")
            return [*self._release(client), note]
        self.stats.duplicates += up.duplicates
        if client is None:
            return []
        t = self._topics.get(up.topic)
        up.slot.frame = Uploaded(topic=up.topic, accepted=len(up.rows), duplicates=up.duplicates,
                                 last=t.committed if t is not None else self._seq_floor)
        return self._release(client)

    def _release(self, client: _Client) -> list[ServiceOutput]:
        """Answers to this link's uploads that are due, in request order."""
        effects: list[ServiceOutput] = []
        while client.replies and client.replies[0].frame is not None:
            frame = client.replies.popleft().frame
            assert frame is not None
            effects.append(self._send(client, frame))
        return effects

    # --- watches -----------------------------------------------------------------------------

    def _on_watch(self, client: _Client, frame: Watch, now: float) -> list[ServiceOutput]:
        self.stats.watches += 1
        topic = frame.topic
        limited = self._request_limit(client, now)
        if limited:
            return self._refuse(client, Watch.TAG, topic, "rate-limited", limited)
        if topic not in client.watches and \
                len(client.watches) >= self.config.max_watches_per_link:
            return self._refuse(client, Watch.TAG, topic, "too-many-watches",
                                f"a link may watch {self.config.max_watches_per_link} topics")
        t = self._topic(topic)
        t.watchers.add(client.link_id)
        # a cursor beyond what we hold is from another life of this store: live from here
        w = client.watches[topic] = _Watch(min(frame.cursor, t.committed))
        if w.cursor >= t.committed:
            w.live = True
            return self._deliver(client, topic, [], backfill=False)
        return [self._read(client, topic, w, t)]

    def _read(self, client: _Client, topic: bytes, w: _Watch, t: _Topic) -> ServiceOutput:
        read = self._op()
        self._reads[read] = (client.link_id, topic, w)
        return ReadStored(read, client.link_id, topic, w.cursor, t.committed, MAX_STORED_ITEMS,
                          self.config.stored_frame_bytes)

    def _on_read(self, ev: StoredRead) -> list[ServiceOutput]:
        entry = self._reads.pop(ev.read, None)
        if entry is None:
            return []
        link_id, topic, w = entry
        client = self._clients.get(link_id)
        if client is None or client.watches.get(topic) is not w:
            return []  # the link closed or watched the topic again meanwhile
        t = self._topics[topic]
        if ev.error:
            del client.watches[topic]
            t.watchers.discard(link_id)
            self._maybe_forget(t)
            return [Note("error", "store-read-failed", (("error", ev.error),)),
                    *self._refuse(client, Watch.TAG, topic, "store-error",
                                  "the server could not read its store")]
        items = list(ev.items)
        w.cursor = max(w.cursor, ev.reached, items[-1][0] if items else 0)
        if w.cursor < t.committed:
            effects = self._deliver(client, topic, items, backfill=True) if items else []
            return [*effects, self._read(client, topic, w, t)]
        w.cursor = t.committed
        w.live = True
        return self._deliver(client, topic, items, backfill=False)

    def _on_gone(self, link_id: int) -> list[ServiceOutput]:
        client = self._clients.pop(link_id, None)
        if client is None:
            return []
        for topic in client.watches:
            t = self._topics.get(topic)
            if t is not None:
                t.watchers.discard(link_id)
                self._maybe_forget(t)
        return []

    # --- retention ---------------------------------------------------------------------------

    def _trim(self, t: _Topic) -> list[ServiceOutput]:
        cfg = self.config
        count = t.count - cfg.retention_topic_envelopes
        size = t.size - cfg.retention_topic_bytes
        if t.trimming or (count <= 0 and size <= 0):
            return []
        t.trimming = True
        op = self._op()
        self._prunes[op] = t.topic
        return [TrimTopic(op, t.topic, max(count, 0), max(size, 0))]

    def _on_pruned(self, ev: PruneDone) -> list[ServiceOutput]:
        if ev.op not in self._prunes:
            return []
        trimmed = self._prunes.pop(ev.op)
        effects: list[ServiceOutput] = []
        if ev.error:
            effects.append(Note("error", "retention-failed", (("error", ev.error),)))
        reason = "age" if trimmed is None else "size"
        total = 0
        for r in ev.removed:
            total += r.count
            t = self._topics.get(r.topic)
            if t is not None:
                t.count -= r.count
                t.size -= r.size
            self._ledger.removed(r.uploader, r.source, r.size)
        if total:
            self.stats.pruned[reason] = self.stats.pruned.get(reason, 0) + total
            effects.append(Note("info", "retention", (("reason", reason), ("deleted", total),
                                                      ("topics", len({r.topic for r in
                                                                      ev.removed})))))
        if trimmed is not None and trimmed in self._topics:
            self._topics[trimmed].trimming = False
        for topic in ev.emptied:
            t = self._topics.get(topic)
            if t is not None:
                self._maybe_forget(t)
        if trimmed is None and not ev.error:
            if ev.more:
                op = self._op()
                self._prunes[op] = None
                effects.append(PruneOlder(op, self._age_cutoff, PRUNE_BATCH_ROWS))
            else:
                for t in sorted(self._topics.values(), key=lambda x: x.topic):
                    effects += self._trim(t)
        elif trimmed is not None and trimmed in self._topics:
            effects += self._trim(self._topics[trimmed])  # uploads may have outrun it
        return effects

    def _on_timer(self, now: float, wall_ms: int) -> list[ServiceOutput]:
        effects: list[ServiceOutput] = []
        if now >= self._next_sweep:
            self._next_sweep = now + RECORD_SWEEP_INTERVAL
            effects += self._rendezvous.sweep(wall_ms)
            self._limits.sweep(now)
        if now >= self._next_retention:
            self._next_retention = now + self.config.retention_interval
            effects += self.retention(wall_ms)
        return effects

    def retention(self, wall_ms: int) -> list[ServiceOutput]:
        """Start a retention sweep now (also run by the timer)."""
        if any(p is None for p in self._prunes.values()):
            return []  # the previous sweep is still running
        if self.config.retention_max_age_days > 0:
            self._age_cutoff = wall_ms - self.config.retention_max_age_ms
            op = self._op()
            self._prunes[op] = None
            return [PruneOlder(op, self._age_cutoff, PRUNE_BATCH_ROWS)]
        effects: list[ServiceOutput] = []
        for t in sorted(self._topics.values(), key=lambda x: x.topic):
            effects += self._trim(t)
        return effects


    # --- start ---------------------------------------------------------------------------------

    def _on_loaded(self, ev: StoreLoaded, wall_ms: int) -> list[ServiceOutput]:
        self._seq_floor = max(self._seq_floor, ev.seq_floor)
        for ts in ev.topics:
            t = self._topic(ts.topic)
            t.last_seq = t.committed = max(t.last_seq, ts.last_seq)
            t.count, t.size = ts.count, ts.size
        self._ledger.load(ev.usage, ev.sources)
        self._rendezvous.load(ev.records, wall_ms)
        effects: list[ServiceOutput] = []
        for t in sorted(self._topics.values(), key=lambda x: x.topic):
            if not t.holds:
                self._maybe_forget(t)
            else:
                effects += self._trim(t)
        return effects

