"""Testing kit for the bootstrap service: an in-memory store and a synchronous harness.

:class:`MemoryStore` is the reference implementation of the store port (the
effects in :mod:`bootstrap.events`): the SQLite adapter must answer every effect
the same way (a shared conformance test runs both). :class:`ServiceHarness` drives
a :class:`BootstrapService` with fake links, a hand-moved clock and the memory
store, carrying out effects in order, so tests see exactly the frames each link
would receive. Set ``harness.auto = False`` to hold store work and release it
with :meth:`ServiceHarness.run`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import assert_never

from bootstrap.config import ServiceConfig
from bootstrap.events import (
    AppendDone,
    AppendEnvelopes,
    CheckIds,
    ClientGone,
    ClientLinked,
    DeleteRecords,
    FrameArrived,
    IdsChecked,
    Note,
    PruneDone,
    PruneOlder,
    ReadStored,
    Removal,
    SaveRecord,
    ServiceEvent,
    ServiceOutput,
    StoreAnswer,
    StoredRead,
    StoredRecord,
    StoreEffect,
    StoreLoaded,
    TopicState,
    TrimTopic,
)
from bootstrap.service import BootstrapService
from p2pchat.core.events import CloseLink, TimerExpired, Transmit
from p2pchat.identity import Identity
from p2pchat.wire import Frame, FrameDecoder


@dataclass
class _Row:
    id: bytes
    data: bytes
    uploader: str
    received_ms: int
    source: str = ""


@dataclass
class MemoryStore:
    """The store port in memory (same answers as :class:`bootstrap.store.ServerStore`)."""

    envelopes: dict[bytes, dict[int, _Row]] = field(default_factory=dict)
    last_seq: dict[bytes, int] = field(default_factory=dict)
    records: dict[tuple[bytes, str], StoredRecord] = field(default_factory=dict)
    seq_floor: int = 0
    #: make the next write fail (tests of store errors)
    fail_writes: bool = False

    def load(self, wall_ms: int) -> StoreLoaded:
        topics = tuple(TopicState(t, last, len(self.envelopes.get(t, {})),
                                  sum(len(r.data) for r in self.envelopes.get(t, {}).values()))
                       for t, last in sorted(self.last_seq.items()))
        usage: dict[str, int] = {}
        sources: dict[str, int] = {}
        for rows in self.envelopes.values():
            for row in rows.values():
                usage[row.uploader] = usage.get(row.uploader, 0) + len(row.data)
                if row.source:
                    sources[row.source] = sources.get(row.source, 0) + len(row.data)
        records = tuple(r for _, r in sorted(self.records.items()) if r.expires_ms > wall_ms)
        return StoreLoaded(topics, tuple(sorted(usage.items())), records, self.seq_floor,
                           tuple(sorted(sources.items())))

    def execute(self, effect: StoreEffect) -> StoreAnswer | None:
        if self.fail_writes and isinstance(effect, AppendEnvelopes):
            self.fail_writes = False
            return AppendDone(effect.op, "disk I/O error (simulated)")
        if isinstance(effect, CheckIds):
            ids = {r.id for r in self.envelopes.get(effect.topic, {}).values()}
            return IdsChecked(effect.op, frozenset(i for i in effect.ids if i in ids))
        if isinstance(effect, AppendEnvelopes):
            rows = self.envelopes.setdefault(effect.topic, {})
            known = {r.id for r in rows.values()}
            for new in effect.rows:
                assert new.seq not in rows and new.id not in known, "the service double-stored"
                rows[new.seq] = _Row(new.id, new.data, effect.uploader, effect.received_ms,
                                     effect.source)
            self.last_seq[effect.topic] = max(self.last_seq.get(effect.topic, 0),
                                              effect.rows[-1].seq)
            return AppendDone(effect.op)
        if isinstance(effect, ReadStored):
            return self.read(effect)
        if isinstance(effect, PruneOlder):
            old = sorted(((r.received_ms, t, seq) for t, rows in self.envelopes.items()
                          for seq, r in rows.items() if r.received_ms < effect.cutoff_ms))
            more = len(old) > effect.max_rows
            return self._delete(effect.op, [(t, seq) for _, t, seq in old[:effect.max_rows]],
                                more)
        if isinstance(effect, TrimTopic):
            doomed: list[tuple[bytes, int]] = []
            size = 0
            for seq, row in sorted(self.envelopes.get(effect.topic, {}).items()):
                if len(doomed) >= effect.count and size >= effect.size:
                    break
                doomed.append((effect.topic, seq))
                size += len(row.data)
            return self._delete(effect.op, doomed, False)
        if isinstance(effect, SaveRecord):
            self.records[(effect.record.topic, effect.record.did)] = effect.record
            return None
        if isinstance(effect, DeleteRecords):
            for key in [k for k, r in self.records.items() if r.expires_ms <= effect.expired_ms]:
                del self.records[key]
            return None
        assert_never(effect)

    def read(self, effect: ReadStored) -> StoredRead:
        items: list[tuple[int, bytes]] = []
        size = 0
        rows = self.envelopes.get(effect.topic, {})
        for seq in sorted(s for s in rows if effect.after < s <= effect.upto):
            data = rows[seq].data
            if items and (len(items) >= effect.max_items or size + len(data) > effect.max_bytes):
                return StoredRead(effect.read, tuple(items), items[-1][0])
            items.append((seq, data))
            size += len(data)
        return StoredRead(effect.read, tuple(items), effect.upto)

    def _delete(self, op: int, doomed: list[tuple[bytes, int]], more: bool) -> PruneDone:
        removed: dict[tuple[bytes, str, str], list[int]] = {}
        for topic, seq in doomed:
            row = self.envelopes[topic].pop(seq)
            entry = removed.setdefault((topic, row.uploader, row.source), [0, 0])
            entry[0] += 1
            entry[1] += len(row.data)
        emptied = []
        for topic in sorted({t for t, _ in doomed}):
            if not self.envelopes[topic]:
                del self.envelopes[topic]
                self.seq_floor = max(self.seq_floor, self.last_seq.pop(topic, 0))
                emptied.append(topic)
        return PruneDone(op, tuple(Removal(t, u, c, s, src) for (t, u, src), (c, s)
                                   in sorted(removed.items())), tuple(emptied), more)


class ServiceHarness:
    """A service, its memory store and fake links, on a clock that moves by hand."""

    def __init__(self, config: ServiceConfig | None = None, *, store: MemoryStore | None = None,
                 now: float = 1000.0, wall_ms: int = 1_700_000_000_000) -> None:
        self.config = config or ServiceConfig()
        self.store = store or MemoryStore()
        self.now = now
        self.wall_ms = wall_ms
        self.service = BootstrapService(self.config, now)
        self.auto = True
        self.queue: deque[StoreEffect] = deque()
        self.frames: dict[int, list[Frame]] = {}
        self.closed: dict[int, str] = {}
        self.notes: list[Note] = []
        self._decoders: dict[int, FrameDecoder] = {}
        self._next_link = 1
        self.feed(self.store.load(wall_ms))

    # --- driving -----------------------------------------------------------------------

    def feed(self, event: ServiceEvent | TimerExpired) -> None:
        self._execute(self.service.handle(event, self.now, self.wall_ms))

    def link(self, identity: Identity | str, ip: str = "10.0.0.1") -> int:
        """A fake link from ``ip`` (the address the transport would report)."""
        did = identity if isinstance(identity, str) else identity.did
        link_id = self._next_link
        self._next_link += 1
        self.frames[link_id] = []
        self._decoders[link_id] = FrameDecoder()
        self.feed(ClientLinked(link_id, did, (ip, 40000 + link_id)))
        return link_id

    def unlink(self, link_id: int) -> None:
        self.feed(ClientGone(link_id))

    def send(self, link_id: int, *frames: Frame) -> list[Frame]:
        """Deliver ``frames`` from a link; returns (and takes) what that link received
        meanwhile. Frames it had received before stay for :meth:`take`."""
        mark = len(self.frames[link_id])
        for frame in frames:
            self.feed(FrameArrived(link_id, frame))
        got = self.frames[link_id][mark:]
        del self.frames[link_id][mark:]
        return got

    def take(self, link_id: int) -> list[Frame]:
        frames, self.frames[link_id] = self.frames[link_id], []
        return frames

    def advance(self, seconds: float) -> None:
        """Move both clocks; fire the timer if it is due."""
        self.now += seconds
        self.wall_ms += int(seconds * 1000)
        if self.service.next_deadline() <= self.now:
            self.feed(TimerExpired())

    def run(self, limit: int | None = None) -> int:
        """Carry out queued store work (all, or ``limit`` effects), answers included."""
        done = 0
        while self.queue and (limit is None or done < limit):
            effect = self.queue.popleft()
            done += 1
            answer = self.store.execute(effect)
            if answer is not None:
                self.feed(answer)
        return done

    def _execute(self, effects: Iterable[ServiceOutput]) -> None:
        for effect in effects:
            match effect:
                case Transmit():
                    self.frames[effect.link_id] += self._decoders[effect.link_id].feed(
                        effect.data)
                case CloseLink():
                    self.closed[effect.link_id] = effect.reason
                case Note():
                    self.notes.append(effect)
                case CheckIds() | AppendEnvelopes() | ReadStored() | PruneOlder() \
                        | TrimTopic() | SaveRecord() | DeleteRecords():
                    self.queue.append(effect)
                case _:
                    assert_never(effect)
        if self.auto:
            self.run()
