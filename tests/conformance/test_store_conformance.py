"""Store conformance: every adapter of :class:`p2pchat.store.Store` gives the same answers.

Each test runs against :class:`~p2pchat.store.MemoryStore` and against
:class:`~p2pchat.store.SqliteStore` on a real file (automerge-repo style: one
suite, narrow port). The expectations are written out, not taken from either
adapter, so both are held to the contract in :mod:`p2pchat.store.port`. A
last test runs random batches through both and compares everything they load.
SQLite-only behaviour (migrations, damage, WAL) is in ``tests/unit/test_store.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from p2pchat.channel.keys import make_prekey
from p2pchat.core.events import (
    Address,
    Effect,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
    PersistChannel,
    PersistCursor,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    SavePeer,
    StoredChannel,
    Transmit,
)
from p2pchat.identity import Identity
from p2pchat.store import StoreOwnerMismatch
from tests.conformance.storekit import ADAPTERS, InspectableStore, StoreAdapter, make_adapter
from tests.unit.corenet import make_identity

T = TypeVar("T")
C1, C2, C3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
A: Address = ("10.0.0.1", 7445)
B: Address = ("::1", 9000)
DID_A = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
DID_B = "did:key:z6MkeTG3bFFSLYVU7VqhgZxqr6YzpaGrQtFMh1uvqGy1vDnP"
ME, OTHER = make_identity(1, "me"), make_identity(2, "other")
NOW_MS = 1_700_000_000_000


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAdapter:
    return make_adapter(str(request.param), tmp_path)


def run(adapter: StoreAdapter, body: Callable[[InspectableStore], Awaitable[T]]) -> T:
    """``body`` on a fresh store of ``adapter``, closed afterwards."""
    async def main() -> T:
        store = await adapter.open()
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def env(n: int, tag: bytes = b"") -> tuple[bytes, bytes]:
    return bytes([n]) * 32, b"envelope-%d" % n + tag


def channel(cid: bytes, name: str = "general") -> PersistChannel:
    return PersistChannel(cid, name, b"k" * 32)


async def everything(store: InspectableStore) -> tuple[Any, ...]:
    """All a node loads at start (cursors sorted: their order is not promised)."""
    return (await store.load_channels(), await store.load_peers(),
            sorted(await store.load_cursors()), await store.load_prekeys(0))


def prekey(identity: Identity, now_ms: int, expires_ms: int | None = None) -> PersistPrekey:
    rng = random.Random(now_ms)
    record, private = make_prekey(identity, rng.randbytes, now_ms)
    return PersistPrekey(rng.randbytes(16), record, private,
                         now_ms + 1000 if expires_ms is None else expires_ms)


# --- a new store, and every effect there and back ----------------------------------------


def test_a_new_store_holds_nothing(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[Any, ...]:
        return (*await everything(store), await store.search(C1, "hello", 10),
                await store.owner())

    assert ([], [], [], [], [], None) == run(adapter, body)


def full_script() -> list[list[Effect]]:
    return [
        [channel(C1), PersistEnvelopes(C1, (env(1), env(2))), SavePeer(A, DID_A)],
        [PersistEpochKey(C1, b"e1", b"secret-1"), PersistEpochKey(C1, b"e0", b"secret-0"),
         PersistSnapshot(C1, b"snapshot", 2), PersistCursor(DID_B, b"t" * 32, 7),
         prekey(ME, NOW_MS), IndexMessages(C1, (("m1", DID_A, "hello world", False),))],
        [PersistEnvelopes(C1, (env(3),)), SavePeer(B, DID_B)],
    ]


FULL_CHANNEL = StoredChannel(C1, "general", b"k" * 32, (env(1)[1], env(2)[1], env(3)[1]),
                             b"snapshot", 2, ((b"e0", b"secret-0"), (b"e1", b"secret-1")))


def test_every_effect_kind_comes_back_and_survives_a_restart(adapter: StoreAdapter) -> None:
    pk = prekey(ME, NOW_MS)

    async def main() -> tuple[Any, Any, list[str]]:
        store = await adapter.open()
        for when, batch in enumerate(full_script()):
            await store.write(batch, 10.0 + when)
        before = await everything(store)
        store = await adapter.reopen(store)
        try:
            return before, await everything(store), await store.search(C1, "wor", 10)
        finally:
            await store.close()

    before, after, found = asyncio.run(main())
    expected = ([FULL_CHANNEL], [(B, DID_B), (A, DID_A)], [(DID_B, b"t" * 32, 7)],
                [(pk.record, pk.private)])
    assert expected == before
    assert expected == after
    assert ["m1"] == found


def test_one_batch_or_one_by_one_keep_the_same(adapter: StoreAdapter, tmp_path: Path) -> None:
    """Group commit is only faster: the batches of the script written as one keep the same."""
    async def write(batches: list[list[Effect]], store: InspectableStore) -> tuple[Any, ...]:
        for batch in batches:
            await store.write(batch, 10.0)
        return await everything(store)

    script = full_script()
    one_by_one = run(adapter, lambda s: write([[e] for b in script for e in b], s))
    again = make_adapter(adapter.name, tmp_path / "again")
    (tmp_path / "again").mkdir()
    together = run(again, lambda s: write([[e for b in script for e in b]], s))
    assert one_by_one == together


def test_an_empty_write_is_fine(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[Any, ...]:
        await store.write([], 1.0)
        return await everything(store)

    assert ([], [], [], []) == run(adapter, body)


# --- channels and envelopes ---------------------------------------------------------------


def test_envelopes_saved_again_are_kept_once_where_first_saved(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[StoredChannel]:
        await store.write([channel(C1), PersistEnvelopes(C1, (env(1), env(2), env(1)))], 1.0)
        await store.write([PersistEnvelopes(C1, (env(3), env(2, b"-changed"))),
                           PersistEnvelopes(C1, (env(1), env(4)))], 2.0)
        return await store.load_channels()

    [loaded] = run(adapter, body)
    assert (env(1)[1], env(2)[1], env(3)[1], env(4)[1]) == loaded.envelopes


def test_an_envelope_id_is_per_channel(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[bytes, ...]]:
        await store.write([channel(C1), channel(C2), PersistEnvelopes(C1, (env(1),)),
                           PersistEnvelopes(C2, (env(1, b"-in-c2"),))], 1.0)
        return [c.envelopes for c in await store.load_channels()]

    assert [(env(1)[1],), (env(1, b"-in-c2")[1],)] == run(adapter, body)


def test_channels_load_in_join_order(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[bytes]:
        await store.write([channel(C2)], 30.0)
        await store.write([channel(C1)], 10.0)
        await store.write([channel(C3)], 20.0)
        return [c.channel for c in await store.load_channels()]

    assert [C1, C3, C2] == run(adapter, body)


def test_a_channel_saved_again_keeps_its_name_key_and_join_time(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[bytes, str, bytes]]:
        await store.write([channel(C1, "first")], 10.0)
        await store.write([channel(C2, "second")], 20.0)
        await store.write([PersistChannel(C1, "renamed", b"x" * 32)], 30.0)
        return [(c.channel, c.name, c.key) for c in await store.load_channels()]

    assert [(C1, "first", b"k" * 32), (C2, "second", b"k" * 32)] == run(adapter, body)


def test_a_channel_is_saved_before_the_rest_of_its_batch(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[StoredChannel]:
        await store.write([PersistEnvelopes(C1, (env(1),)), PersistEpochKey(C1, b"e", b"s"),
                           PersistSnapshot(C1, b"snap", 1), channel(C1)], 1.0)
        return await store.load_channels()

    assert [StoredChannel(C1, "general", b"k" * 32, (env(1)[1],), b"snap", 1,
                          ((b"e", b"s"),))] == run(adapter, body)


def test_a_channel_without_envelopes_loads_empty(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[StoredChannel]:
        await store.write([channel(C1), PersistEnvelopes(C1, ())], 1.0)
        return await store.load_channels()

    assert [StoredChannel(C1, "general", b"k" * 32, ())] == run(adapter, body)


# --- snapshots ----------------------------------------------------------------------------


def test_a_snapshot_is_replaced_by_the_next(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[bytes | None, int]:
        await store.write([channel(C1), PersistEnvelopes(C1, (env(1), env(2), env(3))),
                           PersistSnapshot(C1, b"old", 1)], 1.0)
        await store.write([PersistSnapshot(C1, b"new", 3)], 2.0)
        [loaded] = await store.load_channels()
        return loaded.snapshot, loaded.covered

    assert (b"new", 3) == run(adapter, body)


def test_a_snapshot_covering_more_than_is_stored_is_ignored(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[bytes | None, int]:
        await store.write([channel(C1), PersistEnvelopes(C1, (env(1), env(2))),
                           PersistSnapshot(C1, b"ahead", 3)], 1.0)
        [loaded] = await store.load_channels()
        return loaded.snapshot, loaded.covered

    assert (None, 0) == run(adapter, body)


# --- the keyring --------------------------------------------------------------------------


def test_epoch_keys_keep_the_first_secret_and_can_be_forgotten(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[tuple[bytes, bytes], ...]]:
        seen = []
        await store.write([channel(C1), channel(C2), PersistEpochKey(C1, b"e2", b"two"),
                           PersistEpochKey(C1, b"e1", b"one"),
                           PersistEpochKey(C2, b"e1", b"other channel")], 1.0)
        await store.write([PersistEpochKey(C1, b"e1", b"changed")], 2.0)
        seen.append((await store.load_channels())[0].secrets)
        await store.write([ForgetEpochKey(C1, b"e1"), ForgetEpochKey(C1, b"never saved"),
                           ForgetEpochKey(C3, b"e1")], 3.0)
        seen.append((await store.load_channels())[0].secrets)
        await store.write([PersistEpochKey(C1, b"e1", b"again"), ForgetEpochKey(C1, b"e2")],
                          4.0)
        seen.append((await store.load_channels())[0].secrets)
        await store.write([ForgetEpochKey(C1, b"e1"), PersistEpochKey(C1, b"e1", b"last")],
                          5.0)
        seen.append((await store.load_channels())[0].secrets)
        seen.append((await store.load_channels())[1].secrets)
        return seen

    assert [((b"e1", b"one"), (b"e2", b"two")), ((b"e2", b"two"),), ((b"e1", b"again"),),
            ((b"e1", b"last"),), ((b"e1", b"other channel"),)] == run(adapter, body)


# --- peers (moved here from tests/unit/test_store.py) ------------------------------------


def test_peers_save_load_forget_round_trip(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[list[tuple[Address, str]]]:
        snapshots = [await store.load_peers()]
        await store.write([SavePeer(A, DID_A)], 10.0)
        await store.write([SavePeer(B, DID_B)], 20.0)
        snapshots.append(await store.load_peers())
        await store.write([ForgetPeer(A)], 30.0)
        snapshots.append(await store.load_peers())
        await store.write([ForgetPeer(A)], 40.0)  # forgetting twice is harmless
        snapshots.append(await store.load_peers())
        return snapshots

    assert [[], [(B, DID_B), (A, DID_A)], [(B, DID_B)], [(B, DID_B)]] == run(adapter, body)


def test_saving_an_address_again_updates_it(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[Address, str]]:
        await store.write([SavePeer(A, DID_A)], 10.0)
        await store.write([SavePeer(B, DID_B)], 20.0)
        await store.write([SavePeer(A, DID_B)], 30.0)  # same address, another node, newest
        return await store.load_peers()

    assert [(A, DID_B), (B, DID_B)] == run(adapter, body)


def test_peers_come_back_most_recent_first(adapter: StoreAdapter) -> None:
    addresses = [(f"10.0.0.{i}", 7000 + i) for i in range(5)]

    async def body(store: InspectableStore) -> list[tuple[Address, str]]:
        for when, address in zip([3.0, 1.0, 4.0, 0.5, 2.0], addresses, strict=True):
            await store.write([SavePeer(address, DID_A)], when)
        return await store.load_peers()

    assert [(addresses[i], DID_A) for i in [2, 0, 4, 1, 3]] == run(adapter, body)


def test_forget_then_save_in_one_batch_keeps_the_peer(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[Address, str]]:
        await store.write([SavePeer(A, DID_A)], 1.0)
        await store.write([ForgetPeer(A), SavePeer(A, DID_B), SavePeer(B, DID_B),
                           ForgetPeer(B)], 2.0)
        return await store.load_peers()

    assert [(A, DID_B)] == run(adapter, body)


def test_ports_and_hosts_keep_their_types(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[Address, str]]:
        await store.write([SavePeer(("host.example", 0), DID_A)], 1.0)
        return await store.load_peers()

    [(address, _)] = run(adapter, body)
    assert ("host.example", 0) == address
    assert isinstance(address[1], int)


# --- bootstrap cursors and prekeys --------------------------------------------------------


def test_a_cursor_only_moves_forward(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[tuple[str, bytes, int]]:
        await store.write([PersistCursor(DID_A, b"t1", 5), PersistCursor(DID_A, b"t2", 9),
                           PersistCursor(DID_B, b"t1", 1)], 1.0)
        await store.write([PersistCursor(DID_A, b"t1", 3), PersistCursor(DID_A, b"t2", 12)],
                          2.0)
        return sorted(await store.load_cursors())

    assert sorted([(DID_A, b"t1", 5), (DID_A, b"t2", 12), (DID_B, b"t1", 1)]) == run(adapter,
                                                                                      body)


def test_prekeys_load_by_expiry_and_the_expired_are_dropped(adapter: StoreAdapter) -> None:
    late, early, soon = (prekey(ME, NOW_MS + 1, NOW_MS + 9000),
                         prekey(ME, NOW_MS + 2, NOW_MS + 1000),
                         prekey(ME, NOW_MS + 3, NOW_MS + 5000))

    async def body(store: InspectableStore) -> list[list[bytes]]:
        await store.write([late, early, soon], 1.0)
        again = PersistPrekey(early.prekey_id, b"other record", b"other key", NOW_MS + 99_999)
        await store.write([again], 2.0)  # saved again: the first stays
        seen = [[r for r, _ in await store.load_prekeys(NOW_MS)]]
        seen.append([r for r, _ in await store.load_prekeys(NOW_MS + 5000)])  # expiry: gone
        seen.append([r for r, _ in await store.load_prekeys(NOW_MS)])  # and stays gone
        return seen

    assert [[early.record, soon.record, late.record], [late.record],
            [late.record]] == run(adapter, body)


def test_prekeys_come_back_with_their_private_keys(adapter: StoreAdapter) -> None:
    pk = prekey(ME, NOW_MS)
    assert [(pk.record, pk.private)] == run(adapter, lambda s: _write_then(
        s, [pk], s.load_prekeys(NOW_MS)))


async def _write_then(store: InspectableStore, batch: list[Effect],
                      then: Awaitable[T]) -> T:
    await store.write(batch, 1.0)
    return await then


# --- atomicity ----------------------------------------------------------------------------


def _before() -> list[Effect]:
    return [channel(C1), PersistEnvelopes(C1, (env(1),)), SavePeer(A, DID_A),
            PersistCursor(DID_A, b"t", 1)]


@pytest.mark.parametrize("doomed", [
    [PersistEnvelopes(C2, (env(9),))],
    [PersistSnapshot(C2, b"snap", 0)],
    [PersistEpochKey(C2, b"e", b"s")],
], ids=["envelopes", "snapshot", "epoch-key"])
def test_a_batch_naming_an_unsaved_channel_keeps_nothing(adapter: StoreAdapter,
                                                        doomed: list[Effect]) -> None:
    batch: list[Effect] = [channel(C3), PersistEnvelopes(C1, (env(2),)), SavePeer(B, DID_B),
                           ForgetPeer(A), PersistCursor(DID_A, b"t", 50),
                           IndexMessages(C1, (("m", DID_A, "findme", False),)),
                           prekey(ME, NOW_MS), *doomed]

    async def body(store: InspectableStore) -> tuple[Any, Any, list[str]]:
        await store.write(_before(), 1.0)
        kept = await everything(store)
        with pytest.raises(Exception):  # noqa: B017 - each adapter has its own error
            await store.write(batch, 2.0)
        return kept, await everything(store), await store.search(C1, "findme", 10)

    kept, after, found = run(adapter, body)
    assert kept == after
    assert [] == found


def test_a_batch_that_fails_underneath_keeps_nothing(adapter: StoreAdapter) -> None:
    """A disk error in the batch's last write: everything before it goes too, and the
    store takes the next write."""
    batch: list[Effect] = [channel(C2), PersistEnvelopes(C1, (env(2),)), SavePeer(B, DID_B),
                           PersistSnapshot(C1, b"snap", 1), PersistCursor(DID_B, b"u", 4)]

    async def body(store: InspectableStore) -> tuple[Any, Any, Any]:
        await store.write(_before(), 1.0)
        kept = await everything(store)
        adapter.fail_next_write(store)
        with pytest.raises(Exception):  # noqa: B017 - each adapter has its own error
            await store.write(batch, 2.0)
        failed = await everything(store)
        await store.write(batch, 3.0)
        return kept, failed, await everything(store)

    kept, failed, retried = run(adapter, body)
    assert kept == failed
    assert [C1, C2] == [c.channel for c in retried[0]]
    assert (env(1)[1], env(2)[1]) == retried[0][0].envelopes
    assert (DID_B, b"u", 4) in retried[2]


def test_an_effect_that_is_not_persistence_is_refused_and_nothing_kept(
        adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[Any, ...]:
        with pytest.raises(TypeError):
            await store.write([SavePeer(A, DID_A), Transmit(1, b"x")], 1.0)
        return await everything(store)

    assert ([], [], [], []) == run(adapter, body)


# --- search -------------------------------------------------------------------------------


SEARCH_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("m1", DID_A, "Hello wörld, café", False),
    ("m2", DID_A, "hello hello hello", False),
    ("m3", DID_B, "foo-bar baz", False),
    ("m4", DID_B, "Ünïcode ÉCOLE İstanbul", False),
    ("m5", DID_A, "x_y z it's 3.14", False),
    ("m6", DID_A, "hello world again world", False),
    ("m7", DID_B, "日本語 テキスト", False),
    ("m8", DID_B, "help me hello", False),
)


def search(adapter: StoreAdapter, queries: list[str], *more: list[Effect],
           limit: int = 10) -> list[list[str]]:
    async def body(store: InspectableStore) -> list[list[str]]:
        await store.write([channel(C1), channel(C2), IndexMessages(C1, SEARCH_ROWS),
                           IndexMessages(C2, (("c2", DID_A, "hello from elsewhere", False),))],
                          1.0)
        for batch in more:
            await store.write(batch, 2.0)
        return [await store.search(C1, q, limit) for q in queries]

    return run(adapter, body)


def test_search_words_are_prefixes_without_case_or_diacritics(adapter: StoreAdapter) -> None:
    queries = ["cafe", "WORLD", "wor", "ecole", "unicode", "istanbul", "日本", "3.14", "14",
               "it's", "x_y", "foo-bar", "bar-baz", "zzz"]
    found = [sorted(ids) for ids in search(adapter, queries)]
    assert [["m1"], ["m1", "m6"], ["m1", "m6"], ["m4"], ["m4"], ["m4"], ["m7"], ["m5"],
            ["m5"], ["m5"], ["m5"], ["m3"], ["m3"], []] == found


def test_search_needs_every_word_and_knows_no_operators(adapter: StoreAdapter) -> None:
    queries = ["hello world", "hello zzz", "hello OR", "NOT hello", "(hello)", '"hello"',
               "hello -", "-", "*", "", "   "]
    found = [sorted(ids) for ids in search(adapter, queries)]
    assert [["m1", "m6"], [], [], [], ["m1", "m2", "m6", "m8"], ["m1", "m2", "m6", "m8"],
            ["m1", "m2", "m6", "m8"], [], [], [], []] == found


def test_search_ranks_like_fts5_bm25_and_keeps_to_the_limit(adapter: StoreAdapter) -> None:
    [ranked, by_rank] = search(adapter, ["hel", "hello world"])
    assert ["m2", "m8"] == ranked[:2] and {"m1", "m6"} == set(ranked[2:])
    assert ["m6", "m1"] == by_rank  # "world" twice outweighs the longer text
    assert [["m2", "m8"]] == search(adapter, ["hel"], limit=2)


def test_search_stays_in_its_channel(adapter: StoreAdapter) -> None:
    assert [[]] == search(adapter, ["elsewhere"])


def test_indexing_a_post_again_replaces_it_and_hidden_removes_it(adapter: StoreAdapter) -> None:
    [renamed, old, hidden, other_author] = search(
        adapter, ["edited", "café", "foo", "baz"],
        [IndexMessages(C1, (("m1", DID_A, "edited text", False),
                            ("m3", DID_B, "foo-bar baz", True),
                            ("m3", DID_A, "baz by another author", False)))])
    assert (["m1"], [], [], ["m3"]) == (renamed, old, hidden, other_author)


def test_in_one_batch_the_last_row_of_a_post_wins(adapter: StoreAdapter) -> None:
    found = search(adapter, ["first", "second"],
                   [IndexMessages(C1, (("new", DID_A, "first", False),)),
                    IndexMessages(C1, (("new", DID_A, "second", False),))])
    assert [[], ["new"]] == found


# --- the owner ----------------------------------------------------------------------------


def test_a_new_store_is_claimed_by_the_first_identity(adapter: StoreAdapter) -> None:
    async def main() -> list[str | None]:
        store = await adapter.open()
        seen = [await store.owner()]
        await store.claim(ME.did)
        store = await adapter.reopen(store)
        seen.append(await store.owner())
        await store.claim(ME.did)  # the owner again: fine
        seen.append(await store.owner())
        await store.close()
        return seen

    assert [None, ME.did, ME.did] == asyncio.run(main())


def test_another_identity_is_refused_and_nothing_is_written(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> tuple[str, str | None]:
        await store.claim(ME.did)
        with pytest.raises(StoreOwnerMismatch) as info:
            await store.claim(OTHER.did)
        return str(info.value), await store.owner()

    message, owner = run(adapter, body)
    assert ME.did in message and OTHER.did in message and "backup" in message
    assert "\n" not in message
    assert ME.did == owner


def test_a_store_with_prekeys_but_no_owner_is_its_prekeys_owners(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> list[str | None]:
        await store.write([prekey(OTHER, NOW_MS + 5000), prekey(ME, NOW_MS)], 1.0)
        with pytest.raises(StoreOwnerMismatch):
            await store.claim(OTHER.did)
        seen = [await store.owner()]  # a refusal writes nothing
        await store.claim(ME.did)
        seen.append(await store.owner())
        return seen

    assert [None, ME.did] == run(adapter, body)


def test_a_store_that_names_nobody_is_claimed_by_whoever_opens_it(adapter: StoreAdapter) -> None:
    async def body(store: InspectableStore) -> str | None:
        await store.write([SavePeer(("10.0.0.1", 7445), OTHER.did)], 1.0)
        await store.claim(ME.did)
        return await store.owner()

    assert ME.did == run(adapter, body)


# --- both adapters, side by side ----------------------------------------------------------


def _random_batches(rng: random.Random) -> list[list[Effect]]:
    channels = [C1, C2, C3]
    words = ["alpha", "beta", "gamma", "délta", "alphabet", "be"]
    batches: list[list[Effect]] = []
    for _ in range(rng.randrange(3, 12)):
        batch: list[Effect] = []
        for _ in range(rng.randrange(0, 8)):
            cid = rng.choice(channels)
            kind = rng.randrange(10)
            if kind == 0:
                batch.append(channel(cid, rng.choice(["a", "b"])))
            elif kind == 1:
                batch.append(PersistEnvelopes(cid, tuple(
                    env(rng.randrange(20), rng.choice([b"", b"x"]))
                    for _ in range(rng.randrange(4)))))
            elif kind == 2:
                batch.append(PersistSnapshot(cid, b"s%d" % rng.randrange(9), rng.randrange(6)))
            elif kind == 3:
                batch.append(PersistEpochKey(cid, b"e%d" % rng.randrange(3),
                                             b"k%d" % rng.randrange(9)))
            elif kind == 4:
                batch.append(ForgetEpochKey(cid, b"e%d" % rng.randrange(3)))
            elif kind == 5:
                batch.append(SavePeer((f"10.0.0.{rng.randrange(4)}", 7000),
                                      rng.choice([DID_A, DID_B])))
            elif kind == 6:
                batch.append(ForgetPeer((f"10.0.0.{rng.randrange(4)}", 7000)))
            elif kind == 7:
                batch.append(PersistCursor(rng.choice([DID_A, DID_B]), b"t", rng.randrange(50)))
            elif kind == 8:
                batch.append(PersistPrekey(b"p%d" % rng.randrange(5), b"r", b"k",
                                           rng.randrange(1, 9) * 1000))
            else:
                batch.append(IndexMessages(cid, tuple(
                    (f"m{rng.randrange(6)}", rng.choice([DID_A, DID_B]),
                     " ".join(rng.choices(words, k=rng.randrange(1, 5))), rng.random() < 0.2)
                    for _ in range(rng.randrange(1, 3)))))
        batches.append(batch)
    return batches


async def _replay(adapter: StoreAdapter, batches: list[list[Effect]]) -> list[Any]:
    """What the store answers after each batch (whether it failed, then all it loads)."""
    store = await adapter.open()
    seen: list[Any] = []
    try:
        for when, batch in enumerate(batches):
            try:
                await store.write(batch, float(when % 4))  # ties in join and peer times
                failed = False
            except Exception:
                failed = True
            found = [await store.search(cid, q, 100)
                     for cid in (C1, C2) for q in ("alpha", "be", "delta gam")]
            seen.append((failed, await everything(store), found))
        seen.append(await store.load_prekeys(4000))
        seen.append(await everything(store))
    finally:
        await store.close()
    return seen


@pytest.mark.parametrize("seed", range(12))
def test_random_batches_leave_both_adapters_alike(tmp_path: Path, seed: int) -> None:
    batches = _random_batches(random.Random(seed))
    memory = asyncio.run(_replay(make_adapter("memory", tmp_path), batches))
    sqlite = asyncio.run(_replay(make_adapter("sqlite", tmp_path), batches))
    assert memory == sqlite


async def _rank(adapter: StoreAdapter, rows: tuple[tuple[str, str, str, bool], ...],
                queries: list[str]) -> list[list[str]]:
    store = await adapter.open()
    try:
        await store.write([channel(C1), channel(C2), IndexMessages(C1, rows),
                           IndexMessages(C2, rows[:7])], 1.0)
        return [await store.search(C1, q, 25) for q in queries]
    finally:
        await store.close()


def test_search_ranks_alike_in_both_adapters(tmp_path: Path) -> None:
    """bm25 over texts of many lengths, ties (broken by row) included, and the limit."""
    rng = random.Random(7)
    vocabulary = ["sun", "sunny", "moon", "Mööne", "star", "stars", "sky", "sea"]
    rows = tuple((f"m{i}", rng.choice([DID_A, DID_B]),
                  " ".join(rng.choices(vocabulary, k=rng.randrange(1, 12))), rng.random() < 0.1)
                 for i in range(80))
    queries = ["sun", "moo", "star sky", "sea sun moon", "s", "sunny star", "möö"]
    memory = asyncio.run(_rank(make_adapter("memory", tmp_path), rows, queries))
    sqlite = asyncio.run(_rank(make_adapter("sqlite", tmp_path), rows, queries))
    assert all(len(found) == 25 for found in memory[:2])
    assert memory == sqlite
