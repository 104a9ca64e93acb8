"""The store port: what the node runtime asks of its persistence, and nothing more.

:class:`Store` lists the calls ``p2pchat.runtime`` (node start/stop and its write
queue), ``p2pchat run`` (``claim``) and the control API (``search``) make. Two
adapters answer them the same way: :class:`p2pchat.store.sqlite.SqliteStore` (the
node's database) and :class:`p2pchat.store.memory.MemoryStore` (tests and the
simulator); ``tests/conformance/test_store_conformance.py`` runs one suite
against both. Opening is not part of the port: each adapter has its own
constructor (a path, or nothing).

The contract, beyond the signatures:

* ``write(effects, now)`` carries out :data:`PERSISTENCE_EFFECTS` all or nothing:
  if it raises, none of the batch is kept. Channels in a batch are saved before
  anything else in it; an envelope, snapshot or epoch key of a channel that is
  not saved fails the batch. ``now`` is the time recorded for new channels
  (their load order) and saved peers (most recent first).
* Saving again is harmless: an envelope id already in its channel, a channel,
  a prekey or an epoch key already saved keep what they had; a cursor only
  moves forward; a peer address and a snapshot are replaced.
* ``load_prekeys(now_ms)`` drops the prekeys expired by then, then returns the
  rest oldest expiry first; ``load_channels`` returns channels in join order,
  each with its envelopes in the order first saved and its snapshot only if it
  covers no more envelopes than are stored.
* ``claim(did)`` records the owner of a new store, or raises
  :class:`StoreOwnerMismatch` (writing nothing) if the store is another DID's.

This module imports no I/O library: it is types only.
"""

from __future__ import annotations

from typing import Protocol, get_args

from p2pchat.core.events import Address, Effect, Persistence, StoredChannel
from p2pchat.errors import LocalError

#: The core's effects a store carries out (``Store.write``).
PERSISTENCE_EFFECTS: tuple[type[Effect], ...] = get_args(Persistence)


class StoreError(LocalError):
    """The store is unusable (corrupt, locked, from a newer version), or a write failed."""


class StoreDamaged(StoreError):
    """The database file is not SQLite or its pages are corrupt."""


class StoreOwnerMismatch(StoreError):
    """The store belongs to another DID than the identity next to it."""


class Store(Protocol):
    """What the runtime uses of a store (see the module docstring for the contract)."""

    async def claim(self, did: str) -> None:
        """Record ``did`` as the owner of a store that names nobody; raise
        StoreOwnerMismatch, writing nothing, if it names another DID."""
        ...

    async def load_channels(self) -> list[StoredChannel]:
        """Every saved channel, in join order, with envelopes, snapshot and keyring."""
        ...

    async def load_peers(self) -> list[tuple[Address, str]]:
        """(address, DID) of the peers to redial, most recently connected first."""
        ...

    async def load_cursors(self) -> list[tuple[str, bytes, int]]:
        """(server DID, topic, cursor) of every bootstrap topic read so far (any order)."""
        ...

    async def load_prekeys(self, now_ms: int) -> list[tuple[bytes, bytes]]:
        """(record, private key) of the prekeys not expired at ``now_ms``, oldest expiry
        first; the expired ones are dropped."""
        ...

    async def write(self, effects: list[Effect], now: float) -> None:
        """Carry out persistence effects in order, all or nothing."""
        ...

    async def search(self, channel: bytes, query: str, limit: int) -> list[str]:
        """Ids of up to ``limit`` messages of ``channel`` holding every word of ``query``
        (each word a prefix, no operators), best match first."""
        ...

    async def close(self) -> None:
        """Release the store; nothing is called on it afterwards."""
        ...
