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
from pathlib import Path

import aiosqlite

from p2pchat.core.events import Address
from p2pchat.errors import LocalError


class StoreError(LocalError):
    """The database is unusable (corrupt, locked, from a newer version)."""


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
)
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Store:
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from exc
        try:
            # The node runs with umask 077; this keeps the file private for other callers too.
            os.chmod(path, 0o600)
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db, path)
            await store._migrate()
        except BaseException as exc:
            await db.close()  # its worker thread would otherwise keep the process alive
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open database {path}: {exc}") from exc
            raise
        return store

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, this p2pchat knows "
                f"{SCHEMA_VERSION}: upgrade p2pchat")
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

    async def forget_peer(self, address: Address) -> None:
        await self._db.execute("DELETE FROM peers WHERE host = ? AND port = ?", address)

    async def close(self) -> None:
        try:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            await self._db.close()
