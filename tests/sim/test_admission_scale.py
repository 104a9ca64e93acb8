"""Admission at community scale (issue 16, break 1): many joiners through one
inviter, all at once or arriving while earlier ones are still being admitted.

Every joiner here is linked to the inviter only (a star), so each joiner's
share reaches it only if the inviter pushes to *every* link that shares the
channel. A push capped at 16 links left joiners 17+ ``waiting`` for good.
"""

from __future__ import annotations

import itertools

import pytest

from p2pchat.testing import Faults, SimNetwork, Uniform, seed_from_env


def _names(count: int) -> list[str]:
    return ["inviter"] + [f"j{i:03d}" for i in range(1, count + 1)]


def _waiting(net: SimNetwork, names: list[str], channel: bytes) -> list[str]:
    return [n for n in names if not net.synced(n, channel)]


def _admit_all(net: SimNetwork, names: list[str], channel: bytes, seed: int) -> None:
    try:
        net.wait_for(lambda: not _waiting(net, names, channel), timeout=600,
                     what="every joiner to be admitted")
    except Exception as exc:  # name who is stuck, and with which key status
        stuck = _waiting(net, names, channel)
        status = {n: net.core(n).hub.channels[channel].key_status() for n in stuck[:10]}
        raise AssertionError(f"seed={seed}: {len(stuck)} never admitted: {status}") from exc


def _check_members(net: SimNetwork, names: list[str], channel: bytes, seed: int) -> None:
    for name in names:
        state = net.core(name).hub.channels[channel]
        assert state.key_status() == "member", f"seed={seed}: {name} {state.key_status()}"
    # and they can talk: the last joiner's post reaches the first joiner through the star
    msg = net.post(names[-1], channel, "hello from the last joiner")
    net.wait_for(lambda: msg in {m.id for m in net.history(names[1], channel)},
                 timeout=600, what="the last joiner's post at the first joiner")


@pytest.mark.parametrize("count", [20, 50, pytest.param(200, marks=pytest.mark.timeout(900))])
def test_many_joiners_through_one_inviter_are_all_admitted(count: int) -> None:
    seed = seed_from_env(160 + count)
    names = _names(count)
    net = SimNetwork(seed, names)
    channel = net.create_channel("inviter", "general")
    for name in names[1:]:
        net.join(name, channel, via="inviter")
    _admit_all(net, names, channel, seed)
    _check_members(net, names, channel, seed)


def test_joiners_arriving_while_others_are_being_admitted() -> None:
    """Waves of joiners: each wave joins while the previous one is still mid-admission
    (a few simulated milliseconds apart), and posts flow the whole time."""
    seed = seed_from_env(1601)
    names = _names(40)
    net = SimNetwork(seed, names)
    channel = net.create_channel("inviter", "general")
    for wave in range(4):
        for name in names[1 + wave * 10:11 + wave * 10]:
            net.join(name, channel, via="inviter")
        net.post("inviter", channel, f"wave {wave}")
        net.run_for(0.005)
    _admit_all(net, names, channel, seed)
    net.run_until_quiet()
    net.assert_converged(channel)
    _check_members(net, names, channel, seed)


def test_thirty_node_line_at_realistic_latency_admits_everyone() -> None:
    """A line (each joins through the previous one) at 5-40 ms one-way latency: every
    admission but the first waits out another member's grace on a millisecond timer,
    which used to fire 1 ms early and spin (issue 16, break 2)."""
    seed = seed_from_env(1602)
    names = [f"n{i:02d}" for i in range(30)]
    net = SimNetwork(seed, names, faults=Faults(latency=Uniform(0.005, 0.040)))
    channel = net.create_channel(names[0], "line")
    for prev, name in itertools.pairwise(names):
        net.join(name, channel, via=prev)
    _admit_all(net, names, channel, seed)
    msg = net.post(names[-1], channel, "from the far end")
    net.wait_for(lambda: msg in {m.id for m in net.history(names[0], channel)},
                 timeout=600, what="the far end's post at the founder")
