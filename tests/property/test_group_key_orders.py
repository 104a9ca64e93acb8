"""Group keys under every delivery order: a scenario with concurrent bans, concurrent
rotations, a rogue distributor and a late joiner, replayed into fresh replicas in any
order (with duplicates). Every replica must reach the same epoch verdicts, holders,
heads, choice of epoch to write with, and visible history."""

from __future__ import annotations

import functools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.state import ChannelState
from tests.unit.test_group_epochs import World, sync, texts


@functools.cache
def scenario() -> tuple[list[bytes], dict[str, ChannelState], int]:
    w = World(31)
    owner = w.found()
    m1, m2, x, y, z = (w.replica(owner, n) for n in ("m1", "m2", "x", "y", "z"))
    people = [owner, m1, m2, x, y, z]
    for p in people[1:]:
        w.admit(owner, p)
    owner.moderate("op", w.tick(), w.rb, target=m1.identity.did)
    owner.moderate("op", w.tick(), w.rb, target=m2.identity.did)
    for p in people:
        sync(p, *people)
    for p in people:
        w.post(p, f"hello from {p.identity.name}")
    # two sides: m1 bans x while m2 bans y; x rotates concurrently with its own ban
    m1.moderate("ban", w.tick(), w.rb, target=x.identity.did)
    m2.moderate("ban", w.tick(), w.rb, target=y.identity.did)
    x.rotate(w.tick(), w.rb)
    w.post(z, "z on the m2 side")
    sync(z, m2)
    w.post(z, "z saw y's ban")
    for p in people:
        sync(p, *people)
    # healed: two moderators rotate at once, then everybody writes
    w.post(m1, "m1 after the heal")
    w.post(m2, "m2 after the heal")
    for p in people:
        sync(p, *people)
    w.post(z, "z last")
    for p in people:
        sync(p, *people)
    raws = sorted({p.raw[i] for p in people for i in p.log})
    return raws, {p.identity.name: p for p in people}, w.now


def fingerprint(state: ChannelState, now: int) -> tuple[object, ...]:
    view = state.group.view()
    return (sorted(view.valid.items()), sorted((e, sorted(h)) for e, h in view.holders.items()),
            view.heads, state.group.send_epoch(now), texts(state), state.sealed_count())


def replay(name: str, order: list[int], duplicates: list[int]) -> ChannelState:
    raws, people, _ = scenario()
    original = people[name]
    privates = original.group.private_for
    fresh = ChannelState(original.channel_id, original.identity, private_for=privates,
                         secrets={e: s for e, s in original.group.secrets.items()
                                  if original.group.epochs.get(e) is not None
                                  and original.group.epochs[e].distributor
                                  == original.identity.did})
    for i in order + duplicates:
        fresh.receive(fresh.decode(raws[i]), 0)
    return fresh


def test_the_scenario_ends_in_one_epoch_without_the_banned() -> None:
    _, people, now = scenario()
    chosen = {people[n].group.send_epoch(now) for n in ("owner", "m1", "m2", "z")}
    assert len(chosen) == 1 and None not in chosen
    (epoch,) = chosen
    for banned in ("x", "y"):
        assert epoch not in people[banned].group.secrets
        assert "z last" not in texts(people[banned])
    assert texts(people["z"])[-1] == "z last"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["owner", "m1", "m2", "z"]))
def test_any_delivery_order_gives_the_same_keys_view(seed: int, name: str) -> None:
    raws, people, now = scenario()
    rng = random.Random(seed)
    order = list(range(len(raws)))
    rng.shuffle(order)
    duplicates = [rng.randrange(len(raws)) for _ in range(5)]
    fresh = replay(name, order, duplicates)
    assert fingerprint(fresh, now) == fingerprint(people[name], now)
