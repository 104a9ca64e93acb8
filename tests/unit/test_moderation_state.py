"""Moderation inside a replica: refused envelopes, readmission, local refusals, views."""

from __future__ import annotations

import pytest

from p2pchat.channel.state import Status
from tests.unit.modkit import World, outcome


def test_posts_written_after_a_ban_are_refused_everywhere_and_concurrent_ones_hidden() -> None:
    w = World(31)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.act("ban", "mod", "ban", "user")
    w.post("concurrent", "user")
    w.sync_all()
    w.post("after", "user")  # the user's replica has the ban: a stale or hostile client
    w.sync_all()
    for state in w.replicas.values():
        refused = [i for i in state.log if state.envs[i].status is Status.REFUSED]
        assert 1 == len(refused)
        assert "banned in the envelope's causal past" in state.envs[refused[0]].why
        assert () == outcome(w, state).visible
    observer = w.observer(w.envelopes())
    assert 1 == sum(m.status is Status.REFUSED for m in observer.envs.values())


def test_a_refused_envelope_is_admitted_when_the_ban_stops_counting() -> None:
    w = World(32)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.act("deop", "owner", "deop", "mod")  # not seen by the mod, the user or user2
    w.act("ban", "mod", "ban", "user")
    w.sync("mod", "user", "user2")
    w.post("after the ban", "user")  # refused by everyone who has not seen the deop
    w.sync("mod", "user", "user2")
    assert () == outcome(w, w.replicas["user2"]).visible
    w.sync_all()  # the deop arrives: the ban was concurrent with it, so it never counted
    for state in w.replicas.values():
        assert ("after the ban",) == outcome(w, state).visible
        assert not any(m.status is Status.REFUSED for m in state.envs.values())


def test_local_writes_that_would_not_count_are_refused_with_a_reason() -> None:
    w = World(33)
    w.act("op mod", "owner", "op", "mod")
    w.act("ban user", "owner", "ban", "user")
    w.act("mute user2", "owner", "mute", "user2")
    w.sync_all()
    rb, now = w.kit.rb, w.tick()
    with pytest.raises(ValueError, match="you are banned"):
        w.replicas["user"].post("hello", now, rb)
    with pytest.raises(ValueError, match="would be hidden: you muted"):
        w.replicas["user2"].post("hello", now, rb)
    with pytest.raises(ValueError, match="does not outrank"):
        w.replicas["mod"].moderate("ban", now, rb, target=w.did("owner"))
    with pytest.raises(ValueError, match="needs moderator rank"):
        w.replicas["user2"].moderate("topic", now, rb, value="mine")
    with pytest.raises(ValueError, match="unknown moderation action"):
        w.replicas["owner"].moderate("smite", now, rb, target=w.did("user"))
    with pytest.raises(ValueError, match="needs a member's DID"):
        w.replicas["owner"].moderate("ban", now, rb, target="not-a-did")
    w.replicas["owner"].moderate("mode", now, rb, value="moderated")
    w.sync_all()
    with pytest.raises(ValueError, match="moderated"):
        w.replicas["mod2"].post("hello", w.tick(), rb)  # a plain member here
    w.replicas["mod"].post("mods may", w.tick(), rb)


def test_member_ranks_and_modlog() -> None:
    w = World(34)
    w.act("op mod", "owner", "op", "mod")
    w.post("hi", "user")
    w.post("hi too", "user2")
    w.sync_all()
    w.act("ban user", "mod", "ban", "user")
    w.act("mute user2", "mod", "mute", "user2")
    w.act("bad", "user2", "ban", "mod")
    w.sync_all()
    state = w.replicas["owner"]
    ranks = dict(state.member_ranks())
    assert {w.did("owner"): "owner", w.did("mod"): "moderator", w.did("user"): "banned",
            w.did("user2"): "muted"} == ranks
    rows = state.modlog()
    by_label = {r["reason"]: r for r in rows}
    assert "op mod" == rows[0]["reason"]  # causal order first
    assert {"op mod": True, "ban user": True, "mute user2": True, "bad": False} == \
        {label: r["applied"] for label, r in by_label.items()}
    assert "needs moderator rank" == by_label["bad"]["why"]
    assert {"id", "envelope", "action", "target", "value", "on", "by", "reason", "ts",
            "applied", "why"} == set(rows[0])


def test_snapshot_keeps_the_modlog_and_refusals() -> None:
    from p2pchat.channel.state import ChannelState

    w = World(35)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.act("ban", "mod", "ban", "user")
    w.sync_all()
    w.post("after", "user")
    w.sync_all()
    state = w.replicas["user2"]
    restored = ChannelState.restore(state.channel_id, state.identity, w.kit.keys, w.kit.epoch,
                                    state.snapshot(), dict(state.raw))
    assert state.modlog() == restored.modlog()
    assert state.member_ranks() == restored.member_ranks()
    assert [m.status for m in state.envs.values()] == [m.status for m in restored.envs.values()]


def test_clock_answers_match_a_walk_of_the_dag() -> None:
    """in_past answers from the causal clocks agree with a plain walk of the deps."""
    from tests.property.test_moderation_orders import SCENARIOS, played

    for name in SCENARIOS:
        w = played(name)
        for state in (w.replicas["owner"], w.observer(list(reversed(w.envelopes())))):
            ids = list(state.log)
            for a in ids:
                for b in ids:
                    walked = a != b and state.dag.in_causal_past(a, state.envs[b].deps)
                    assert walked == state.in_past(a, b), name
