"""Kicked members coming back, banned members trying to (issue 16, breaks 4 and 5).

A kick ends when the kicked member writes a join that follows it (design.md
§10.15); the join must then be admitted like a first one, although the member
still holds the epochs from before its kick. A banned member's join is refused
at once with the reason, not reported as "joined".
"""

from __future__ import annotations

import pytest

from p2pchat.core.events import JoinRequested
from p2pchat.testing import SimNetwork, seed_from_env

NAMES = ["owner", "alice", "bob"]


def _world(seed: int) -> tuple[SimNetwork, bytes]:
    net = SimNetwork(seed, NAMES)
    channel = net.create_channel("owner", "general")
    for name in NAMES[1:]:
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in NAMES), what="admissions")
    return net, channel


def _status(net: SimNetwork, name: str, channel: bytes) -> str:
    return net.core(name).hub.channels[channel].key_status()


def _rejoin(net: SimNetwork, name: str, channel: bytes, via: str) -> dict[str, object] | str:
    """``name`` joins again with a fresh invite made by ``via``: the answer, or its error."""
    hub = net.core(via).hub
    invite = hub.invite_for(channel, net.wall_ms(via))
    rid = net._request_id()
    net.request(name, JoinRequested(rid, channel, invite.name,
                                    ((net.nodes[via].did, net.nodes[via].address),),
                                    net.wall_ms(name), invite.cap, invite.grant,
                                    invite.grant_signature, invite.genesis))
    answer = net.answers[rid]
    if answer.error is not None:
        return answer.error
    assert answer.result is not None
    return answer.result


@pytest.mark.parametrize("via", ["owner", "alice"])
def test_a_kicked_member_comes_back_with_a_new_invite_and_reads_again(via: str) -> None:
    seed = seed_from_env(1650)
    net, channel = _world(seed)
    net.moderate("owner", channel, "kick", "bob", reason="cool down")
    net.run_until_quiet()
    assert "removed" == _status(net, "bob", channel)
    secret = net.post("owner", channel, "while bob was out")
    net.run_until_quiet()
    answer = _rejoin(net, "bob", channel, via)
    assert isinstance(answer, dict) and answer.get("rejoined"), f"seed={seed}: {answer}"
    net.wait_for(lambda: _status(net, "bob", channel) == "member", timeout=600,
                 what="bob to be readmitted")
    net.post("bob", channel, "I am back")
    net.run_until_quiet()
    net.assert_converged(channel)
    texts = [m.text for m in net.history("alice", channel)]
    assert "I am back" in texts, f"seed={seed}: {texts}"
    # the keys were shared again: bob reads what was written while he was out
    assert secret in {m.id for m in net.history("bob", channel)}, f"seed={seed}"


def test_a_kicked_member_who_rejoins_is_kicked_again_and_comes_back_again() -> None:
    seed = seed_from_env(1651)
    net, channel = _world(seed)
    for round_ in range(2):
        net.moderate("owner", channel, "kick", "bob")
        net.run_until_quiet()
        assert "removed" == _status(net, "bob", channel), f"seed={seed} round {round_}"
        assert isinstance(_rejoin(net, "bob", channel, "alice"), dict)
        net.wait_for(lambda: _status(net, "bob", channel) == "member", timeout=600,
                     what=f"bob readmitted, round {round_}")
    net.post("bob", channel, "back twice")
    net.run_until_quiet()
    assert "back twice" in [m.text for m in net.history("owner", channel)]


def test_a_banned_member_is_refused_with_the_reason() -> None:
    seed = seed_from_env(1652)
    net, channel = _world(seed)
    net.moderate("owner", channel, "ban", "bob", reason="spam")
    net.run_until_quiet()
    answer = _rejoin(net, "bob", channel, "alice")
    assert isinstance(answer, str) and "you are banned from #general" in answer, answer
    net.run_until_quiet()
    assert "removed" == _status(net, "bob", channel)


def test_joining_a_channel_one_is_a_member_of_says_so() -> None:
    seed = seed_from_env(1653)
    net, channel = _world(seed)
    answer = _rejoin(net, "bob", channel, "alice")
    assert isinstance(answer, dict) and answer["new"] is False and answer["status"] == "member"
