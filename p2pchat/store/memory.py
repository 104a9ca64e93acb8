"""The store port in memory: :class:`MemoryStore`, the reference the SQLite adapter matches.

It keeps what :class:`p2pchat.store.sqlite.SqliteStore` keeps, in plain dicts, and
answers the same way (``tests/conformance`` runs one suite against both): a
write is all or nothing, saving again keeps what was saved first (a cursor only
moves forward), channels load in join order with their envelopes in the order
first saved, expired prekeys go at load, and search follows SQLite FTS5 (the
``unicode61 remove_diacritics 2`` tokenizer, every word a prefix, bm25 rank).

Every async method of the port is a thin wrapper of a plain one, so synchronous
code (the simulator) drives the same store: :meth:`MemoryStore.apply` carries out
a batch of effects and :meth:`MemoryStore.stored_channels`,
:meth:`~MemoryStore.stored_peers`, :meth:`~MemoryStore.stored_cursors` and
:meth:`~MemoryStore.stored_prekeys` are what a node loads at start. Nothing here
is lost by a crash; tests that model lost writes edit the tables themselves
(:mod:`p2pchat.testing.lost_writes`). No I/O.
"""

from __future__ import annotations

import copy
import math
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, assert_never

from p2pchat.core.events import (
    Address,
    Effect,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
    PersistChannel,
    PersistCursor,
    Persistence,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    SavePeer,
    StoredChannel,
)
from p2pchat.store.port import Store, StoreError, StoreOwnerMismatch
from p2pchat.store.rules import owner_mismatch_message, prekey_owner, search_rowid

#: bm25 parameters of SQLite FTS5 (``bm25()`` with its defaults)
_K1 = 1.2
_B = 0.75


@dataclass
class SavedChannel:
    name: str
    key: bytes
    joined: float


@dataclass
class SearchRow:
    channel: bytes
    msg: str
    author: str
    text: str
    #: its tokens, made at the first search (most indexed posts are never searched)
    tokens: tuple[str, ...] | None = None

    def terms(self) -> tuple[str, ...]:
        if self.tokens is None:
            self.tokens = tuple(tokens(self.text))
        return self.tokens


@dataclass
class MemoryStore:
    """The store port in memory (same answers as :class:`p2pchat.store.SqliteStore`)."""

    #: shown in errors where SQLite names its file
    name: str = "memory store"
    owner_did: str | None = None
    #: channel id -> what PersistChannel saved (insertion order breaks join-time ties)
    channels: dict[bytes, SavedChannel] = field(default_factory=dict)
    #: channel id -> envelope id -> envelope, in the order first saved
    envelopes: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    #: channel id -> (covered, snapshot)
    snapshots: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    #: channel id -> epoch id -> group secret
    epoch_keys: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    #: address -> (DID, when last connected)
    peers: dict[Address, tuple[str, float]] = field(default_factory=dict)
    #: (server DID, topic) -> cursor
    cursors: dict[tuple[str, bytes], int] = field(default_factory=dict)
    #: prekey id -> (record, private key, expiry ms)
    prekeys: dict[bytes, tuple[bytes, bytes, int]] = field(default_factory=dict)
    #: search row id (rules.search_rowid) -> the indexed post
    search_rows: dict[int, SearchRow] = field(default_factory=dict)
    #: the next this many writes fail, keeping nothing (tests of store errors)
    fail_writes: int = 0
    closed: bool = False

    # --- plain methods (the simulator calls these) ----------------------------------------

    def apply(self, effects: Iterable[Effect], now: float) -> None:
        """Carry out persistence effects in one atomic step, as ``SqliteStore.write`` does
        in one transaction: channels first, then the rest in order. Raises (keeping
        nothing) on a non-persistence effect, or on an envelope, snapshot or epoch key of
        a channel that is not saved (SQLite's foreign keys)."""
        self._usable()
        batch: list[Persistence] = []
        for effect in effects:
            if not isinstance(effect, Persistence):
                raise TypeError(f"not a persistence effect: {effect!r}")
            batch.append(effect)
        if self.fail_writes:
            self.fail_writes -= 1
            raise StoreError("disk I/O error (simulated)")
        new = {e.channel for e in batch if isinstance(e, PersistChannel)}
        for effect in batch:
            if isinstance(effect, PersistEnvelopes) and not effect.items:
                continue
            if isinstance(effect, PersistEnvelopes | PersistSnapshot | PersistEpochKey) \
                    and effect.channel not in self.channels and effect.channel not in new:
                raise StoreError(f"{type(effect).__name__} for channel "
                                 f"{effect.channel.hex()[:16]}, which is not saved "
                                 "(FOREIGN KEY constraint failed)")
        # nothing below can fail: the batch is applied whole
        for effect in batch:
            if isinstance(effect, PersistChannel) and effect.channel not in self.channels:
                self.channels[effect.channel] = SavedChannel(effect.name, effect.key, now)
        for effect in batch:
            if not isinstance(effect, PersistChannel):
                self._apply_one(effect, now)

    def _apply_one(self, effect: Persistence, now: float) -> None:
        match effect:
            case PersistEnvelopes():
                log = self.envelopes.setdefault(effect.channel, {})
                for env_id, data in effect.items:
                    log.setdefault(env_id, data)
            case IndexMessages():
                for msg, author, text, hidden in effect.rows:
                    rowid = search_rowid(effect.channel, msg, author)
                    self.search_rows.pop(rowid, None)
                    if not hidden:
                        self.search_rows[rowid] = SearchRow(effect.channel, msg, author, text)
            case PersistSnapshot():
                self.snapshots[effect.channel] = (effect.covered, effect.data)
            case SavePeer():
                self.peers[(str(effect.address[0]), int(effect.address[1]))] = (effect.did,
                                                                                now)
            case ForgetPeer():
                self.peers.pop((str(effect.address[0]), int(effect.address[1])), None)
            case PersistPrekey():
                self.prekeys.setdefault(effect.prekey_id,
                                        (effect.record, effect.private, effect.expires_ms))
            case PersistEpochKey():
                self.epoch_keys.setdefault(effect.channel, {}).setdefault(effect.epoch,
                                                                          effect.secret)
            case ForgetEpochKey():
                self.epoch_keys.get(effect.channel, {}).pop(effect.epoch, None)
            case PersistCursor():
                key = (effect.server_did, effect.topic)
                self.cursors[key] = max(self.cursors.get(key, effect.cursor), effect.cursor)
            case PersistChannel():
                pass  # saved first, by apply
            case _:
                assert_never(effect)

    def stored_channels(self) -> list[StoredChannel]:
        """What ``load_channels`` returns: the channels in join order."""
        self._usable()
        out = []
        for cid, saved in sorted(self.channels.items(), key=lambda item: item[1].joined):
            envelopes = tuple(self.envelopes.get(cid, {}).values())
            covered, snapshot = self.snapshots.get(cid, (0, None))
            if covered > len(envelopes):
                covered, snapshot = 0, None  # inconsistent: replay everything instead
            secrets = tuple(sorted(self.epoch_keys.get(cid, {}).items()))
            out.append(StoredChannel(cid, saved.name, saved.key, envelopes, snapshot, covered,
                                     secrets))
        return out

    def stored_peers(self) -> list[tuple[Address, str]]:
        """What ``load_peers`` returns: most recently connected first."""
        self._usable()
        ranked = sorted(self.peers.items(), key=lambda item: -item[1][1])
        return [(address, did) for address, (did, _) in ranked]

    def stored_cursors(self) -> list[tuple[str, bytes, int]]:
        """What ``load_cursors`` returns (in the order first saved)."""
        self._usable()
        return [(server, topic, cursor) for (server, topic), cursor in self.cursors.items()]

    def stored_prekeys(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """What ``load_prekeys`` returns; like it, drops the prekeys expired at ``now_ms``."""
        self._usable()
        for prekey_id in [k for k, (_, _, expires) in self.prekeys.items() if expires <= now_ms]:
            del self.prekeys[prekey_id]
        ranked = sorted(self.prekeys.values(), key=lambda row: row[2])
        return [(record, private) for record, private, _ in ranked]

    def find(self, channel: bytes, query: str, limit: int) -> list[str]:
        """What ``search`` returns: every word a prefix (a word of several tokens, as
        ``foo-bar``, a phrase), ranked by bm25 like FTS5."""
        self._usable()
        phrases = [tuple(tokens(t)) for t in query.replace('"', " ").split() if t]
        phrases = [p for p in phrases if p]  # a word without tokens asks for nothing
        if not phrases:
            return []
        rows = list(self.search_rows.items())
        total = len(rows)
        average = sum(len(r.terms()) for _, r in rows) / total if total else 0.0
        hits = [[_phrase_hits(r.terms(), p) for p in phrases] for _, r in rows]
        docs_with = [sum(1 for h in hits if h[i]) for i in range(len(phrases))]
        idf = [max(math.log((total - n + 0.5) / (n + 0.5)), 1e-6) for n in docs_with]
        ranked: list[tuple[float, int, str]] = []
        for (rowid, row), counts in zip(rows, hits, strict=True):
            if row.channel != channel or not all(counts):
                continue
            norm = _K1 * (1 - _B + _B * len(row.terms()) / average)
            score = 0.0  # summed in FTS5's order, so ties stay ties
            for w, tf in zip(idf, counts, strict=True):
                score += w * ((tf * (_K1 + 1.0)) / (tf + norm))
            ranked.append((-score, rowid, row.msg))
        ranked.sort()
        return [msg for _, _, msg in (ranked[:limit] if limit >= 0 else ranked)]

    def claim_owner(self, did: str) -> None:
        """What ``claim`` does."""
        self._usable()
        owner = self.owner_did
        if owner is None:
            owner = prekey_owner([(record, expires)
                                  for record, _, expires in self.prekeys.values()])
        if owner is not None and owner != did:
            raise StoreOwnerMismatch(owner_mismatch_message(self.name, owner, did))
        if self.owner_did is None:
            self.owner_did = did

    def reopen(self) -> MemoryStore:
        """A new store holding what this one held (a restart; this one is closed)."""
        self.closed = True
        again = copy.deepcopy(self)
        again.closed = False
        again.fail_writes = 0
        return again

    def _usable(self) -> None:
        if self.closed:
            raise StoreError(f"{self.name} is closed")

    # --- the port ---------------------------------------------------------------------------

    async def claim(self, did: str) -> None:
        self.claim_owner(did)

    async def owner(self) -> str | None:
        """The DID recorded as this store's owner (None before :meth:`claim`)."""
        self._usable()
        return self.owner_did

    async def load_channels(self) -> list[StoredChannel]:
        return self.stored_channels()

    async def load_peers(self) -> list[tuple[Address, str]]:
        return self.stored_peers()

    async def load_cursors(self) -> list[tuple[str, bytes, int]]:
        return self.stored_cursors()

    async def load_prekeys(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        return self.stored_prekeys(now_ms)

    async def write(self, effects: list[Effect], now: float) -> None:
        self.apply(effects, now)

    async def search(self, channel: bytes, query: str, limit: int) -> list[str]:
        return self.find(channel, query, limit)

    async def close(self) -> None:
        self.closed = True


def tokens(text: str) -> list[str]:
    """The tokens FTS5's ``unicode61 remove_diacritics 2`` tokenizer makes of ``text``:
    runs of letters, digits and private-use characters (combining marks inside them),
    lower-cased, diacritics removed."""
    out: list[str] = []
    current: list[str] = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] in "LN" or category in ("Co", "Mn"):
            current.append(char)
        elif current:
            out.append(_fold("".join(current)))
            current = []
    if current:
        out.append(_fold("".join(current)))
    return [t for t in out if t]


def _fold(token: str) -> str:
    decomposed = unicodedata.normalize("NFD", token)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


def _phrase_hits(doc: tuple[str, ...], phrase: tuple[str, ...]) -> int:
    """How often ``phrase`` occurs in ``doc``, its last token as a prefix."""
    size = len(phrase)
    *whole, last = phrase
    count = 0
    for i in range(len(doc) - size + 1):
        if doc[i + size - 1].startswith(last) and all(doc[i + j] == t
                                                      for j, t in enumerate(whole)):
            count += 1
    return count


if TYPE_CHECKING:
    def _satisfies_the_port(store: MemoryStore) -> Store:  # checked by mypy, never run
        return store
