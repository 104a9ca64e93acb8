"""Persistence: the :class:`Store` port and its adapters.

The node talks to a :class:`Store` (:mod:`p2pchat.store.port`);
:class:`SqliteStore` keeps it in the node's database, :class:`MemoryStore`
in memory (tests, the simulator). Both pass ``tests/conformance``.
"""

from p2pchat.store.memory import MemoryStore
from p2pchat.store.port import (
    PERSISTENCE_EFFECTS,
    Store,
    StoreDamaged,
    StoreError,
    StoreOwnerMismatch,
)
from p2pchat.store.sqlite import SCHEMA_VERSION, SqliteStore, store_owner

__all__ = ["PERSISTENCE_EFFECTS", "SCHEMA_VERSION", "MemoryStore", "SqliteStore", "Store",
           "StoreDamaged", "StoreError", "StoreOwnerMismatch", "store_owner"]
