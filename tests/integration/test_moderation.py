"""Moderation between real node processes: mod, members --json, modlog --json."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.channelkit import history, join, shared_channel, synced, wait_until
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration


def _ranks(node: NodeProcess, channel: str) -> dict[str, str]:
    result = node.cli("members", channel, "--json")
    assert 0 == result.returncode, result.stderr
    return {m["did"]: m["rank"] for m in json.loads(result.stdout)}


def _modlog(node: NodeProcess, channel: str) -> list[dict[str, object]]:
    result = node.cli("modlog", channel, "--json")
    assert 0 == result.returncode, result.stderr
    return list(json.loads(result.stdout))


def test_ban_takes_effect_on_every_node_and_the_modlog_explains(
    spawn: Callable[..., NodeProcess],
) -> None:
    owner, mod, user = spawn("O"), spawn("M"), spawn("U")
    channel, invite = shared_channel(owner, mod, "moderated")
    join(user, invite)
    wait_until(lambda: synced(user, channel), 10, "the user to receive the channel")
    assert 0 == user.cli("send", channel, "hello from the user").returncode
    assert 0 == owner.cli("mod", "op", channel, mod.did, "--reason", "helps out").returncode
    wait_until(lambda: _ranks(mod, channel).get(mod.did) == "moderator", 10,
               "the mod to see its rank")

    # a member cannot ban: refused locally, with the reason, exit 1
    refused = user.cli("mod", "ban", channel, mod.did)
    assert 1 == refused.returncode
    assert "would not count" in refused.stderr and "outrank" in refused.stderr
    bad = owner.cli("mod", "smite", channel, user.did)
    assert 2 == bad.returncode  # usage error

    assert 0 == mod.cli("mod", "ban", channel, user.did, "--reason", "spam").returncode
    wait_until(lambda: _ranks(user, channel).get(user.did) == "banned", 10,
               "the ban to reach the banned node")
    after = user.cli("send", channel, "after the ban")
    assert 1 == after.returncode and "banned" in after.stderr
    for node in (owner, mod, user):
        wait_until(lambda n=node: _ranks(n, channel) == {  # type: ignore[misc]
            owner.did: "owner", mod.did: "moderator", user.did: "banned"}, 10, "ranks")
        assert ["hello from the user"] == [m["text"] for m in history(node, channel)]
    log = _modlog(owner, channel)
    assert [("op", mod.did, owner.did, True), ("ban", user.did, mod.did, True)] == \
        [(e["action"], e["target"], e["by"], e["applied"]) for e in log]
    assert {"id", "action", "target", "by", "applied", "why", "reason"} <= set(log[1])
    assert "spam" == log[1]["reason"]
    text = owner.cli("modlog", channel)
    assert 0 == text.returncode and "ban" in text.stdout and "applied" in text.stdout

    # every member published a prekey (E2EE groundwork), seen by the others
    def prekeys(node: NodeProcess) -> dict[str, object]:
        result = node.cli("members", channel, "--json")
        return {m["did"]: m["prekey"] for m in json.loads(result.stdout)}

    wait_until(lambda: all(prekeys(owner).values()), 10, "every member's prekey")

    # a SIGKILLed member restarts with the same ranks, modlog, history and prekey
    before = (_ranks(mod, channel), _modlog(mod, channel), history(mod, channel),
              prekeys(mod))
    mod.kill()
    mod.start()
    assert before == (_ranks(mod, channel), _modlog(mod, channel), history(mod, channel),
                      prekeys(mod))

    # the topic is the fold's, shown by channel list everywhere
    assert 0 == mod.cli("mod", "topic", channel, "be nice").returncode
    wait_until(lambda: [c.get("topic") for c in json.loads(
        owner.cli("channel", "list", "--json").stdout)] == ["be nice"], 10, "the topic")

    # the owner unbans: the user may write again, and everyone sees it
    assert 0 == owner.cli("mod", "unban", channel, user.did).returncode
    wait_until(lambda: _ranks(user, channel).get(user.did) == "member", 10,
               "the unban to reach the user")
    assert 0 == user.cli("send", channel, "back again").returncode
    wait_until(lambda: [m["text"] for m in history(owner, channel)]
               == ["hello from the user", "back again"], 10, "the owner to see the user again")
