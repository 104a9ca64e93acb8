"""Snapshots: a restored replica is indistinguishable from the original and keeps working."""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from automerge.core import Document

from p2pchat.channel.doc import load_document
from p2pchat.channel.state import ChannelState, epoch_id_for
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity


def _identity(rng: random.Random, name: str) -> Identity:
    return Identity(secret_key_from_seed(rng.randbytes(32)), rng.randbytes(16), name)


def test_restore_equals_original_and_can_continue() -> None:
    rng = random.Random(7)
    a, b = _identity(rng, "a"), _identity(rng, "b")
    key = rng.randbytes(32)
    epoch = epoch_id_for(key)

    def keys(e: bytes) -> bytes | None:
        return key if e == epoch else None

    sa, genesis = ChannelState.create(a, "snap", key, 1_000, rng.randbytes)
    sb = ChannelState(sa.channel_id, b, keys)
    sb.current_epoch = epoch
    sb.receive(genesis, 0)
    last = ""
    for i in range(50):
        env, last = sa.post(f"m{i}", 2_000 + i, rng.randbytes)
        sb.receive(env, 0)
    own, own_id = sb.post("from b", 3_000, rng.randbytes)
    sa.receive(own, 0)
    for env in (sa.edit(last, "edited", 3_100, rng.randbytes).envelope,
                sb.react(last, "+1", True, 3_200, rng.randbytes).envelope,
                sb.delete(own_id, 3_300, rng.randbytes).envelope):
        (sb if env.author == a.did else sa).receive(env, 0)

    restored = ChannelState.restore(sb.channel_id, b, keys, epoch, sb.snapshot(),
                                    {i: sb.raw[i] for i in sb.log})

    assert sb.history() == restored.history()
    assert sb.vector == restored.vector
    assert sb.heads == restored.heads
    assert sb.log == restored.log
    assert sb.doc.save() == restored.doc.save()
    after, _ = restored.post("after restore", 4_000, rng.randbytes)
    assert sa.receive(after, 0).applied == [after]
    assert "after restore" == sa.history()[-1].text


def test_restore_refuses_a_snapshot_without_its_envelopes() -> None:
    rng = random.Random(8)
    a = _identity(rng, "a")
    key = rng.randbytes(32)
    state, _ = ChannelState.create(a, "snap", key, 1_000, rng.randbytes)
    epoch = epoch_id_for(key)
    try:
        ChannelState.restore(state.channel_id, a, lambda e: key, epoch, state.snapshot(), {})
    except ValueError as exc:
        assert "does not have" in str(exc)
    else:
        raise AssertionError("restore accepted a snapshot whose envelopes are missing")


def _panicking_document(data: bytes) -> bytes:
    """``data`` (a saved document) damaged, checksum fixed, so that automerge *panics* on
    loading it (a pyo3 PanicException, which is not an Exception), found by a seeded
    search."""
    rng = random.Random(5)
    for _ in range(20_000):
        damaged = bytearray(data)
        for _ in range(rng.choice((1, 2, 4))):
            damaged[rng.randrange(8, len(damaged))] = rng.randrange(256)
        damaged[4:8] = hashlib.sha256(bytes(damaged[8:])).digest()[:4]
        try:
            Document.load(bytes(damaged))
        except Exception:
            continue
        except BaseException as exc:  # the panic
            if type(exc).__name__ == "PanicException":
                return bytes(damaged)
            raise
    raise AssertionError("no damage found that makes automerge panic")


def test_a_document_automerge_panics_on_is_a_value_error_not_a_crash() -> None:
    """The hub restores channels with ``except Exception`` (a damaged snapshot costs a full
    replay): a panic while loading must arrive as a ValueError, not escape past it."""
    rng = random.Random(9)
    a = _identity(rng, "a")
    key = rng.randbytes(32)
    state, _ = ChannelState.create(a, "snap", key, 1_000, rng.randbytes)
    for i in range(20):
        state.post(f"m{i}", 2_000 + i, rng.randbytes)
    bad = _panicking_document(state.doc.save())
    with pytest.raises(ValueError, match="automerge cannot load"):
        load_document(bad)
    snap = msgpack.unpackb(state.snapshot(), raw=False, strict_map_key=False)
    snap["doc"] = bad
    with pytest.raises(ValueError, match="automerge cannot load"):
        ChannelState.restore(state.channel_id, a, lambda e: key, epoch_id_for(key),
                             msgpack.packb(snap, use_bin_type=True), dict(state.raw))
