"""Replicas converge: any permutation and duplication of one envelope set gives the same
history, byte for byte (DESIGN §3, §7; issue 3 acceptance "property test").

The envelope sets are built once per module with fixed seeds (building is the slow part);
hypothesis only chooses delivery orders.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import ChannelState, Status
from tests.unit.channelkit import T0, Forger, Kit, change_of, history_bytes, sync_into

SETTINGS = settings(max_examples=40, deadline=None)


@dataclass(frozen=True)
class EnvelopeSet:
    kit: Kit
    channel: bytes
    wire: tuple[bytes, ...]  # encoded envelopes, in a causal (delivery-ready) order
    history: bytes  # of a replica that received them in that order
    vector: dict[tuple[str, bytes], int]
    statuses: dict[bytes, Status]


def _reference(kit: Kit, channel: bytes, wire: list[bytes]) -> EnvelopeSet:
    ref = kit.replica(channel, kit.identity("reference"))
    for data in wire:
        assert ref.receive_bytes(data, T0).applied, "the reference order must be causal"
    assert {} == ref.pending
    return EnvelopeSet(kit, channel, tuple(wire), history_bytes(ref), dict(ref.vector),
                       {i: m.status for i, m in ref.envs.items()})


def _act(state: ChannelState, kit: Kit, rng: random.Random, now: int) -> None:
    mine = [m for m in state.messages.values()
            if m.author == state.identity.did and not state.visible(m)[1]]
    known = sorted(state.messages)
    roll = rng.random()
    if roll < 0.4 or not known:
        state.post(f"{state.identity.name} says {rng.randrange(1000)}", now, kit.rb)
    elif roll < 0.55:
        state.post(f"reply {rng.randrange(1000)}", now, kit.rb, reply_to=rng.choice(known))
    elif roll < 0.7 and mine:
        state.edit(rng.choice(sorted(mine, key=lambda m: m.id)).id, f"edited {now}", now, kit.rb)
    elif roll < 0.8 and mine:
        state.delete(rng.choice(sorted(mine, key=lambda m: m.id)).id, now, kit.rb)
    else:
        target, emoji = rng.choice(known), rng.choice(["👍", "🎉", "+1"])
        shown = state.views_of({target})  # toggle our own reaction, as shown now
        on = not any(state.identity.did in view.reactions.get(emoji, []) for view in shown)
        state.react(target, emoji, on, now, kit.rb)


@functools.cache
def honest_set() -> EnvelopeSet:
    """Three authors, some offline for a while, with skewed clocks, all kinds of operation."""
    kit = Kit(4242)
    rng = random.Random(4242)
    alice, bob, carol = (kit.identity(n) for n in ("alice", "bob", "carol"))
    a, genesis = kit.found(alice, "general", T0)
    states = [a, kit.replica(a.channel_id, bob, genesis), kit.replica(a.channel_id, carol, genesis)]
    skew = [0, 7_000, -3_000]
    for round_ in range(8):
        for i, state in enumerate(states):
            for _ in range(rng.randint(1, 3)):
                _act(state, kit, rng, T0 + 10_000 * round_ + skew[i] + rng.randrange(5000))
        for _ in range(rng.randint(0, 2)):  # partial, one-way exchanges
            src, dst = rng.sample(states, 2)
            sync_into(dst, src)
    for dst in states:
        for src in states:
            if src is not dst:
                sync_into(dst, src)
    wire = [a.raw[i] for i in a.log]
    assert len(wire) >= 30
    return _reference(kit, a.channel_id, wire)


@functools.cache
def mixed_set() -> EnvelopeSet:
    """The honest set plus a member whose envelopes are valid but whose operations are not
    (foreign edit/delete, reused id, declared text mismatch, unknown op), each written
    causally after what it targets, interleaved with honest traffic."""
    base = honest_set()
    kit = base.kit
    channel = base.channel
    full = kit.replica(channel, kit.identity("collector"))
    for data in base.wire:
        full.receive_bytes(data, T0)
    g = full.decode(full.raw[full.log[0]])
    mallory = kit.identity("mallory")
    f = Forger(kit, mallory, channel, [change_of(g, kit.key)])
    targets = sorted(full.messages)
    heads = sorted(full.heads)
    ts = T0 + 100_000
    makers: list[Callable[[list[bytes]], Envelope]] = [
        lambda deps: f.edit_foreign(deps, targets[0], "pwned", ts),
        lambda deps: f.delete_foreign(deps, targets[1], ts + 1),
        lambda deps: f.post(deps, "impostor", ts + 2, msg_id=targets[2])[0],
        lambda deps: f.post(deps, "doc text", ts + 3, declared="claimed text")[0],
        lambda deps: f.unknown(deps, "frobnicate", ts + 4),
        lambda deps: f.post(deps, "a valid post after all that", ts + 5)[0],
        lambda deps: f.react(deps, targets[3], "👀", True, ts + 6),
    ]
    extra: list[Envelope] = []
    for make in makers:  # each depends on the whole honest set and on mallory's previous one
        env = make([*heads, *(e.id for e in extra[-1:])])
        assert full.receive(env, T0).applied
        extra.append(env)
    wire = [*base.wire, *(env.encode() for env in extra)]
    result = _reference(kit, channel, wire)
    assert 5 == sum(s is Status.INVALID for s in result.statuses.values())
    return result


def delivery(n: int) -> st.SearchStrategy[list[int]]:
    """A permutation of range(n) with some envelopes delivered again at random places."""
    @st.composite
    def build(draw: st.DrawFn) -> list[int]:
        order = draw(st.permutations(list(range(n))))
        dups = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 2 * n)),
                             max_size=n // 2))
        out = list(order)
        for index, pos in dups:
            out.insert(pos % (len(out) + 1), index)
        return out

    return build()


def replay(envs: EnvelopeSet, order: list[int]) -> ChannelState:
    kit = envs.kit
    replica = ChannelState(envs.channel, kit.identity("fresh"), kit.keys)
    replica.current_epoch = kit.epoch
    for index in order:
        replica.receive_bytes(envs.wire[index], T0)
    return replica


def check(envs: EnvelopeSet, order: list[int]) -> None:
    replica = replay(envs, order)
    assert {} == replica.pending
    assert envs.history == history_bytes(replica)
    assert envs.vector == replica.vector
    assert envs.statuses == {i: m.status for i, m in replica.envs.items()}


@SETTINGS
@given(data=st.data())
def test_any_permutation_with_duplicates_gives_identical_history(data: st.DataObject) -> None:
    envs = honest_set()
    check(envs, data.draw(delivery(len(envs.wire))))


@SETTINGS
@given(data=st.data())
def test_invalid_operations_are_judged_identically_in_any_order(data: st.DataObject) -> None:
    envs = mixed_set()
    check(envs, data.draw(delivery(len(envs.wire))))


def test_reverse_order_gives_identical_history() -> None:
    for envs in (honest_set(), mixed_set()):
        check(envs, list(reversed(range(len(envs.wire)))))
