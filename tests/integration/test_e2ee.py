"""End-to-end encryption with real processes: a member offline through ten rotations and
a ban catches up from a bootstrap server alone, the banned member gets the server's whole
store and reads nothing after its ban, and the server holds no plaintext and no secret."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from p2pchat.channel.envelope import Envelope, channel_topic, decode_envelope
from p2pchat.channel.invite import parse_channel_id
from p2pchat.channel.keys import message_key
from p2pchat.crypto import DecryptionError
from p2pchat.home import DB_FILE
from tests.integration.channelkit import (
    all_stored,
    create_channel,
    history,
    join,
    synced,
    wait_until,
)
from tests.integration.nodeproc import NodeProcess, _env, free_udp_port
from tests.integration.test_store_and_forward import (  # noqa: F401 (the fixture)
    ServerProcess,
    _config,
    _server_linked,
    servers,
)

pytestmark = pytest.mark.integration


def _send_all(node: NodeProcess, channel: str, texts: list[str]) -> None:
    sent = subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel,
         "--stdin"], input="\n".join(texts) + "\n", capture_output=True, text=True,
        env=_env(), timeout=120, check=False)
    assert 0 == sent.returncode, sent.stderr


def _channel_row(node: NodeProcess, channel: str) -> dict[str, object]:
    rows = json.loads(node.cli("channel", "list", "--json").stdout)
    return next(r for r in rows if r["channel"] == channel)


def _db_rows(path: Path, query: str) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [bytes(r[0]) for r in db.execute(query).fetchall()]


def _open_any(env: Envelope, secrets: list[bytes], channel: bytes) -> bytes | None:
    """The plaintext of ``env`` under the first of ``secrets`` that opens it."""
    for secret in secrets:
        try:
            return env.decrypt(message_key(secret, env.author), channel)
        except DecryptionError:
            continue
    return None


def _secrets(node: NodeProcess) -> list[bytes]:
    return _db_rows(node.home / DB_FILE, "SELECT secret FROM epoch_keys") + \
        _db_rows(node.home / DB_FILE, "SELECT private FROM prekeys")


def test_offline_member_catches_up_from_a_server_and_a_banned_one_reads_nothing(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],  # noqa: F811
) -> None:
    s = servers("S")
    config = _config(s.address)
    a = spawn("A", config=config)
    channel, invite = create_channel(a, "sealed")
    b = spawn("B", config=config)
    c = spawn("C", config=config)
    join(b, invite)
    join(c, invite)
    for node in (b, c):
        wait_until(lambda n=node: synced(n, channel), 15, "admission")  # type: ignore[misc]
    wait_until(lambda: all(_server_linked(n, s.address) for n in (a, b, c)), 10,
               "everyone to reach the server")
    assert 0 == b.stop()  # B is offline from here on
    tag = time.monotonic_ns()
    before = [f"before {i} {tag}" for i in range(500)]
    after = [f"after {i} {tag}" for i in range(500)]
    _send_all(a, channel, before)
    assert 0 == a.cli("mod", "ban", channel, c.did, "--reason", "test").returncode
    _send_all(a, channel, after)
    wait_until(lambda: all_stored(a), 20, "A's uploads to the server")
    epochs = len(_db_rows(a.home / DB_FILE, "SELECT secret FROM epoch_keys"))
    assert epochs >= 11, f"only {epochs - 1} rotations"  # ten routine ones and the ban's
    assert 0 == a.stop()
    # C, banned, takes everything the server has (it cannot tell members apart)
    server_db = next(p for p in s.home.rglob("*.db"))
    wait_until(lambda: set(_db_rows(server_db, "SELECT data FROM envelopes"))
               <= set(_db_rows(c.home / DB_FILE, "SELECT data FROM envelopes")), 30,
               "C to receive the whole store")
    assert int(_channel_row(c, channel)["sealed"]) > 0  # type: ignore[call-overload]
    assert 0 == c.stop()
    # B comes back with nobody online but the server: it reads all of it
    b.start()
    wait_until(lambda: [m["text"] for m in history(b, channel)] == before + after, 30,
               "B to catch up through ten rotations from the server alone")
    assert "member" == _channel_row(b, channel)["keys"]
    c.start()
    seen = {m["text"] for m in history(c, channel)}
    assert set(before) <= seen and not seen & set(after)
    assert "removed" == _channel_row(c, channel)["keys"]
    assert 0 == c.stop() and 0 == b.stop()
    s.stop()
    # with its whole keyring, C opens no envelope the server holds that was written after
    db = next(p for p in s.home.rglob("*.db"))
    cid = parse_channel_id(channel)
    stored = [decode_envelope(raw, channel_topic(cid))
              for raw in _db_rows(db, "SELECT data FROM envelopes")]
    a_secrets = _db_rows(a.home / DB_FILE, "SELECT secret FROM epoch_keys")
    everything = b"".join(_open_any(env, a_secrets, cid) or b"" for env in stored)
    assert all(t.encode() in everything for t in before + after)  # every post is there
    opened: list[bytes] = []  # plaintexts: the operation and its change (with the text)
    c_secrets = _db_rows(c.home / DB_FILE, "SELECT secret FROM epoch_keys")
    for env in stored:
        for secret in c_secrets:
            try:
                opened.append(env.decrypt(message_key(secret, env.author), cid))
            except DecryptionError:
                continue
    seen_texts = {t for t in before + after if any(t.encode() in p for p in opened)}
    assert set(before) <= seen_texts and not seen_texts & set(after)
    # and the server's files hold no plaintext and no secret of anyone
    blob = b"".join(p.read_bytes() for p in s.home.rglob("*") if p.is_file()
                    and not p.name.endswith(".sock"))
    for text in before[:50] + after[:50]:
        assert text.encode() not in blob
    secrets = _secrets(a) + _secrets(b) + _secrets(c)
    assert len(secrets) >= 14
    for secret in secrets:
        assert secret not in blob and secret.hex().encode() not in blob


def test_direct_messages_between_two_processes(
    spawn: Callable[..., NodeProcess],
) -> None:
    a = spawn("A")
    b = spawn("B", free_udp_port())
    assert 0 == a.cli("connect", f"{b.did}@127.0.0.1:{b.port}").returncode
    sent = a.cli("dm", b.did, "hello over a dm", "--json")
    assert 0 == sent.returncode, sent.stderr
    assert json.loads(sent.stdout)["new"] is True
    wait_until(lambda: [m["text"] for m in history(b, a.did)] == ["hello over a dm"]
               if b.cli("history", a.did).returncode == 0 else False, 10,
               "B to receive the DM channel and read it")
    assert 0 == b.cli("dm", a.did, "and back").returncode
    wait_until(lambda: [m["text"] for m in history(a, b.did)] ==
               ["hello over a dm", "and back"], 10, "A to read the answer")
    listed = json.loads(b.cli("channel", "list", "--json").stdout)
    assert [c["dm"] for c in listed] == [a.did]
    made = json.loads(a.cli("channel", "create", "fleeting", "--ephemeral", "--json").stdout)
    assert "ephemeral" == made["policy"]
    rows = json.loads(a.cli("channel", "list", "--json").stdout)
    assert {"history", "ephemeral"} == {r["policy"] for r in rows}
    stranger = "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH"
    assert "no direct messages" in a.cli("history", stranger).stderr


def test_a_joiner_is_admitted_by_another_member_when_the_inviter_is_offline(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],  # noqa: F811
) -> None:
    s = servers("S")
    config = _config(s.address)
    a = spawn("A", config=config)
    channel, first_invite = create_channel(a, "relayed-join")
    c = spawn("C", config=config)
    join(c, first_invite)
    wait_until(lambda: synced(c, channel), 15, "C's admission by A")
    invite = json.loads(a.cli("invite", channel, "--no-peers", "--json").stdout)["invite"]
    assert 0 == a.cli("send", channel, "from the inviter").returncode
    wait_until(lambda: _server_linked(a, s.address) and _server_linked(c, s.address), 10,
               "A and C to reach the server")
    wait_until(lambda: all_stored(a), 10, "A's uploads")
    assert 0 == a.stop()  # the inviter is gone; C is the only member online
    b = spawn("B", config=config)
    join(b, invite)  # no peers in the invite: the server is the only way in
    # C sees B's join (through the server or a link found there), waits out the grace
    # period reserved for the inviter, and admits B
    wait_until(lambda: synced(b, channel), 45, "B's admission by C")
    wait_until(lambda: [m["text"] for m in history(b, channel)] == ["from the inviter"], 10,
               "B to read what was written before it joined")
