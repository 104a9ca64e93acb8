"""Snapshots: a restored replica is indistinguishable from the original and keeps working."""

from __future__ import annotations

import random

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
    for env in (sa.edit(last, "edited", 3_100, rng.randbytes),
                sb.react(last, "+1", True, 3_200, rng.randbytes),
                sb.delete(own_id, 3_300, rng.randbytes)):
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
