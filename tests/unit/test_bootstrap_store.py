"""The store port: the SQLite adapter answers every effect like the in-memory reference.

One script of effects runs against :class:`bootstrap.testing.MemoryStore` and against
:class:`bootstrap.store.ServerStore` on a real SQLite file; the answers and what a
restart loads must be equal (automerge-repo style conformance).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bootstrap.events import (
    AppendDone,
    AppendEnvelopes,
    CheckIds,
    DeleteRecords,
    IdsChecked,
    PruneOlder,
    ReadStored,
    SaveRecord,
    StoreAnswer,
    StoredRecord,
    StoredRow,
    StoreEffect,
    StoreLoaded,
    StoreWrite,
    TrimTopic,
)
from bootstrap.store import MIGRATIONS, SCHEMA_VERSION, ServerStore, StoreError
from bootstrap.testing import MemoryStore

T = b"T" * 32
U = b"U" * 32


def row(seq: int, size: int, tag: bytes = b"") -> StoredRow:
    return StoredRow(seq, bytes([seq]) * 31 + tag[:1].ljust(1, b"-"), bytes([seq]) * size)


def script() -> list[StoreEffect]:
    t_rows = [row(s, 100 * s) for s in range(1, 6)]
    return [
        CheckIds(1, T, (t_rows[0].id, t_rows[1].id)),
        AppendEnvelopes(2, T, tuple(t_rows), "did:key:a", 1000, "10.0.0.0/24"),
        AppendEnvelopes(3, U, (row(1, 50, b"u"), row(2, 60, b"u")), "did:key:b", 2000,
                        "10.0.0.0/24"),
        AppendEnvelopes(4, T, (row(6, 10), row(7, 20)), "did:key:b", 3000,
                        "2001:db8::/56"),
        CheckIds(5, T, (t_rows[0].id, row(6, 10).id, b"x" * 32)),
        ReadStored(6, 1, T, 0, 7, 3, 10**6),  # cut by items
        ReadStored(7, 1, T, 3, 6, 10, 700),  # cut by bytes: 400 fits, 400+500 does not
        ReadStored(8, 1, T, 5, 7, 10, 10**6),
        ReadStored(9, 1, b"Z" * 32, 0, 5, 10, 10**6),  # nothing there
        ReadStored(10, 1, T, 0, 7, 10, 1),  # at least one even when it alone is too big
        TrimTopic(11, T, 2, 0),
        PruneOlder(12, 2500, 1),  # one row per step: more follow
        PruneOlder(13, 2500, 100),  # the rest: U is emptied
        TrimTopic(14, T, 0, 25),  # by bytes: seq 6 (10) and 7 (20)
        SaveRecord(StoredRecord(T, "did:key:a", b"rec-a", b"s" * 64, 10_000, 500)),
        SaveRecord(StoredRecord(T, "did:key:b", b"rec-b", b"s" * 64, 20_000, 600)),
        SaveRecord(StoredRecord(T, "did:key:a", b"rec-a2", b"t" * 64, 30_000, 700)),
        DeleteRecords(20_000),
        AppendEnvelopes(15, U, (row(9, 5, b"u"),), "did:key:c", 4000, "10.9.9.0/24"),
        AppendEnvelopes(16, U, (row(10, 7, b"u"),), "did:key:c", 4000),  # exempt: no block
    ]


def run_memory(effects: list[StoreEffect]) -> tuple[list[StoreAnswer | None], StoreLoaded]:
    store = MemoryStore()
    answers = [store.execute(e) for e in effects]
    return answers, store.load(5000)


async def run_sqlite(path: Path, effects: list[StoreEffect], batch: bool
                     ) -> tuple[list[StoreAnswer | None], StoreLoaded, StoreLoaded]:
    store = await ServerStore.open(path)
    answers: list[StoreAnswer | None] = []
    writes: list[StoreWrite] = []

    async def flush() -> None:
        answers.extend(await store.execute(writes))
        writes.clear()

    for effect in effects:
        if isinstance(effect, ReadStored):
            await flush()
            answers.append(await store.read(effect))
        elif batch:
            writes.append(effect)
        else:
            answers.extend(await store.execute([effect]))
    await flush()
    loaded = await store.load(5000)
    await store.close()
    again = await ServerStore.open(path)
    reloaded = await again.load(5000)
    await again.close()
    return answers, loaded, reloaded


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "group-commit"])
def test_sqlite_store_answers_like_the_memory_store(tmp_path: Path, batch: bool) -> None:
    effects = script()
    expected, expected_load = run_memory(effects)
    answers, loaded, reloaded = asyncio.run(run_sqlite(tmp_path / "s.db", effects, batch))
    assert expected == answers
    assert expected_load == loaded
    assert expected_load == reloaded


def test_the_script_covers_what_it_means_to() -> None:
    effects = script()
    answers, loaded = run_memory(effects)
    by_op = {getattr(e, "op", getattr(e, "read", None)): a for e, a in zip(effects, answers,
                                                                         strict=True)}
    assert IdsChecked(1, frozenset()) == by_op[1]
    assert IdsChecked(5, frozenset({row(1, 1).id, row(6, 1).id})) == by_op[5]
    assert ([1, 2, 3], 3) == ([s for s, _ in by_op[6].items], by_op[6].reached)  # type: ignore[union-attr]
    assert ([4], 4) == ([s for s, _ in by_op[7].items], by_op[7].reached)  # type: ignore[union-attr]
    assert ([6, 7], 7) == ([s for s, _ in by_op[8].items], by_op[8].reached)  # type: ignore[union-attr]
    assert ((), 5) == (by_op[9].items, by_op[9].reached)  # type: ignore[union-attr]
    assert [1] == [s for s, _ in by_op[10].items]  # type: ignore[union-attr]
    assert 2 == sum(r.count for r in by_op[11].removed)  # type: ignore[union-attr,misc]
    assert by_op[12].more and 1 == sum(r.count for r in by_op[12].removed)  # type: ignore[union-attr,misc]
    assert (U,) == by_op[13].emptied  # type: ignore[union-attr]
    assert (2, (T,)) == (sum(r.count for r in by_op[14].removed), by_op[14].emptied)  # type: ignore[union-attr,misc]
    assert AppendDone(15) == by_op[15]
    # retention names the block each removed envelope was charged to
    assert {("10.0.0.0/24", 2)} == {(r.source, r.count) for r in by_op[11].removed}  # type: ignore[union-attr]
    assert {"2001:db8::/56"} == {r.source for r in by_op[14].removed}  # type: ignore[union-attr]
    # both topics were emptied once: the floor keeps their seqs from being reused
    assert 7 == loaded.seq_floor
    assert (("did:key:c", 12),) == loaded.usage
    assert (("10.9.9.0/24", 5),) == loaded.sources
    assert ["did:key:a"] == [r.did for r in loaded.records]


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")

    async def open_it() -> None:
        await ServerStore.open(path)

    with pytest.raises(StoreError, match="schema version 99"):
        asyncio.run(open_it())


def test_database_files_are_private(tmp_path: Path) -> None:
    async def go() -> None:
        store = await ServerStore.open(tmp_path / "s.db")
        assert SCHEMA_VERSION == await store.schema_version()
        await store.close()

    asyncio.run(go())
    assert 0o600 == (tmp_path / "s.db").stat().st_mode & 0o777


def test_a_version_1_database_is_migrated_and_its_rows_charge_no_address_block(
        tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute("INSERT INTO topics VALUES (?, 1, 1000)", (T,))
        db.execute("INSERT INTO envelopes VALUES (?, 1, ?, 'did:key:a', 1000, 3, ?)",
                   (T, b"i" * 32, b"abc"))
        db.execute("PRAGMA user_version=1")
    db.close()

    async def go() -> tuple[int, StoreLoaded]:
        store = await ServerStore.open(path)
        await store.execute([AppendEnvelopes(1, T, (StoredRow(2, b"j" * 32, b"defg"),),
                                             "did:key:b", 2000, "192.0.2.0/24")])
        version, loaded = await store.schema_version(), await store.load(5000)
        await store.close()
        return version, loaded

    version, loaded = asyncio.run(go())
    assert SCHEMA_VERSION == version
    assert (("did:key:a", 3), ("did:key:b", 4)) == loaded.usage  # the old row is kept
    assert (("192.0.2.0/24", 4),) == loaded.sources
