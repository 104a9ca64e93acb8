"""A receiver never forwards what it could read and not apply (issue 16, break 9).

x, a member, sends an envelope whose change is not an Automerge change, correctly
signed and encrypted under the group epoch, to b only. b holds the key, so it can
tell: it stores the envelope as invalid (filling x's seq) and keeps the link, but
pushes nothing of it to c.
"""

from __future__ import annotations

from p2pchat.channel.state import Status
from p2pchat.testing import SimNetwork, seed_from_env


def test_an_invalid_change_is_stored_by_the_receiver_and_not_pushed_on() -> None:
    seed = seed_from_env(1690)
    names = ["b", "c", "x"]
    net = SimNetwork(seed, names)
    channel = net.create_channel("b", "general")
    net.join("c", channel)
    net.join("x", channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), what="admissions")
    net.run_until_quiet()
    net.hostile("x", channel, "bad_change", to=["b"])
    net.run_for(2.0)
    b, c = (net.core(n).hub.channels[channel] for n in ("b", "c"))
    invalid = [i for i in b.log if b.envs[i].status is Status.INVALID]
    assert len(invalid) == 1, f"seed={seed}: b stored {len(invalid)} invalid envelopes"
    assert invalid[0] not in c.envs, f"seed={seed}: b pushed the invalid envelope to c"
    assert not [line for line in net.format_trace().splitlines()
                if "sent an invalid envelope" in line], f"seed={seed}: a link was closed"
    # and the channel goes on: x's next post (after the invalid one in its chain) is
    # still readable everywhere once a summary fills c's gap
    net.post("x", channel, "after")
    net.run_until_quiet()
    assert "after" in [m.text for m in net.history("c", channel)], f"seed={seed}"
