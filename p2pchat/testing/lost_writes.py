"""Lost writes on a :class:`~p2pchat.store.MemoryStore`: what a power cut does to a disk.

A real store keeps every write it committed; a disk that acknowledged writes it
never made durable loses the newest of them. These helpers drop envelopes from a
memory store's channel logs to model that (the simulator's ``crash(...,
lose_own_last=n)`` and ``restart(..., lose_last=n)``). A channel's first
envelope, its genesis, always survives. Snapshots and the rest stay as stored:
a snapshot covering more envelopes than remain is ignored at load, as SQLite's is.
"""

from __future__ import annotations

from collections.abc import Callable

from p2pchat.store.memory import MemoryStore


def lose_newest(store: MemoryStore, count: int) -> dict[bytes, int]:
    """Drop the newest ``count`` envelopes of every channel (never the genesis); returns,
    per channel that lost any, how many."""
    return _lose(store, count, lambda _channel, _envelope: True)


def lose_newest_own(store: MemoryStore, count: int,
                    authored: Callable[[bytes, bytes], bool]) -> dict[bytes, int]:
    """Drop the newest ``count`` envelopes of every channel for which
    ``authored(channel, envelope)`` holds (the node's own; never the genesis)."""
    return _lose(store, count, authored)


def _lose(store: MemoryStore, count: int, chosen: Callable[[bytes, bytes], bool]
          ) -> dict[bytes, int]:
    if count < 0:
        raise ValueError("count must not be negative")
    lost: dict[bytes, int] = {}
    for cid in sorted(store.envelopes):
        log = store.envelopes[cid]
        ids = [env_id for i, (env_id, data) in enumerate(log.items())
               if i > 0 and chosen(cid, data)]
        doomed = ids[len(ids) - count:] if count else []
        for env_id in doomed:
            del log[env_id]
        if doomed:
            lost[cid] = len(doomed)
    return lost
