"""Moderation on a simulated network of real NodeCores: bans take effect everywhere,
banned peers get no sync, and concurrent moderation converges through partitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.state import Status
from p2pchat.core.events import SendRequested
from p2pchat.testing import Faults, SimNetwork, seed_from_env


def _world(seed: int) -> tuple[SimNetwork, bytes]:
    net = SimNetwork(seed, ["owner", "mod", "user", "other"])
    channel = net.create_channel("owner", "modnet")
    for name in ("mod", "user", "other"):
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in ("mod", "user", "other")),
                 what="everyone to sync")
    net.moderate("owner", channel, "op", "mod")
    net.post("user", channel, "hello")
    net.run_until_quiet()
    return net, channel


def test_a_ban_hides_nothing_earlier_and_refuses_everything_later() -> None:
    seed = seed_from_env(61)
    net, channel = _world(seed)
    net.moderate("mod", channel, "ban", "user", reason="spam")
    net.run_until_quiet()
    rid = 9000
    net.request("user", SendRequested(rid, channel, "after", net.wall_ms("user")))
    assert "you are banned" in (net.answers[rid].error or ""), f"seed={seed}"
    for name in ("owner", "mod", "other", "user"):
        assert ["hello"] == [m.text for m in net.history(name, channel)], f"seed={seed} {name}"
        ranks = dict(net.core(name).hub.channels[channel].member_ranks())
        assert "banned" == ranks[net.did("user")]
        assert "moderator" == ranks[net.did("mod")]
    net.assert_converged(channel)


def test_a_banned_peer_gets_no_sync_and_its_envelopes_are_not_pushed() -> None:
    seed = seed_from_env(62)
    net, channel = _world(seed)
    net.moderate("owner", channel, "ban", "user")
    net.run_until_quiet()
    owner_hub = net.core("owner").hub
    shared = [lc for lc in owner_hub._links.values() if lc.link.peer_did == net.did("user")]
    assert shared and all(channel not in lc.shared and channel in lc.refused for lc in shared)
    # the banned node keeps writing (a hostile client): nobody applies or forwards it
    state = net.core("user").hub.channels[channel]
    state.writer.check_may_write = lambda posting=True: None  # type: ignore[method-assign]
    with pytest.raises(Exception, match="banned"):
        net.post("user", channel, "spam")
    net.run_until_quiet()
    for name in ("owner", "mod", "other"):
        hub = net.core(name).hub.channels[channel]
        assert ["hello"] == [m.text for m in net.history(name, channel)]
        assert not any(m.status is Status.REFUSED for m in hub.envs.values()), name


def test_unbanning_resumes_sync() -> None:
    seed = seed_from_env(63)
    net, channel = _world(seed)
    net.moderate("owner", channel, "ban", "user")
    net.run_until_quiet()
    net.moderate("owner", channel, "unban", "user")
    net.run_until_quiet()
    net.post("user", channel, "back")
    net.run_until_quiet()
    for name in ("owner", "mod", "other"):
        assert ["hello", "back"] == [m.text for m in net.history(name, channel)], name
    net.assert_converged(channel)


@pytest.mark.parametrize("seed", [64, 65, 66])
def test_concurrent_moderation_converges_through_partitions(seed: int) -> None:
    seed = seed_from_env(seed)
    net, channel = _world(seed)
    net.faults = Faults.chaos()
    net.partition(["owner", "other"], ["mod", "user"])
    net.moderate("mod", channel, "ban", "user")
    net.moderate("owner", channel, "unban", "user")
    net.moderate("owner", channel, "topic", value="from the owner")
    net.moderate("mod", channel, "topic", value="from the mod")
    net.post("other", channel, "meanwhile")
    net.run_for(5.0)
    net.heal()
    net.calm()
    net.run_until_quiet()
    members = ["owner", "mod", "other"]  # the user is banned: nobody syncs with it
    net.assert_converged(channel, members)
    logs = {name: net.core(name).hub.channels[channel].modlog() for name in members}
    assert all(log == logs["owner"] for log in logs.values()), f"seed={seed}"
    fold = net.core("other").hub.channels[channel].moderation()
    assert {net.did("user")} == fold.banned, f"seed={seed}: ban beats a concurrent unban"
    assert fold.topic in ("from the owner", "from the mod")


def test_invite_only_channels_sync_only_with_members_and_an_add_lets_one_in() -> None:
    seed = seed_from_env(67)
    net = SimNetwork(seed, ["owner", "member", "newcomer"])
    channel = net.create_channel("owner", "closed")
    net.join("member", channel)
    net.wait_for(lambda: net.synced("member", channel), what="the member to sync")
    net.post("member", channel, "before the mode")
    net.run_until_quiet()
    net.moderate("owner", channel, "mode", value="invite-only")
    net.run_until_quiet()
    net.join("newcomer", channel)  # holds the key, but nobody syncs with it
    net.run_until_quiet()
    assert not net.synced("newcomer", channel), f"seed={seed}"
    net.post("member", channel, "still a member")  # wrote before invite-only
    net.run_until_quiet()
    net.moderate("owner", channel, "add", "newcomer")
    net.wait_for(lambda: net.synced("newcomer", channel), what="the newcomer to sync")
    net.run_until_quiet()
    net.post("newcomer", channel, "let in")
    net.run_until_quiet()
    net.assert_converged(channel)
    assert ["before the mode", "still a member", "let in"] == \
        [m.text for m in net.history("owner", channel)], f"seed={seed}"


def _chaos_world(seed: int) -> tuple[SimNetwork, bytes]:
    net, channel = _world(seed)
    net.faults = Faults.chaos()
    return net, channel


def _settle(net: SimNetwork, channel: bytes, members: list[str]) -> None:
    net.heal()
    net.calm()
    net.run_until_quiet()
    net.assert_converged(channel, members)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), scenario=st.sampled_from(
    ["ban-unban", "revoked", "back-dated"]))
def test_moderation_scenarios_converge_for_any_network_schedule(seed: int, scenario: str) -> None:
    """Hypothesis picks the seed, and with it every delay, loss, duplicate, reordering and
    partition: each scenario must end with the same verdicts on every member."""
    net, channel = _chaos_world(seed)
    user = net.did("user")
    if scenario == "ban-unban":
        net.partition(["owner", "other"], ["mod", "user"])
        net.moderate("mod", channel, "ban", "user")
        net.moderate("owner", channel, "unban", "user")
        members = ["owner", "mod", "other"]
    elif scenario == "revoked":
        net.partition(["owner", "other"], ["mod", "user"])
        net.moderate("owner", channel, "deop", "mod")
        net.moderate("mod", channel, "mute", "user")
        members = ["owner", "mod", "user", "other"]
    else:
        net.partition(["owner", "other"], ["mod", "user"])
        net.moderate("owner", channel, "deop", "mod")
        net.run_for(3.0)
        net.moderate("mod", channel, "kick", "user")  # later, on a view without the deop
        members = ["owner", "mod", "user", "other"]
    net.run_for(2.0)
    _settle(net, channel, members)
    folds = [net.core(n).hub.channels[channel].moderation() for n in members]
    logs = [net.core(n).hub.channels[channel].modlog() for n in members]
    assert all(log == logs[0] for log in logs), f"seed={seed}"
    fold = folds[0]
    if scenario == "ban-unban":
        assert {user} == fold.banned, f"seed={seed}"
    elif scenario == "revoked":
        assert set() == fold.muted and not fold.moderators, f"seed={seed}"
    else:
        assert set() == fold.kicked and not fold.moderators, f"seed={seed}"
        assert [False] == [e["applied"] for e in logs[0] if e["action"] == "kick"]
