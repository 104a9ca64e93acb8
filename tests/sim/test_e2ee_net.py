"""Group keys on a simulated network of real NodeCores: admissions, rotations on
removal, convergence of concurrent rotations, and catch-up after long absences."""

from __future__ import annotations

from p2pchat.channel.state import ChannelState, Status
from p2pchat.testing import SimNetwork, seed_from_env


def _state(net: SimNetwork, name: str, channel: bytes) -> ChannelState:
    return net.core(name).hub.channels[channel]


def _world(seed: int, names: list[str]) -> tuple[SimNetwork, bytes]:
    net = SimNetwork(seed, names)
    channel = net.create_channel(names[0], "e2ee")
    for name in names[1:]:
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), what="admissions")
    return net, channel


def test_joiners_are_admitted_by_the_member_they_reach_and_read_everything() -> None:
    seed = seed_from_env(71)
    net, channel = _world(seed, ["a", "b", "c"])
    for name in ("a", "b", "c"):
        net.post(name, channel, f"hello from {name}")
    net.run_until_quiet()
    net.assert_converged(channel)
    states = [_state(net, n, channel) for n in ("a", "b", "c")]
    assert {s.key_status() for s in states} == {"member"}, f"seed={seed}"
    assert {s.group.send_epoch(net.wall_ms("a")) for s in states} != {None}
    assert all(s.sealed_count() == 0 for s in states)


def test_concurrent_bans_heal_into_one_epoch_neither_banned_member_opens() -> None:
    """Two moderators ban X and Y on two sides of a partition; after the heal the
    moderators rotate on their own (nobody posts) and every replica settles on the
    same epoch, which neither X nor Y holds."""
    seed = seed_from_env(72)
    names = ["owner", "m1", "m2", "x", "y"]
    net, channel = _world(seed, names)
    net.moderate("owner", channel, "op", "m1")
    net.moderate("owner", channel, "op", "m2")
    net.run_until_quiet()
    net.partition(["owner", "m1", "x"], ["m2", "y"])
    net.moderate("m1", channel, "ban", "x")
    net.moderate("m2", channel, "ban", "y")
    net.run_for(5.0)
    before = set(_state(net, "owner", channel).group.epochs)
    net.heal()
    net.run_until_quiet()
    # storm suppression: no member rotated twice for the same set of heads
    owner_state = _state(net, "owner", channel)
    made = [(owner_state.group.epochs[e].distributor, owner_state.group.epochs[e].parents)
            for e in set(owner_state.group.epochs) - before]
    assert made and len(made) == len(set(made)), f"seed={seed}: {made}"
    assert len(made) <= 3 * 2, f"seed={seed}: a rotation storm: {len(made)} rotations"
    net.assert_converged(channel, ["owner", "m1", "m2"])  # the banned get no sync
    now = net.wall_ms("owner")
    chosen = {_state(net, n, channel).group.send_epoch(now) for n in ("owner", "m1", "m2")}
    assert len(chosen) == 1 and None not in chosen, f"seed={seed}: {chosen}"
    (epoch,) = chosen
    for banned in ("x", "y"):
        state = _state(net, banned, channel)
        assert epoch not in state.group.secrets, f"seed={seed}: {banned} holds it"
    net.post("m2", channel, "after the heal")
    net.run_until_quiet()
    for name in ("owner", "m1", "m2"):
        assert "after the heal" == net.history(name, channel)[-1].text
    for banned in ("x", "y"):
        assert "after the heal" not in [m.text for m in net.history(banned, channel)]


def test_offline_through_ten_rotations_and_a_removal_reads_what_it_is_entitled_to() -> None:
    seed = seed_from_env(73)
    net, channel = _world(seed, ["a", "b", "c", "d"])
    net.post("b", channel, "b was here")
    net.run_until_quiet()
    net.partition(["a", "c", "d"], ["b"])
    rotations_before = len(_state(net, "a", channel).group.epochs)
    texts = []
    for i in range(1000):  # ten routine rotations (every 100 envelopes)
        text = f"a-{i}"
        net.post("a", channel, text)
        texts.append(text)
        if i == 500:
            net.moderate("a", channel, "kick", "d")  # a removal of someone else
        if i % 50 == 0:
            net.run_for(0.5)
    net.run_until_quiet()
    a = _state(net, "a", channel)
    assert len(a.group.epochs) - rotations_before >= 10, f"seed={seed}"
    net.heal()
    net.run_until_quiet()
    b = _state(net, "b", channel)
    assert b.sealed_count() == 0 and b.key_status() == "member", f"seed={seed}"
    assert ["b was here", *texts] == [m.text for m in net.history("b", channel)]
    # d, kicked at a-500: sealed out of everything written after its removal was known
    d = _state(net, "d", channel)
    kick = next(e.env for e in a.mod_events if e.action == "kick")
    later = [i for i in a.log if a.in_past(kick, i)
             and a.envs[i].epoch != a.clear_epoch]
    assert later and all(d.envs[i].status is Status.SEALED for i in later if i in d.envs)
    assert d.key_status() == "removed"
