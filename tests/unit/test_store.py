"""SQLite store: migrations, refusal of newer schemas and damage, wire v1 homes.

What every store adapter must do (round trips, atomicity, ordering) is in
``tests/conformance/test_store_conformance.py``.

pytest-asyncio is not used: each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest

from p2pchat.errors import LocalError
from p2pchat.store import SCHEMA_VERSION, SqliteStore, StoreError

T = TypeVar("T")
A = ("10.0.0.1", 7445)
B = ("::1", 9000)
DID_A = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
DID_B = "did:key:z6MkeTG3bFFSLYVU7VqhgZxqr6YzpaGrQtFMh1uvqGy1vDnP"


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


async def with_store(path: Path, body: Callable[[SqliteStore], Awaitable[T]]) -> T:
    store = await SqliteStore.open(path)
    try:
        return await body(store)
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


@pytest.fixture
def opened_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[aiosqlite.Connection]]:
    """Record every aiosqlite connection opened; close any the code under test leaked.

    A leaked connection keeps a non-daemon worker thread alive, which would hang the
    test process at exit, so the fixture cleans up even when the test fails.
    """
    connections: list[aiosqlite.Connection] = []
    real_connect = aiosqlite.connect

    def spy(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
        conn = real_connect(*args, **kwargs)
        connections.append(conn)
        return conn

    monkeypatch.setattr(aiosqlite, "connect", spy)
    yield connections
    for conn in connections:
        if is_open(conn):
            asyncio.run(_close(conn))


async def _close(conn: aiosqlite.Connection) -> None:
    await conn.close()


def is_open(conn: aiosqlite.Connection) -> bool:
    try:
        conn.total_changes  # noqa: B018 - raises ValueError("no active connection") once closed
    except ValueError:
        return False
    return True


async def nothing(store: SqliteStore) -> None:
    return None


def set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
    finally:
        conn.close()


def test_store_error_is_a_local_error() -> None:
    assert issubclass(StoreError, LocalError)


def test_new_database_is_migrated_to_the_current_version(db: Path) -> None:
    async def body(store: SqliteStore) -> int:
        return await store.schema_version()

    assert SCHEMA_VERSION == run(lambda: with_store(db, body))


def test_new_database_uses_wal_and_is_private(db: Path) -> None:
    run(lambda: with_store(db, nothing))
    conn = sqlite3.connect(db)
    try:
        assert "wal" == conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert SCHEMA_VERSION == conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()
    assert 0o600 == stat.S_IMODE(db.stat().st_mode)


def test_migrating_twice_is_a_no_op(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.save_peer(A, DID_A, 1.0)

    run(lambda: with_store(db, body))
    assert [(A, DID_A)] == run(lambda: with_store(db, lambda s: s.load_peers()))


def test_newer_schema_is_refused(db: Path, opened_connections: list[aiosqlite.Connection]) -> None:
    set_user_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError) as info:
        run(lambda: SqliteStore.open(db))
    assert f"schema version {SCHEMA_VERSION + 1}" in str(info.value)
    assert "upgrade p2pchat" in str(info.value)
    assert str(db) in str(info.value)


def test_refused_database_is_left_untouched(
    db: Path, opened_connections: list[aiosqlite.Connection]
) -> None:
    set_user_version(db, SCHEMA_VERSION + 5)
    with pytest.raises(StoreError):
        run(lambda: SqliteStore.open(db))
    conn = sqlite3.connect(db)
    try:
        assert SCHEMA_VERSION + 5 == conn.execute("PRAGMA user_version").fetchone()[0]
        assert [] == conn.execute("SELECT name FROM sqlite_master").fetchall()
    finally:
        conn.close()


def test_refused_newer_database_closes_its_connection(
    db: Path, opened_connections: list[aiosqlite.Connection]
) -> None:
    set_user_version(db, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        run(lambda: SqliteStore.open(db))
    assert 1 == len(opened_connections)
    assert not is_open(opened_connections[0]), (
        "SqliteStore.open leaked its aiosqlite connection (and its worker thread)")


def test_file_that_is_not_a_database_is_refused(
    tmp_path: Path, opened_connections: list[aiosqlite.Connection]
) -> None:
    path = tmp_path / "node.db"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(StoreError, match=r"is damaged \(sqlite: file is not a database\)"):
        run(lambda: SqliteStore.open(path))
    assert not any(is_open(c) for c in opened_connections), (
        "SqliteStore.open leaked its aiosqlite connection (and its worker thread)")


def test_reopening_keeps_data(db: Path) -> None:
    async def write(store: SqliteStore) -> None:
        await store.save_peer(A, DID_A, 10.0)
        await store.save_peer(B, DID_B, 5.0)

    run(lambda: with_store(db, write))
    assert [(A, DID_A), (B, DID_B)] == run(lambda: with_store(db, lambda s: s.load_peers()))
    assert SCHEMA_VERSION == run(lambda: with_store(db, lambda s: s.schema_version()))


def _home_at_schema_6(db: Path, envelope: bytes) -> None:
    """A database as p2pchat left it before wire v2, holding one envelope."""
    from p2pchat.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(db)
    try:
        for script in MIGRATIONS[:6]:
            conn.executescript(script)
        conn.execute("INSERT INTO channels VALUES (?, 'old', ?, 1.0)", (b"c" * 32, b""))
        conn.execute("INSERT INTO envelopes (channel, id, data) VALUES (?, ?, ?)",
                     (b"c" * 32, b"i" * 32, envelope))
        conn.execute("PRAGMA user_version=6")
        conn.commit()
    finally:
        conn.close()


def test_a_home_holding_wire_v1_envelopes_is_refused_untouched(
    db: Path, opened_connections: list[aiosqlite.Connection]
) -> None:
    v1 = bytes([0x92, 0xC4, 0x01, 0x00, 0xC4, 0x40]) + b"\x00" * 64  # [signed, signature]
    _home_at_schema_6(db, v1)
    with pytest.raises(StoreError, match="envelope format v1"):
        run(lambda: SqliteStore.open(db))
    conn = sqlite3.connect(db)
    try:
        assert 6 == conn.execute("PRAGMA user_version").fetchone()[0]
        assert [(v1,)] == conn.execute("SELECT data FROM envelopes").fetchall()
    finally:
        conn.close()


def test_a_home_with_wire_v2_envelopes_migrates(db: Path) -> None:
    _home_at_schema_6(db, bytes([0x98]) + b"\x00" * 80)
    assert SCHEMA_VERSION == run(lambda: with_store(db, lambda s: s.schema_version()))
