"""The server's SQLite store (aiosqlite, WAL): the store port of :mod:`bootstrap.events`.

It answers the service's store effects exactly like :class:`bootstrap.testing.MemoryStore`
(a conformance test runs both). Writes (and id checks) go through :meth:`execute`,
one transaction per batch, in order; the caller reports answers only after the
commit, so an ``uploaded`` is never sent for envelopes that are not on disk.
Backfill reads use a second connection (:meth:`read`), which in WAL mode sees only
committed data and runs beside the writer.

Schema changes are migrations appended to :data:`MIGRATIONS` (``PRAGMA
user_version`` counts those applied; one transaction each); a database from a
newer server is refused. ``synchronous=NORMAL``: a commit survives the process
being killed (SIGKILL), not necessarily a power cut (see docs/operations.md).

The server holds no channel keys, so nothing here can be decrypted; envelope
headers (channel id, author DID) are stored as they came.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import assert_never

import aiosqlite

from bootstrap.events import (
    AppendDone,
    AppendEnvelopes,
    CheckIds,
    DeleteRecords,
    IdsChecked,
    PruneDone,
    PruneOlder,
    ReadStored,
    Removal,
    SaveRecord,
    StoreAnswer,
    StoredRead,
    StoredRecord,
    StoreLoaded,
    StoreWrite,
    TopicState,
    TrimTopic,
)
from p2pchat.errors import LocalError


class StoreError(LocalError):
    """The database is unusable (corrupt, locked, from a newer server)."""


MIGRATIONS: tuple[str, ...] = (
    # 1: topics, envelopes per topic with server seqs, peer records, counters
    """
    CREATE TABLE topics (
        topic BLOB PRIMARY KEY,
        last_seq INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE envelopes (
        topic BLOB NOT NULL,
        seq INTEGER NOT NULL,
        id BLOB NOT NULL,
        uploader TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (topic, seq),
        UNIQUE (topic, id)
    );
    CREATE INDEX envelopes_received ON envelopes (received_ms);
    CREATE TABLE records (
        topic BLOB NOT NULL,
        did TEXT NOT NULL,
        record BLOB NOT NULL,
        signature BLOB NOT NULL,
        expires_ms INTEGER NOT NULL,
        announced_ms INTEGER NOT NULL,
        PRIMARY KEY (topic, did)
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    # 2: the address block each envelope was uploaded from (the address budget); rows
    # stored before are attributed to none ("") and count only against their uploader
    """
    ALTER TABLE envelopes ADD COLUMN source TEXT NOT NULL DEFAULT '';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


async def _connect(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        await db.close()
        raise
    return db


class ServerStore:
    def __init__(self, db: aiosqlite.Connection, reader: aiosqlite.Connection, path: Path
                 ) -> None:
        self._db = db
        self._reader = reader
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> ServerStore:
        try:
            db = await _connect(path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            os.chmod(path, 0o600)
            await _migrate(db, path)
            reader = await _connect(path)
        except BaseException as exc:
            await db.close()  # its worker thread would otherwise keep the process alive
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open database {path}: {exc}") from exc
            raise
        return cls(db, reader, path)

    async def close(self) -> None:
        try:
            await self._reader.close()
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            await self._db.close()

    async def schema_version(self) -> int:
        return await _user_version(self._db)

    # --- start ------------------------------------------------------------------------

    async def load(self, wall_ms: int) -> StoreLoaded:
        db = self._db
        async with db.execute(
                "SELECT t.topic, t.last_seq, COUNT(e.seq), COALESCE(SUM(e.size), 0) "
                "FROM topics t LEFT JOIN envelopes e ON e.topic = t.topic "
                "GROUP BY t.topic ORDER BY t.topic") as cur:
            topics = tuple(TopicState(bytes(t), int(last), int(n), int(size))
                           for t, last, n, size in await cur.fetchall())
        async with db.execute("SELECT uploader, SUM(size) FROM envelopes GROUP BY uploader "
                              "ORDER BY uploader") as cur:
            usage = tuple((str(u), int(s)) for u, s in await cur.fetchall())
        async with db.execute("SELECT source, SUM(size) FROM envelopes WHERE source != '' "
                              "GROUP BY source ORDER BY source") as cur:
            sources = tuple((str(u), int(s)) for u, s in await cur.fetchall())
        async with db.execute(
                "SELECT topic, did, record, signature, expires_ms, announced_ms FROM records "
                "WHERE expires_ms > ? ORDER BY topic, did", (wall_ms,)) as cur:
            records = tuple(StoredRecord(bytes(t), str(d), bytes(r), bytes(s), int(e), int(a))
                            for t, d, r, s, e, a in await cur.fetchall())
        return StoreLoaded(topics, usage, records, await _floor(db), sources)

    # --- the port ---------------------------------------------------------------------

    async def execute(self, effects: Sequence[StoreWrite]) -> list[StoreAnswer | None]:
        """Carry out store effects in order in one transaction; their answers (None for
        effects without one). If the transaction fails, every answer says so."""
        db = self._db
        await db.execute("BEGIN IMMEDIATE")
        try:
            answers = [await self._one(effect) for effect in effects]
            await db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                await db.execute("ROLLBACK")
            return [_failed(effect, f"{type(exc).__name__}: {exc}") for effect in effects]
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        return answers

    async def _one(self, effect: StoreWrite) -> StoreAnswer | None:
        db = self._db
        if isinstance(effect, CheckIds):
            if not effect.ids:
                return IdsChecked(effect.op, frozenset())
            marks = ",".join("?" * len(effect.ids))
            async with db.execute(f"SELECT id FROM envelopes WHERE topic = ? AND id IN ({marks})",
                                  (effect.topic, *effect.ids)) as cur:
                known = frozenset(bytes(r[0]) for r in await cur.fetchall())
            return IdsChecked(effect.op, known)
        if isinstance(effect, AppendEnvelopes):
            await db.executemany(
                "INSERT INTO envelopes (topic, seq, id, uploader, received_ms, size, data, "
                "source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(effect.topic, r.seq, r.id, effect.uploader, effect.received_ms, len(r.data),
                  r.data, effect.source) for r in effect.rows])
            await db.execute(
                "INSERT INTO topics (topic, last_seq, created_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (topic) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                (effect.topic, effect.rows[-1].seq, effect.received_ms))
            return AppendDone(effect.op)
        if isinstance(effect, PruneOlder):
            async with db.execute(
                    "SELECT rowid, topic, uploader, size, source FROM envelopes "
                    "WHERE received_ms < ? ORDER BY received_ms, rowid LIMIT ?",
                    (effect.cutoff_ms, effect.max_rows + 1)) as cur:
                rows = [(int(r), bytes(t), str(u), int(s), str(src))
                        for r, t, u, s, src in await cur.fetchall()]
            more = len(rows) > effect.max_rows
            return await self._delete(effect.op, rows[:effect.max_rows], more)
        if isinstance(effect, TrimTopic):
            doomed: list[tuple[int, bytes, str, int, str]] = []
            count = size = 0
            async with db.execute("SELECT rowid, uploader, size, source FROM envelopes "
                                  "WHERE topic = ? ORDER BY seq", (effect.topic,)) as cur:
                async for rowid, uploader, row_size, source in cur:
                    if count >= effect.count and size >= effect.size:
                        break
                    doomed.append((int(rowid), effect.topic, str(uploader), int(row_size),
                                   str(source)))
                    count += 1
                    size += int(row_size)
            return await self._delete(effect.op, doomed, False)
        if isinstance(effect, SaveRecord):
            r = effect.record
            await db.execute(
                "INSERT INTO records (topic, did, record, signature, expires_ms, announced_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (topic, did) DO UPDATE SET "
                "record = excluded.record, signature = excluded.signature, "
                "expires_ms = excluded.expires_ms, announced_ms = excluded.announced_ms",
                (r.topic, r.did, r.record, r.signature, r.expires_ms, r.announced_ms))
            return None
        if isinstance(effect, DeleteRecords):
            await db.execute("DELETE FROM records WHERE expires_ms <= ?", (effect.expired_ms,))
            return None
        assert_never(effect)

    async def _delete(self, op: int, rows: list[tuple[int, bytes, str, int, str]], more: bool
                      ) -> PruneDone:
        db = self._db
        await db.executemany("DELETE FROM envelopes WHERE rowid = ?", [(r[0],) for r in rows])
        removed: dict[tuple[bytes, str, str], list[int]] = {}
        for _, topic, uploader, size, source in rows:
            entry = removed.setdefault((topic, uploader, source), [0, 0])
            entry[0] += 1
            entry[1] += size
        emptied: list[bytes] = []
        floor = None
        for topic in sorted({r[1] for r in rows}):
            async with db.execute("SELECT 1 FROM envelopes WHERE topic = ? LIMIT 1",
                                  (topic,)) as cur:
                if await cur.fetchone() is not None:
                    continue
            async with db.execute("SELECT last_seq FROM topics WHERE topic = ?", (topic,)) as cur:
                row = await cur.fetchone()
            floor = max(floor or await _floor(db), int(row[0]) if row else 0)
            await db.execute("DELETE FROM topics WHERE topic = ?", (topic,))
            emptied.append(topic)
        if floor is not None:
            await db.execute("INSERT INTO meta (key, value) VALUES ('seq_floor', ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (floor,))
        return PruneDone(op, tuple(Removal(t, u, c, s, src) for (t, u, src), (c, s)
                                   in sorted(removed.items())), tuple(emptied), more)

    async def read(self, effect: ReadStored) -> StoredRead:
        """A backfill read on the reader connection (committed data only)."""
        items: list[tuple[int, bytes]] = []
        size = 0
        try:
            async with self._reader.execute(
                    "SELECT seq, data FROM envelopes WHERE topic = ? AND seq > ? AND seq <= ? "
                    "ORDER BY seq LIMIT ?",
                    (effect.topic, effect.after, effect.upto, effect.max_items + 1)) as cur:
                async for seq, data in cur:
                    if items and (len(items) >= effect.max_items
                                  or size + len(data) > effect.max_bytes):
                        return StoredRead(effect.read, tuple(items), items[-1][0])
                    items.append((int(seq), bytes(data)))
                    size += len(data)
        except sqlite3.Error as exc:
            return StoredRead(effect.read, (), effect.after, f"{type(exc).__name__}: {exc}")
        return StoredRead(effect.read, tuple(items), effect.upto)

    def disk_bytes(self) -> int:
        """Bytes of the database files on disk (db and -wal)."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total


def _failed(effect: StoreWrite, error: str) -> StoreAnswer | None:
    if isinstance(effect, CheckIds):
        return IdsChecked(effect.op, frozenset(), error)
    if isinstance(effect, AppendEnvelopes):
        return AppendDone(effect.op, error)
    if isinstance(effect, (PruneOlder, TrimTopic)):
        return PruneDone(effect.op, (), error=error)
    return None


async def _user_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _floor(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT value FROM meta WHERE key = 'seq_floor'") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    version = await _user_version(db)
    if version > SCHEMA_VERSION:
        raise StoreError(f"database {path} has schema version {version}, this server knows "
                         f"{SCHEMA_VERSION}: upgrade p2pchat-bootstrap")
    for number in range(version, SCHEMA_VERSION):
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number + 1}")
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
