"""SQLite store (aiosqlite, WAL), one database per node home.

Schema changes are migrations appended to :data:`MIGRATIONS`; ``PRAGMA
user_version`` records how many ran. Each migration runs in one transaction, so
a crash mid-migration leaves the previous version intact. A database written by
a newer p2pchat (higher version than we know) is refused rather than guessed at.

Durability: ``synchronous=NORMAL`` in WAL mode survives a killed process (what
we promise: SIGKILL at any moment); ``FULL`` would also survive power loss at a
large cost per commit. Every write the user is told about is committed first.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, assert_never

import aiosqlite

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
from p2pchat.store.port import Store, StoreDamaged, StoreError, StoreOwnerMismatch
from p2pchat.store.rules import owner_mismatch_message, prekey_owner, search_rowid

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "StoreDamaged", "StoreError",
           "StoreOwnerMismatch", "is_damage", "prekey_owner", "store_owner", "translate"]


#: SQLite primary result codes that mean the file itself is damaged.
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def is_damage(exc: BaseException) -> bool:
    """Whether a sqlite3 error says the database file is damaged (not locked, not I/O)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # the extended code; low byte: primary
    if isinstance(code, int):
        return (code & 0xFF) in _DAMAGE_CODES
    return "malformed" in str(exc) or "not a database" in str(exc)


def damaged(path: Path, detail: str) -> StoreDamaged:
    """The one-line error for a damaged database file."""
    detail = " ".join(detail.split())[:200]
    return StoreDamaged(f"{path} is damaged (sqlite: {detail}); restore it from a backup "
                        "or move it away")


def translate(path: Path, exc: sqlite3.Error) -> StoreError:
    """A sqlite3 error at this store's boundary, as a one-line StoreError."""
    if is_damage(exc):
        return damaged(path, str(exc))
    return StoreError(f"cannot open database {path}: {exc}")


def store_owner(path: Path) -> str | None:
    """The DID the database at ``path`` belongs to, without changing it: recorded, else
    that of its own prekeys; None if it names nobody. Raises StoreError (damage)."""
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise translate(path, exc) from None
    try:
        db.execute("PRAGMA query_only=ON")
        tables = {str(r[0]) for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "owner" in tables:
            row = db.execute("SELECT did FROM owner").fetchone()
            if row is not None:
                return str(row[0])
        if "prekeys" in tables:
            return prekey_owner([(bytes(r), int(e)) for r, e in
                                 db.execute("SELECT record, expires FROM prekeys")])
        return None
    except sqlite3.Error as exc:
        raise translate(path, exc) from None
    finally:
        db.close()


MIGRATIONS: tuple[str, ...] = (
    # 1: peers this node keeps reconnecting to
    """
    CREATE TABLE peers (
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        did TEXT NOT NULL,
        last_connected REAL NOT NULL,
        PRIMARY KEY (host, port)
    );
    """,
    # 2: channels, their envelopes in local (causal) order, and message search
    """
    CREATE TABLE channels (
        id BLOB PRIMARY KEY,
        name TEXT NOT NULL,
        key BLOB NOT NULL,
        joined REAL NOT NULL
    );
    CREATE TABLE envelopes (
        pos INTEGER PRIMARY KEY AUTOINCREMENT,
        channel BLOB NOT NULL REFERENCES channels(id),
        id BLOB NOT NULL,
        data BLOB NOT NULL,
        UNIQUE (channel, id)
    );
    CREATE VIRTUAL TABLE message_search USING fts5 (
        channel UNINDEXED, msg UNINDEXED, author UNINDEXED, text,
        tokenize = 'unicode61 remove_diacritics 2'
    );
    """,
    # 3: channel snapshots (document + index), covering the first `covered` envelopes
    """
    CREATE TABLE snapshots (
        channel BLOB PRIMARY KEY REFERENCES channels(id),
        covered INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    """,
    # 4: how far each bootstrap server's topic has been read
    """
    CREATE TABLE server_cursors (
        server TEXT NOT NULL,
        topic BLOB NOT NULL,
        cursor INTEGER NOT NULL,
        PRIMARY KEY (server, topic)
    );
    """,
    # 5: this node's prekeys (private keys: the file is 0600)
    """
    CREATE TABLE prekeys (
        id BLOB PRIMARY KEY,
        record BLOB NOT NULL,
        private BLOB NOT NULL,
        expires INTEGER NOT NULL
    );
    """,
    # 6: the keyring: group secrets of the epochs this node can read (0600 as well)
    """
    CREATE TABLE epoch_keys (
        channel BLOB NOT NULL REFERENCES channels(id),
        epoch BLOB NOT NULL,
        secret BLOB NOT NULL,
        PRIMARY KEY (channel, epoch)
    );
    """,
    # 7: envelopes in wire v2 (protocol.md §8.1); loading a channel reads its rows in order
    """
    CREATE INDEX IF NOT EXISTS envelopes_by_channel ON envelopes (channel, pos);
    """,
    # 8: the DID this store belongs to (one row); filled in by SqliteStore.claim
    """
    CREATE TABLE owner (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        did TEXT NOT NULL
    );
    """,
)
#: The migration from which stored envelopes are in wire v2: older rows cannot be read.
WIRE_V2_MIGRATION = 7
SCHEMA_VERSION = len(MIGRATIONS)


class SqliteStore:
    """The store port (:class:`p2pchat.store.port.Store`) on one SQLite file."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise translate(path, exc) from None
        try:
            # The node runs with umask 077; this keeps the file private for other callers too.
            os.chmod(path, 0o600)
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db, path)
            await store._check()
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await store._migrate()
        except BaseException as exc:
            await db.close()  # its worker thread would otherwise keep the process alive
            if isinstance(exc, sqlite3.Error):
                raise translate(path, exc) from None
            raise
        return store

    async def _check(self) -> None:
        """Refuse a damaged file before anything reads or writes it: a page that fails
        later would fail a write the user was promised, or crash the start."""
        async with self._db.execute("PRAGMA quick_check(1)") as cur:
            row = await cur.fetchone()
        verdict = str(row[0]) if row else "no answer to quick_check"
        if verdict != "ok":
            raise damaged(self.path, verdict)

    async def claim(self, did: str) -> None:
        """Check that this store belongs to ``did`` and record it if nothing was recorded
        yet (a new store, or one from before migration 8: then its own prekeys say whose
        it is). Raises StoreOwnerMismatch, writing nothing, if it is another DID's."""
        async with self._db.execute("SELECT did FROM owner") as cur:
            row = await cur.fetchone()
        owner = str(row[0]) if row is not None else None
        if owner is None:
            async with self._db.execute("SELECT record, expires FROM prekeys") as cur:
                records = [(bytes(r), int(e)) for r, e in await cur.fetchall()]
            owner = prekey_owner(records)
        if owner is not None and owner != did:
            raise StoreOwnerMismatch(owner_mismatch_message(str(self.path), owner, did))
        if row is None:
            await self._db.execute("INSERT INTO owner (one, did) VALUES (1, ?)", (did,))

    async def owner(self) -> str | None:
        """The DID recorded as this store's owner (None before :meth:`claim`)."""
        async with self._db.execute("SELECT did FROM owner") as cur:
            row = await cur.fetchone()
        return str(row[0]) if row is not None else None

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, this p2pchat knows "
                f"{SCHEMA_VERSION}: upgrade p2pchat")
        if 2 <= version < WIRE_V2_MIGRATION:
            await self._refuse_wire_v1()
        for number in range(version, SCHEMA_VERSION):
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        await self._db.execute(statement)
                await self._db.execute(f"PRAGMA user_version={number + 1}")
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def _refuse_wire_v1(self) -> None:
        """A home written before wire v2 holds envelopes this version cannot verify (their
        signatures cover other bytes): refuse it, untouched, rather than lose it."""
        async with self._db.execute("SELECT data FROM envelopes LIMIT 1") as cur:
            row = await cur.fetchone()
        if row is not None and bytes(row[0])[:1] == b"\x92":
            raise StoreError(
                f"database {self.path} holds channels in envelope format v1 (p2pchat before "
                "wire v2); this version cannot read them: move the node home aside and "
                "start a new one (docs/operations.md)")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def save_peer(self, address: Address, did: str, when: float) -> None:
        await self._db.execute(
            "INSERT INTO peers (host, port, did, last_connected) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (host, port) DO UPDATE SET did = excluded.did, "
            "last_connected = excluded.last_connected",
            (address[0], address[1], did, when),
        )

    async def load_peers(self) -> list[tuple[Address, str]]:
        async with self._db.execute(
            "SELECT host, port, did FROM peers ORDER BY last_connected DESC"
        ) as cur:
            rows = await cur.fetchall()
        return [((str(h), int(p)), str(d)) for h, p, d in rows]

    async def save_cursor(self, server: str, topic: bytes, cursor: int) -> None:
        await self._db.execute(
            "INSERT INTO server_cursors (server, topic, cursor) VALUES (?, ?, ?) "
            "ON CONFLICT (server, topic) DO UPDATE SET cursor = max(cursor, excluded.cursor)",
            (server, topic, cursor))

    async def load_cursors(self) -> list[tuple[str, bytes, int]]:
        async with self._db.execute("SELECT server, topic, cursor FROM server_cursors") as cur:
            rows = await cur.fetchall()
        return [(str(s), bytes(t), int(c)) for s, t, c in rows]

    async def save_prekey(self, prekey_id: bytes, record: bytes, private: bytes,
                          expires: int) -> None:
        await self._db.execute(
            "INSERT INTO prekeys (id, record, private, expires) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING", (prekey_id, record, private, expires))

    async def load_prekeys(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """(record, private) of the prekeys that have not expired; expired ones go."""
        await self._db.execute("DELETE FROM prekeys WHERE expires <= ?", (now_ms,))
        async with self._db.execute(
                "SELECT record, private FROM prekeys ORDER BY expires") as cur:
            rows = await cur.fetchall()
        return [(bytes(r), bytes(p)) for r, p in rows]

    async def forget_peer(self, address: Address) -> None:
        await self._db.execute("DELETE FROM peers WHERE host = ? AND port = ?", address)

    # --- channels -----------------------------------------------------------------

    async def save_channel(self, channel: bytes, name: str, key: bytes, when: float) -> None:
        await self._db.execute(
            "INSERT INTO channels (id, name, key, joined) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING", (channel, name, key, when))

    async def save_epoch_key(self, channel: bytes, epoch: bytes, secret: bytes) -> None:
        await self._db.execute(
            "INSERT INTO epoch_keys (channel, epoch, secret) VALUES (?, ?, ?) "
            "ON CONFLICT (channel, epoch) DO NOTHING", (channel, epoch, secret))

    async def forget_epoch_key(self, channel: bytes, epoch: bytes) -> None:
        await self._db.execute("DELETE FROM epoch_keys WHERE channel = ? AND epoch = ?",
                               (channel, epoch))

    async def save_envelopes(self, channel: bytes, items: list[tuple[bytes, bytes]]) -> None:
        await self._db.executemany(
            "INSERT INTO envelopes (channel, id, data) VALUES (?, ?, ?) "
            "ON CONFLICT (channel, id) DO NOTHING", [(channel, i, d) for i, d in items])

    async def index_messages(self, channel: bytes,
                             rows: list[tuple[str, str, str, bool]]) -> None:
        """Replace the search rows of these messages (hidden ones are only removed).

        Each post has a fixed FTS rowid derived from (channel, id, author), so an
        update deletes by rowid instead of scanning the index.
        """
        keyed = [(search_rowid(channel, msg, author), msg, author, text, hidden)
                 for msg, author, text, hidden in rows]
        await self._db.executemany("DELETE FROM message_search WHERE rowid = ?",
                                   [(rowid,) for rowid, *_ in keyed])
        await self._db.executemany(
            "INSERT INTO message_search (rowid, channel, msg, author, text) "
            "VALUES (?, ?, ?, ?, ?)",
            [(rowid, channel, msg, author, text)
             for rowid, msg, author, text, hidden in keyed if not hidden])

    async def save_snapshot(self, channel: bytes, data: bytes, covered: int) -> None:
        await self._db.execute(
            "INSERT INTO snapshots (channel, covered, data) VALUES (?, ?, ?) "
            "ON CONFLICT (channel) DO UPDATE SET covered = excluded.covered, data = excluded.data",
            (channel, covered, data))

    async def load_channels(self) -> list[StoredChannel]:
        async with self._db.execute("SELECT id, name, key FROM channels ORDER BY joined") as cur:
            channels = await cur.fetchall()
        out = []
        for cid, name, key in channels:
            async with self._db.execute(
                    "SELECT data FROM envelopes WHERE channel = ? ORDER BY pos", (cid,)) as cur:
                rows = await cur.fetchall()
            async with self._db.execute(
                    "SELECT covered, data FROM snapshots WHERE channel = ?", (cid,)) as cur:
                snap = await cur.fetchone()
            covered, data = (int(snap[0]), bytes(snap[1])) if snap else (0, None)
            envelopes = tuple(bytes(r[0]) for r in rows)
            if covered > len(envelopes):
                covered, data = 0, None  # inconsistent: replay everything instead
            async with self._db.execute(
                    "SELECT epoch, secret FROM epoch_keys WHERE channel = ?", (cid,)) as cur:
                secrets = tuple((bytes(e), bytes(k)) for e, k in await cur.fetchall())
            out.append(StoredChannel(bytes(cid), str(name), bytes(key), envelopes, data,
                                     covered, secrets))
        return out

    async def search(self, channel: bytes, query: str, limit: int) -> list[str]:
        """Message ids matching every word of ``query``, each as a prefix (no operators)."""
        terms = [t for t in query.replace('"', " ").split() if t]
        if not terms:
            return []
        match = " ".join(f'"{t}"*' for t in terms)
        async with self._db.execute(
                "SELECT msg FROM message_search WHERE channel = ? AND message_search MATCH ? "
                "ORDER BY rank LIMIT ?", (channel, match, limit)) as cur:
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def transaction(self, writes: list[Callable[[], Awaitable[None]]]) -> None:
        """Run several writes in one transaction (one fsync of the WAL)."""
        await self._db.execute("BEGIN")
        try:
            for write in writes:
                await write()
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def write(self, effects: list[Effect], now: float) -> None:
        """Carry out the core's persistence effects, in order, in one transaction.

        Runs of envelopes or index rows for one channel become one ``executemany``
        each: a burst of sends costs a handful of statements, not two per message.
        """
        # Order that matters is kept: channels before their envelopes, envelopes in
        # order, snapshots after the envelopes they cover, peer changes in order; an
        # index row replaces an earlier one for the same post.
        channels = [e for e in effects if isinstance(e, PersistChannel)]
        envelopes: dict[bytes, list[tuple[bytes, bytes]]] = {}
        index: dict[bytes, dict[tuple[str, str], tuple[str, str, str, bool]]] = {}
        rest: list[Persistence] = []
        for effect in effects:
            if not isinstance(effect, Persistence):
                raise TypeError(f"not a persistence effect: {effect!r}")
            if isinstance(effect, PersistEnvelopes):
                envelopes.setdefault(effect.channel, []).extend(effect.items)
            elif isinstance(effect, IndexMessages):
                rows = index.setdefault(effect.channel, {})
                for row in effect.rows:
                    rows[(row[0], row[1])] = row
            elif not isinstance(effect, PersistChannel):
                rest.append(effect)
        merged: list[Persistence] = [*channels]
        merged += [PersistEnvelopes(c, tuple(items)) for c, items in envelopes.items()]
        merged += [IndexMessages(c, tuple(rows.values())) for c, rows in index.items()]
        merged += rest
        await self.transaction([self._writer_for(effect, now) for effect in merged])

    def _writer_for(self, effect: Persistence, now: float) -> Callable[[], Awaitable[None]]:
        match effect:
            case PersistEnvelopes():
                return lambda: self.save_envelopes(effect.channel, list(effect.items))
            case IndexMessages():
                return lambda: self.index_messages(effect.channel, list(effect.rows))
            case PersistChannel():
                return lambda: self.save_channel(effect.channel, effect.name, effect.key, now)
            case PersistSnapshot():
                return lambda: self.save_snapshot(effect.channel, effect.data, effect.covered)
            case SavePeer():
                return lambda: self.save_peer(effect.address, effect.did, now)
            case ForgetPeer():
                return lambda: self.forget_peer(effect.address)
            case PersistPrekey():
                return lambda: self.save_prekey(effect.prekey_id, effect.record,
                                                effect.private, effect.expires_ms)
            case PersistEpochKey():
                return lambda: self.save_epoch_key(effect.channel, effect.epoch,
                                                   effect.secret)
            case ForgetEpochKey():
                return lambda: self.forget_epoch_key(effect.channel, effect.epoch)
            case PersistCursor():
                return lambda: self.save_cursor(effect.server_did, effect.topic,
                                                effect.cursor)
            case _:
                assert_never(effect)

    async def close(self) -> None:
        try:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            if not is_damage(exc):
                raise
            # damaged: the error that found it is the one to report, not this one
        finally:
            await self._db.close()



if TYPE_CHECKING:
    def _satisfies_the_port(store: SqliteStore) -> Store:  # checked by mypy, never run
        return store
