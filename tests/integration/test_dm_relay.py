"""Direct messages with real processes between members that have no link to each other
(design.md §10.15): through a shared member, and through a bootstrap server while the
two are never online at the same time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.channelkit import (
    all_stored,
    history,
    join,
    shared_channel,
    synced,
    wait_until,
)
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_store_and_forward import (  # noqa: F401 (the fixture)
    ServerProcess,
    _config,
    _server_linked,
    servers,
)

pytestmark = pytest.mark.integration


def _dm(node: NodeProcess, did: str, text: str) -> dict[str, Any]:
    result = node.cli("dm", did, text, "--json")
    assert 0 == result.returncode, result.stderr
    return dict(json.loads(result.stdout))


def _texts(node: NodeProcess, did: str) -> list[str]:
    result = node.cli("history", did, "--json")
    if result.returncode != 0:  # no DM channel with that peer yet
        return []
    return [m["text"] for m in json.loads(result.stdout)]


def _linked(node: NodeProcess) -> set[str]:
    return {p["did"] for p in json.loads(node.cli("peers", "--json").stdout)}


def test_a_dm_goes_through_a_shared_member_and_the_reply_comes_back(
    spawn: Callable[..., NodeProcess],
) -> None:
    alice = spawn("A")
    bob = spawn("B")
    carol = spawn("C")
    # bob and carol join #general through alice's invites, which name alice only; they
    # listen on loopback (no mDNS) and use no server: alice is their only way
    general, invite = shared_channel(alice, bob, "general")
    join(carol, invite)
    wait_until(lambda: synced(carol, general), 10, "carol to receive #general")
    assert 0 == carol.cli("send", general, "hello all").returncode
    wait_until(lambda: any(m["author"] == carol.did for m in history(bob, general)), 10,
               "bob to see carol in #general")
    sent = _dm(bob, carol.did, "psst carol")
    assert sent["new"] and sent["status"] in ("delivered", "relayed"), sent
    wait_until(lambda: _texts(carol, bob.did) == ["psst carol"], 15,
               "carol to read bob's DM")
    reply = _dm(carol, bob.did, "hi bob")
    assert not reply["new"] and reply["status"] in ("delivered", "relayed"), reply
    wait_until(lambda: _texts(bob, carol.did) == ["psst carol", "hi bob"], 15,
               "bob to read carol's reply")
    assert carol.did not in _linked(bob) and bob.did not in _linked(carol)
    # alice holds no DM channel: she carried sealed items only
    assert all(not c["dm"] for c in json.loads(alice.cli("channel", "list", "--json").stdout))
    # once both receipts are in, a further DM reports delivered
    again = _dm(bob, carol.did, "one more")
    assert again["status"] == "delivered", again
    result = bob.cli("dm", carol.did, "in words")
    assert 0 == result.returncode and "delivered" in result.stdout, result.stdout


def test_a_dm_waits_on_a_bootstrap_server_while_the_two_are_never_online_together(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],  # noqa: F811
) -> None:
    s = servers("S")
    config = _config(s.address)
    carol = spawn("C", config=config)  # once, to have a DID to write to
    carol_did = carol.did
    assert 0 == carol.stop()
    bob = spawn("B", config=config)
    wait_until(lambda: _server_linked(bob, s.address), 10, "bob to reach the server")
    sent = _dm(bob, carol_did, "while you were out")
    assert sent["status"] == "stored", sent
    assert "stored on a bootstrap server" in bob.cli("dm", carol_did, "and this").stdout
    wait_until(lambda: all_stored(bob), 10, "bob's uploads to the server")
    assert 0 == bob.stop()
    carol.start()
    wait_until(lambda: _texts(carol, bob.did) == ["while you were out", "and this"], 20,
               "carol to get bob's DMs from the server")
    wait_until(lambda: _server_linked(carol, s.address), 10, "carol to reach the server")
    reply = _dm(carol, bob.did, "got it")
    assert reply["status"] == "stored" and not reply["new"], reply
    wait_until(lambda: all_stored(carol), 10, "carol's uploads to the server")
    assert 0 == carol.stop()
    bob.start()
    wait_until(lambda: _texts(bob, carol_did) == ["while you were out", "and this", "got it"],
               20, "bob to get carol's reply from the server")
