"""SQLite: the DID a store belongs to read from the file (migration 8, stores from before
it) and damage refused at open. ``claim`` itself is in tests/conformance."""

from __future__ import annotations

import functools
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from p2pchat.channel.keys import make_prekey
from p2pchat.identity import Identity
from p2pchat.store import SqliteStore, StoreDamaged, StoreOwnerMismatch, store_owner
from p2pchat.store.rules import prekey_owner
from p2pchat.store.sqlite import is_damage
from tests.unit.corenet import make_identity
from tests.unit.test_store import run, with_store

T = TypeVar("T")
ME, OTHER = make_identity(1, "me"), make_identity(2, "other")
NOW_MS = 1_700_000_000_000


def prekey(identity: Identity, now_ms: int) -> tuple[bytes, bytes, bytes, int]:
    rng = random.Random(now_ms)
    record, private = make_prekey(identity, rng.randbytes, now_ms)
    return rng.randbytes(16), record, private, now_ms + 1000


async def save_prekeys(store: SqliteStore, *rows: tuple[bytes, bytes, bytes, int]) -> None:
    for row in rows:
        await store.save_prekey(*row)


def make_legacy(path: Path) -> None:
    """What a store looked like before migration 8: no owner table, version 7."""
    db = sqlite3.connect(path)
    db.execute("DROP TABLE owner")
    db.execute("PRAGMA user_version=7")
    db.commit()
    db.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "node.db"


def test_store_owner_reads_the_claim_from_the_file(db: Path) -> None:
    run(lambda: with_store(db, lambda s: s.owner()))
    assert None is store_owner(db)
    run(lambda: with_store(db, lambda s: s.claim(ME.did)))
    assert ME.did == store_owner(db)
    with pytest.raises(StoreOwnerMismatch):
        run(lambda: with_store(db, lambda s: s.claim(OTHER.did)))
    assert ME.did == store_owner(db)


def test_a_store_from_before_the_record_is_claimed_from_its_own_prekeys(db: Path) -> None:
    run(lambda: with_store(db, lambda s: save_prekeys(s, prekey(ME, NOW_MS))))
    make_legacy(db)
    assert ME.did == store_owner(db)
    with pytest.raises(StoreOwnerMismatch):
        run(lambda: with_store(db, lambda s: s.claim(OTHER.did)))
    assert None is run(lambda: with_store(db, lambda s: s.owner())), "a refusal writes nothing"
    run(lambda: with_store(db, lambda s: s.claim(ME.did)))
    assert ME.did == run(lambda: with_store(db, lambda s: s.owner()))


def test_the_oldest_prekey_names_the_owner() -> None:
    """A store where another identity was started by mistake (it made a prekey too)
    still belongs to the one that made the first."""
    _, mine, _, mine_expires = prekey(ME, NOW_MS)
    _, theirs, _, theirs_expires = prekey(OTHER, NOW_MS + 5000)
    assert ME.did == prekey_owner([(theirs, theirs_expires), (mine, mine_expires)])
    assert ME.did == prekey_owner([(b"\x00garbage", 0), (mine, mine_expires)])
    assert None is prekey_owner([(b"\x00garbage", 0)])
    assert None is prekey_owner([])


def test_a_store_that_names_nobody_is_claimed_by_whoever_opens_it(db: Path) -> None:
    run(lambda: with_store(db, lambda s: s.save_peer(("10.0.0.1", 7445), OTHER.did, 1.0)))
    make_legacy(db)
    assert None is store_owner(db)
    run(lambda: with_store(db, lambda s: s.claim(ME.did)))
    assert ME.did == store_owner(db)


def _written(db: Path) -> None:
    async def body(store: SqliteStore) -> None:
        await store.claim(ME.did)
        await store.transaction([
            functools.partial(store.save_peer, ("10.0.0.1", 7445 + i), OTHER.did, 1.0)
            for i in range(2000)])

    run(lambda: with_store(db, body))


def _overwrite_middle(db: Path) -> None:
    data = bytearray(db.read_bytes())
    page = 4096
    middle = len(data) // page // 2
    data[middle * page:(middle + 2) * page] = b"\xa5" * (2 * page)
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _overwrite_middle,
    lambda db: db.write_bytes(db.read_bytes()[: len(db.read_bytes()) // 2 + 7]),
    lambda db: db.write_bytes(b"not a database at all\n" * 300),
], ids=["pages-overwritten", "truncated", "not-sqlite"])
def test_a_damaged_file_is_refused_at_open_with_one_line(
        db: Path, damage: Callable[[Path], None]) -> None:
    _written(db)
    damage(db)
    before = db.read_bytes()
    with pytest.raises(StoreDamaged) as info:
        run(lambda: SqliteStore.open(db))
    message = str(info.value)
    assert message.startswith(f"{db} is damaged (sqlite: ")
    assert message.endswith("restore it from a backup or move it away")
    assert "\n" not in message
    assert before == db.read_bytes(), "a damaged file is left as it was"


def test_only_corruption_is_called_damage() -> None:
    assert is_damage(sqlite3.DatabaseError("database disk image is malformed"))
    assert not is_damage(sqlite3.OperationalError("database is locked"))
    assert not is_damage(ValueError("malformed"))
