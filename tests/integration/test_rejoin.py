"""Kicked and banned members trying to come back, as real node processes and the CLI
(issue 16, breaks 4 and 5)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.channelkit import history, invite_of, join, shared_channel, wait_until
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration


def _keys(node: NodeProcess, channel: str) -> str:
    result = node.cli("channel", "list", "--json")
    return next(str(c["keys"]) for c in json.loads(result.stdout) if c["channel"] == channel)


def test_kicked_member_rejoins_with_a_new_invite_and_a_banned_one_is_refused(
    spawn: Callable[..., NodeProcess],
) -> None:
    owner, bob, eve = spawn("O"), spawn("B"), spawn("E")
    channel, invite = shared_channel(owner, bob, "general")
    join(eve, invite)
    wait_until(lambda: _keys(eve, channel) == "member", 20, "eve to be admitted")
    wait_until(lambda: _keys(bob, channel) == "member", 20, "bob to be admitted")

    assert 0 == owner.cli("mod", "kick", channel, bob.did, "--reason", "cool down").returncode
    wait_until(lambda: _keys(bob, channel) == "removed", 20, "bob to see the kick")
    kicked = bob.cli("send", channel, "still here?")
    assert 1 == kicked.returncode and "kicked" in kicked.stderr
    assert 0 == owner.cli("send", channel, "while bob was out").returncode

    again = bob.cli("join", invite_of(owner, channel))
    assert 0 == again.returncode, again.stderr
    assert "joined #general again" in again.stdout
    wait_until(lambda: _keys(bob, channel) == "member", 30, "bob to be readmitted")
    assert 0 == bob.cli("send", channel, "I am back").returncode
    wait_until(lambda: "I am back" in [m["text"] for m in history(owner, channel)], 20,
               "bob's post at the owner")
    assert "while bob was out" in [m["text"] for m in history(bob, channel)]

    assert 0 == owner.cli("mod", "ban", channel, eve.did, "--reason", "spam").returncode
    wait_until(lambda: _keys(eve, channel) == "removed", 20, "eve to see the ban")
    refused = eve.cli("join", invite_of(owner, channel))
    assert 1 == refused.returncode
    assert "you are banned from #general" in refused.stderr and "Traceback" not in refused.stderr
    as_json = eve.cli("join", invite_of(bob, channel), "--json")
    assert 0 != as_json.returncode and "banned" in as_json.stdout + as_json.stderr
    assert "removed" == _keys(eve, channel)
