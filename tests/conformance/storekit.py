"""Store adapters under conformance test: the suite runs each test once per adapter.

A store adapter here is a small factory: ``open()`` makes an empty store,
``reopen(store)`` closes it and opens what it kept (a restart), and
``open_again(store)`` opens what a store closed by its node kept. ``fail_next_write``
makes the adapter's next write fail underneath (a disk error), so the suite can
check that a failed batch keeps nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from p2pchat.store import MemoryStore, SqliteStore, Store


class InspectableStore(Store, Protocol):
    """The port, plus the owner read both adapters offer (tests of ``claim``)."""

    async def owner(self) -> str | None: ...


class StoreAdapter(Protocol):
    name: str

    async def open(self) -> InspectableStore: ...

    async def reopen(self, store: InspectableStore) -> InspectableStore: ...

    async def open_again(self, store: InspectableStore) -> InspectableStore: ...

    def fail_next_write(self, store: InspectableStore) -> None: ...


class MemoryAdapter:
    name = "memory"

    async def open(self) -> InspectableStore:
        return MemoryStore()

    async def reopen(self, store: InspectableStore) -> InspectableStore:
        assert isinstance(store, MemoryStore)
        await store.close()
        return store.reopen()

    async def open_again(self, store: InspectableStore) -> InspectableStore:
        assert isinstance(store, MemoryStore)
        return store.reopen()

    def fail_next_write(self, store: InspectableStore) -> None:
        assert isinstance(store, MemoryStore)
        store.fail_writes = 1


class SqliteAdapter:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    async def open(self) -> InspectableStore:
        return await SqliteStore.open(self.path)

    async def reopen(self, store: InspectableStore) -> InspectableStore:
        await store.close()
        return await SqliteStore.open(self.path)

    async def open_again(self, store: InspectableStore) -> InspectableStore:
        return await SqliteStore.open(self.path)

    def fail_next_write(self, store: InspectableStore) -> None:
        """The next transaction fails at its end, after every write in it ran: all of
        them must roll back."""
        assert isinstance(store, SqliteStore)
        real = store.transaction

        async def failing(writes: list[Callable[[], Awaitable[None]]]) -> None:
            store.transaction = real  # type: ignore[method-assign]

            async def disk_error() -> None:
                raise sqlite3.OperationalError("disk I/O error")

            await real([*writes, disk_error])

        store.transaction = failing  # type: ignore[method-assign]


def make_adapter(name: str, tmp_path: Path) -> StoreAdapter:
    return MemoryAdapter() if name == "memory" else SqliteAdapter(tmp_path / "node.db")


ADAPTERS = ("memory", "sqlite")
