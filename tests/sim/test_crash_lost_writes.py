"""A node that lost its newest stored envelopes in a crash (its peers hold them),
restarts and writes again (issue 16, break 3).

Before: its envelope at seq n+1 was a twin of the lost one and its envelope at
n+2 continued the new branch, which a peer holding the old branch rejected as
"change dependencies do not match the author's previous change", closing the
link; the node redialled and resent, and the channel never converged.

Now (design.md §10.5): (a) a start that may have lost writes leaves the node's
own chain head *unsure*; a write before a peer's summary shows the head goes to
a fresh sub-device, so nothing is lost, hidden or forked; (b) a true fork (the
same device writing two branches, e.g. a home restored from an old copy) is
quarantined identically everywhere, whatever order the branches arrive in, and
closes no link; the forked node goes on writing as a sub-device.
"""

from __future__ import annotations

import pytest

from p2pchat.testing import SimNetwork, seed_from_env

NAMES = ["a", "b", "c"]


def _world(seed: int) -> tuple[SimNetwork, bytes]:
    net = SimNetwork(seed, NAMES)
    channel = net.create_channel("a", "general")
    for name in NAMES[1:]:
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in NAMES), what="admissions")
    net.post("b", channel, "before")
    net.run_until_quiet()
    return net, channel


def _no_close_over_envelopes(net: SimNetwork, seed: int) -> None:
    invalid = [line for line in net.format_trace().splitlines()
               if "sent an invalid envelope" in line]
    assert not invalid, f"seed={seed}: links closed over the fork: {invalid[:3]}"


def _texts(net: SimNetwork, name: str, channel: bytes) -> list[str]:
    return [m.text for m in net.history(name, channel)]


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_writes_after_a_crash_that_lost_writes_lose_and_hide_nothing(lost: int) -> None:
    seed = seed_from_env(1630 + lost)
    net, channel = _world(seed)
    sent = [f"a{i}" for i in range(4)]
    for text in sent:
        net.post("a", channel, text)
    net.run_until_quiet()
    net.restart("a", lose_last=lost)  # its newest `lost` envelopes are gone from its disk
    after = net.post("a", channel, "after the crash")  # before any link is back
    net.post("a", channel, "and again")
    net.run_until_quiet()
    net.assert_converged(channel)
    _no_close_over_envelopes(net, seed)
    for name in NAMES:
        state = net.core(name).hub.channels[channel]
        assert not state.equivocators, f"seed={seed}: {name} saw a fork"
        assert ["before", *sent, "after the crash", "and again"] == _texts(net, name, channel)
    # what a wrote after the crash is its own: it can still edit it
    net.message_op("a", channel, "edit", after, text="after the crash (edited)")
    net.run_until_quiet()
    assert "after the crash (edited)" in _texts(net, "c", channel), f"seed={seed}"


def test_a_restart_that_lost_writes_learns_its_head_before_writing() -> None:
    """Links come back before the next write: the node fetches its own lost envelopes
    and goes on on the same device (no sub-device), and can edit its old messages."""
    seed = seed_from_env(1634)
    net, channel = _world(seed)
    first = net.post("a", channel, "a0")
    net.post("a", channel, "a1")
    net.run_until_quiet()
    device = net.core("a").hub.channels[channel].identity.device_salt
    net.restart("a", lose_last=1)
    net.wait_for(lambda: not net.core("a").hub.channels[channel].head_unsure,
                 what="a to learn its chain head from a peer")
    net.post("a", channel, "a2")
    net.message_op("a", channel, "edit", first, text="a0 (edited)")
    net.run_until_quiet()
    net.assert_converged(channel)
    assert device == net.core("a").hub.channels[channel].identity.device_salt
    assert ["before", "a0 (edited)", "a1", "a2"] == _texts(net, "b", channel)


@pytest.mark.parametrize("lost", [1, 2])
def test_a_true_fork_is_quarantined_the_same_everywhere_and_closes_no_link(lost: int) -> None:
    """The same loss, but the node does not know it may have lost writes (a home
    restored from an old copy): its device forks. Every replica records the same
    fork, no link is closed over it, and the node writes on as a sub-device."""
    seed = seed_from_env(1640 + lost)
    net, channel = _world(seed)
    for i in range(4):
        net.post("a", channel, f"a{i}")
    net.run_until_quiet()
    net.restart("a", lose_last=lost)
    net.core("a").hub.channels[channel].head_unsure = False  # as if it could not know
    net.post("a", channel, "forked")
    net.post("a", channel, "forked again")
    net.run_until_quiet()
    net.post("a", channel, "on a sub-device")
    net.run_until_quiet()
    net.assert_converged(channel)
    _no_close_over_envelopes(net, seed)
    forks = {n: dict(net.core(n).hub.channels[channel].equivocators) for n in NAMES}
    assert forks["a"] and forks["a"] == forks["b"] == forks["c"], f"seed={seed}: {forks}"
    texts = {n: _texts(net, n, channel) for n in NAMES}
    assert texts["a"] == texts["b"] == texts["c"], f"seed={seed}"
    assert "before" in texts["b"] and "on a sub-device" in texts["b"], f"seed={seed}"
