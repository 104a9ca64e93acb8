"""Moderation scenarios (DESIGN §4), each checked under every delivery order.

Every scenario is played by real replicas (one per person) that edit offline and
merge, so concurrency is real causal concurrency. The expected fold is asserted on
the merged replicas; then hypothesis delivers the same envelopes to fresh replicas
in arbitrary orders (with duplicates), and split across two partitions that sync
afterwards, and every replica must compute the identical modlog verdicts, ranks
and visible history.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.channelkit import sync_into
from tests.unit.modkit import World, outcome, summary


def concurrent_ban_and_unban() -> World:
    w = World(11)
    w.act("op mod", "owner", "op", "mod")
    w.post("before", "user")
    w.sync_all()
    w.act("ban", "mod", "ban", "user")  # mod and owner do not see each other's action
    w.act("unban", "owner", "unban", "user")
    w.sync_all()
    return w


def unban_after_ban() -> World:
    w = World(12)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.post("unseen", "user")  # concurrent with the ban
    w.act("ban", "mod", "ban", "user")
    w.sync("owner", "mod")
    w.act("unban", "owner", "unban", "user")
    w.sync_all()
    w.post("restored", "user")
    w.sync_all()
    return w


def revoked_moderator() -> World:
    w = World(13)
    w.act("op mod", "owner", "op", "mod")
    w.act("mute user2", "owner", "mute", "user2")
    w.sync_all()
    w.act("deop", "owner", "deop", "mod")  # the mod has not seen it:
    w.act("ban by mod", "mod", "ban", "user")
    w.act("unmute by mod", "mod", "unmute", "user2")
    w.sync("mod", "user2")
    w.post("after unmute", "user2")  # relies on the (invalid) unmute
    w.sync_all()
    return w


def back_dated_ban() -> World:
    w = World(14)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.act("deop", "owner", "deop", "mod")
    w.sync("owner", "user")
    w.act("back-dated ban", "mod", "ban", "user")  # written later, on a view before the deop
    w.sync_all()
    w.act("ban after deop", "mod", "ban", "user2")
    w.sync_all()
    return w


def mutual_bans() -> World:
    w = World(15)
    w.act("op mod", "owner", "op", "mod")
    w.act("op mod2", "owner", "op", "mod2")
    w.sync_all()
    w.act("mod bans mod2", "mod", "ban", "mod2")
    w.act("mod2 bans mod", "mod2", "ban", "mod")
    w.sync_all()
    w.act("owner bans mod", "owner", "ban", "mod")
    w.act("mod bans owner", "mod", "ban", "owner")
    w.sync_all()
    return w


def rank_rules() -> World:
    w = World(16)
    w.act("op mod", "owner", "op", "mod")
    w.act("op mod2", "owner", "op", "mod2")
    w.sync_all()
    w.act("self-promotion", "user", "op", "user")
    w.act("mod grants mod", "mod", "op", "user")
    w.act("mod bans mod2", "mod", "ban", "mod2")
    w.act("mod deops mod2", "mod", "deop", "mod2")
    w.act("mod bans owner", "mod", "ban", "owner")
    w.act("member bans member", "user", "ban", "user2")
    w.act("mod mutes user", "mod", "mute", "user")
    w.sync_all()
    return w


def posts_around_a_ban() -> World:
    w = World(17)
    w.act("op mod", "owner", "op", "mod")
    w.post("earlier", "user")
    w.sync_all()
    w.act("ban", "mod", "ban", "user")
    w.post("concurrent", "user")  # has not seen the ban: back-dated in effect
    w.post("owner talks", "owner")
    w.sync_all()
    w.post("after", "user")  # saw the ban
    w.sync_all()
    return w


def modes_and_topic() -> World:
    w = World(18)
    w.act("op mod", "owner", "op", "mod")
    w.sync_all()
    w.act("topic by owner", "owner", "topic", value="owner's topic")
    w.act("topic by mod", "mod", "topic", value="mod's topic")
    w.act("moderated", "mod", "mode", value="moderated")
    w.act("topic by member", "user", "topic", value="member's topic")
    w.sync_all()
    w.post("member in moderated", "user")
    w.post("mod in moderated", "mod")
    w.sync_all()
    w.act("unmoderated", "owner", "mode", value="moderated", on=False)
    w.sync_all()
    w.post("member again", "user")
    w.sync_all()
    return w


def invite_only() -> World:
    w = World(19)
    w.act("op mod", "owner", "op", "mod")
    w.post("open channel", "user2")
    w.sync_all()
    w.act("invite-only", "owner", "mode", value="invite-only")
    w.sync_all()
    w.act("add user", "mod", "add", "user")
    w.sync_all()
    w.post("added", "user")
    w.post("wrote before", "user2")  # a writer from before invite-only stays a member
    w.post("not added", "mod2")
    w.sync_all()
    w.act("kick user", "mod", "kick", "user")
    w.act("add user again", "owner", "add", "user")  # concurrent: the kick wins
    w.sync_all()
    w.post("after kick", "user")
    w.sync_all()
    return w


SCENARIOS: dict[str, Callable[[], World]] = {
    f.__name__: f for f in (concurrent_ban_and_unban, unban_after_ban, revoked_moderator,
                            back_dated_ban, mutual_bans, rank_rules, posts_around_a_ban,
                            modes_and_topic, invite_only)
}


@functools.cache
def played(name: str) -> World:
    return SCENARIOS[name]()


def test_concurrent_ban_and_unban_leaves_the_member_banned() -> None:
    o = outcome(w := played("concurrent_ban_and_unban"), w.replicas["owner"])
    assert o.applied("ban") and o.applied("unban")
    assert frozenset({"user"}) == o.banned
    assert ("before",) == o.visible


def test_an_unban_after_the_ban_restores() -> None:
    o = outcome(w := played("unban_after_ban"), w.replicas["user"])
    assert frozenset() == o.banned
    assert ("restored",) == o.visible  # the post concurrent with the ban stays hidden


def test_a_concurrently_revoked_moderator_counts_for_nothing() -> None:
    o = outcome(w := played("revoked_moderator"), w.replicas["owner"])
    assert o.applied("deop")
    assert (False, "author's rank was revoked (deop) concurrently (strong removal)") == \
        o.verdicts["ban by mod"]
    assert not o.applied("unmute by mod")
    assert frozenset() == o.banned
    assert frozenset({"user2"}) == o.muted  # so the post that relied on the unmute is hidden
    assert () == o.visible
    assert frozenset() == o.moderators


def test_a_back_dated_ban_by_a_demoted_moderator_is_invalid() -> None:
    o = outcome(w := played("back_dated_ban"), w.replicas["user2"])
    assert not o.applied("back-dated ban")
    assert "strong removal" in o.verdicts["back-dated ban"][1]
    assert (False, "needs moderator rank") == o.verdicts["ban after deop"]
    assert frozenset() == o.banned


def test_mutual_bans() -> None:
    o = outcome(w := played("mutual_bans"), w.replicas["mod2"])
    # equal ranks: neither outranks the other, both rejected
    assert not o.applied("mod bans mod2") and not o.applied("mod2 bans mod")
    # across ranks the higher wins
    assert o.applied("owner bans mod") and not o.applied("mod bans owner")
    assert frozenset({"mod"}) == o.banned
    assert frozenset({"mod2"}) == o.moderators


def test_rank_rules() -> None:
    o = outcome(w := played("rank_rules"), w.replicas["owner"])
    for label in ("self-promotion", "mod grants mod", "mod bans mod2", "mod deops mod2",
                  "mod bans owner", "member bans member"):
        assert not o.applied(label), label
    assert o.applied("mod mutes user")
    assert frozenset({"user"}) == o.muted
    assert frozenset() == o.banned
    assert frozenset({"mod", "mod2"}) == o.moderators


def test_posts_around_a_ban() -> None:
    o = outcome(w := played("posts_around_a_ban"), w.replicas["mod"])
    assert ("earlier", "owner talks") == o.visible


def test_modes_and_topic() -> None:
    w = played("modes_and_topic")
    o = outcome(w, w.replicas["owner"])
    assert not o.applied("topic by member")
    assert o.topic in ("owner's topic", "mod's topic")  # concurrent: decided by envelope id
    assert ("mod in moderated", "member again") == o.visible
    assert (("invite-only", False), ("moderated", False)) == o.modes


def test_invite_only_shows_added_members_only() -> None:
    o = outcome(w := played("invite_only"), w.replicas["user2"])
    assert o.applied("add user") and o.applied("kick user") and o.applied("add user again")
    assert ("open channel", "added", "wrote before") == o.visible
    assert (("invite-only", True), ("moderated", False)) == o.modes


def test_every_merged_replica_agrees() -> None:
    for name in SCENARIOS:
        w = played(name)
        first = summary(w.replicas["owner"])
        for person, state in w.replicas.items():
            assert first == summary(state), f"{name}: {person} differs"


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(SCENARIOS)), data=st.data())
def test_any_delivery_order_gives_the_same_fold(name: str, data: st.DataObject) -> None:
    w = played(name)
    expected = summary(w.replicas["owner"])
    raws = w.envelopes()
    order = data.draw(st.permutations(raws), label="order")
    dupes = data.draw(st.lists(st.sampled_from(raws), max_size=5), label="duplicates")
    assert expected == summary(w.observer(order + dupes))


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(sorted(SCENARIOS)), data=st.data())
def test_partitions_that_heal_give_the_same_fold(name: str, data: st.DataObject) -> None:
    w = played(name)
    expected = summary(w.replicas["owner"])
    raws = data.draw(st.permutations(w.envelopes()), label="order")
    cut = data.draw(st.integers(0, len(raws)), label="cut")
    left, right = w.observer(raws[:cut]), w.observer(raws[cut:])
    for _ in range(len(raws) + 1):  # parked envelopes may need a few rounds
        if not sync_into(left, right, w.now) + sync_into(right, left, w.now):
            break
    assert expected == summary(left) == summary(right)
