"""p2pchat.testing.lost_writes: a memory store losing its newest envelopes (a power cut)."""

from __future__ import annotations

import pytest

from p2pchat.core.events import PersistChannel, PersistEnvelopes, PersistSnapshot
from p2pchat.store import MemoryStore
from p2pchat.testing.lost_writes import lose_newest, lose_newest_own

C1, C2 = b"\x01" * 32, b"\x02" * 32


def stored(*logs: tuple[bytes, list[bytes]]) -> MemoryStore:
    store = MemoryStore()
    for cid, datas in logs:
        store.apply([PersistChannel(cid, "c", b"k"),
                     PersistEnvelopes(cid, tuple((d + b"-id", d) for d in datas))], 1.0)
    return store


def envelopes(store: MemoryStore) -> list[tuple[bytes, ...]]:
    return [c.envelopes for c in store.stored_channels()]


def test_the_newest_go_and_the_genesis_stays() -> None:
    store = stored((C1, [b"g", b"a", b"b", b"c"]), (C2, [b"g2", b"x"]))
    assert {C1: 2, C2: 1} == lose_newest(store, 2)
    assert [(b"g", b"a"), (b"g2",)] == envelopes(store)
    assert {C1: 1} == lose_newest(store, 5)
    assert [(b"g",), (b"g2",)] == envelopes(store)
    assert {} == lose_newest(stored((C1, [b"g"])), 3)


def test_only_the_newest_own_envelopes_go() -> None:
    store = stored((C1, [b"mine-g", b"mine-1", b"theirs-1", b"mine-2", b"theirs-2"]))
    lost = lose_newest_own(store, 1, lambda cid, data: data.startswith(b"mine"))
    assert {C1: 1} == lost
    assert [(b"mine-g", b"mine-1", b"theirs-1", b"theirs-2")] == envelopes(store)
    assert {C1: 1} == lose_newest_own(store, 5, lambda cid, data: data.startswith(b"mine"))
    assert [(b"mine-g", b"theirs-1", b"theirs-2")] == envelopes(store)


def test_a_lost_envelope_can_be_stored_again_at_the_end() -> None:
    store = stored((C1, [b"g", b"a", b"b"]))
    lose_newest(store, 1)
    store.apply([PersistEnvelopes(C1, ((b"c-id", b"c"), (b"b-id", b"b")))], 2.0)
    assert [(b"g", b"a", b"c", b"b")] == envelopes(store)


def test_a_snapshot_past_the_loss_is_ignored_at_load() -> None:
    store = stored((C1, [b"g", b"a", b"b"]))
    store.apply([PersistSnapshot(C1, b"snap", 3)], 2.0)
    lose_newest(store, 1)
    [channel] = store.stored_channels()
    assert (None, 0) == (channel.snapshot, channel.covered)


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        lose_newest(MemoryStore(), -1)
