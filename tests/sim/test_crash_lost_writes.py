"""A node that lost its newest stored envelopes in a crash (its peers hold them),
restarts and writes again (issue 16, break 3).

Its new envelope at seq n+1 is a twin of the lost one; its envelope at n+2
continues the new branch, which a peer holding the old branch used to reject as
"change dependencies do not match the author's previous change", closing the
link: the node redialled, resent, and the channel never converged. Now a change
that continues another change than the one held at its device's previous seq
is fork evidence, quarantined like a twin, whatever order the branches arrive in.
"""

from __future__ import annotations

import pytest

from p2pchat.testing import SimNetwork, seed_from_env


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_crash_with_lost_writes_converges_without_a_close_loop(lost: int) -> None:
    seed = seed_from_env(1630 + lost)
    names = ["a", "b", "c"]
    net = SimNetwork(seed, names)
    channel = net.create_channel("a", "general")
    for name in names[1:]:
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), what="admissions")
    net.post("b", channel, "before")
    net.run_until_quiet()
    for i in range(4):
        net.post("a", channel, f"a{i}")
    net.run_until_quiet()
    net.restart("a", lose_last=lost)  # its newest `lost` envelopes are gone from its disk
    net.post("a", channel, "after the crash")
    net.post("a", channel, "and again")
    net.run_until_quiet()
    net.assert_converged(channel)
    invalid = [line for line in net.format_trace().splitlines()
               if "sent an invalid envelope" in line]
    assert not invalid, f"seed={seed}: links closed over the fork: {invalid[:3]}"
    forks = {n: dict(net.core(n).hub.channels[channel].equivocators) for n in names}
    assert forks["a"] and forks["a"] == forks["b"] == forks["c"], f"seed={seed}: {forks}"
    # what the others wrote is untouched, and b's history is the same everywhere
    texts = {n: [m.text for m in net.history(n, channel)] for n in names}
    assert "before" in texts["b"] and texts["a"] == texts["b"] == texts["c"], f"seed={seed}"
