"""ChannelState.preapply: a frame's changes applied in one automerge call change nothing
but the cost. A replica fed frames (preapply, then receive each envelope) must end
exactly where one fed the same envelopes one by one does, whatever mix of posts,
edits, reactions, bans and unbans the frames hold."""

from __future__ import annotations

import dataclasses
import random

import pytest

from p2pchat.channel.state import ChannelState
from tests.unit.channelkit import snapshot
from tests.unit.modkit import World


def _busy_world(seed: int) -> World:
    """Five people post, react, edit, ban and unban, syncing in changing groups."""
    rng = random.Random(seed)
    w = World(seed)
    people = list(w.replicas)
    for step in range(60):
        person = rng.choice(people)
        roll = rng.random()
        if roll < 0.08 and person == "owner":
            w.act(f"ban{step}", "owner", "ban", rng.choice(people[1:]))
        elif roll < 0.14 and person == "owner":
            w.act(f"unban{step}", "owner", "unban", rng.choice(people[1:]))
        elif roll < 0.2:
            w.act(f"op{step}", "owner", "op", "mod")
        else:
            w.post(f"p{step}", person)
            state = w.replicas[person]
            mine = [m for m in state.messages.values() if m.author == w.did(person)]
            theirs = list(state.messages.values())
            try:  # a banned author's own replica refuses; a second +1 changes nothing
                if mine and rng.random() < 0.3:
                    state.edit(mine[-1].id, f"edited {step}", w.tick(), w.kit.rb)
                if theirs and rng.random() < 0.3:
                    state.react(rng.choice(theirs).id, "+1", True, w.tick(), w.kit.rb)
            except (ValueError, RuntimeError):
                pass
        if rng.random() < 0.3:
            w.sync(*rng.sample(people, rng.randint(2, len(people))))
    w.sync_all()
    return w


def _in_frames(w: World, order: list[bytes], rng: random.Random) -> tuple[ChannelState, int]:
    state = w.kit.replica(w.channel, w.kit.identity("observer"))
    applied_ahead = i = 0
    while i < len(order):
        frame = [state.decode(raw) for raw in order[i:i + rng.randint(1, 12)]]
        i += len(frame)
        fresh = [env for env in frame if not state.is_known(env.id)]
        applied_ahead += state.preapply(fresh, {env.id: env.verify_signature()
                                                for env in fresh})
        for env in fresh:
            state.receive(env, w.now)
    return state, applied_ahead


@pytest.mark.parametrize("seed", range(6))
def test_frames_end_where_one_by_one_ends(seed: int) -> None:
    w = _busy_world(seed)
    owner = w.replicas["owner"]
    order = [owner.raw[i] for i in owner.log]  # a causal order
    one_by_one = w.observer(order)
    framed, ahead = _in_frames(w, order, random.Random(seed))
    assert ahead > 0  # the fast path ran
    a, b = snapshot(one_by_one), snapshot(framed)
    assert dataclasses.replace(a, doc=b"") == dataclasses.replace(b, doc=b"")
    assert sorted(one_by_one.doc.doc.get_heads()) == sorted(framed.doc.doc.get_heads())
    assert not framed.receiver.preapplied  # every change applied ahead was claimed by its envelope


def test_the_run_stops_at_what_it_cannot_be_sure_of() -> None:
    w = World(3)
    for n in range(3):
        w.post(f"a{n}", "user")
    w.sync("user", "owner")  # the owner's log: genesis, a0..a2, the ban, b0..b2
    ban = w.act("ban", "owner", "ban", "user2")
    for n in range(3):
        w.post(f"b{n}", "mod")
    w.sync_all()
    owner = w.replicas["owner"]
    order = [owner.decode(owner.raw[i]) for i in owner.log[1:]]  # after genesis
    state = w.kit.replica(w.channel, w.kit.identity("observer"), w.genesis)
    verdicts = {env.id: True for env in order}
    # three posts, then the ban (moderation: it may change how later envelopes are judged)
    assert 3 == state.preapply(order, verdicts)
    assert ban.id not in state.receiver.preopened
    for env in order:
        state.receive(env, w.now)
    assert not state.receiver.preapplied
    # an unverified signature, or a parked envelope, stops it before it starts
    again = w.kit.replica(w.channel, w.kit.identity("observer2"), w.genesis)
    assert 0 == again.preapply(order, {**verdicts, order[0].id: False})
    again.receive(order[1], w.now)  # parks: its previous envelope is missing
    assert again.pending and 0 == again.preapply(order, verdicts)
