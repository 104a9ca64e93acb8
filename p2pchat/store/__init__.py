"""Persistence adapters. The node talks to :class:`~p2pchat.store.sqlite.Store`."""

from p2pchat.store.sqlite import (
    SCHEMA_VERSION,
    Store,
    StoreDamaged,
    StoreError,
    StoreOwnerMismatch,
    store_owner,
)

__all__ = ["SCHEMA_VERSION", "Store", "StoreDamaged", "StoreError", "StoreOwnerMismatch",
           "store_owner"]
