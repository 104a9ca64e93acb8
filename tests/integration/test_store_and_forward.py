"""Nodes and real bootstrap server processes: store-and-forward, a server down, finding
each other through a server, and a server that cannot read what it stores."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from p2pchat.channel.invite import parse_invite
from p2pchat.home import DB_FILE
from tests.integration.channelkit import (
    all_stored,
    create_channel,
    history,
    join,
    synced,
    wait_until,
)
from tests.integration.nodeproc import FAST_CONFIG, NodeProcess, _env, _Lines, free_udp_port

pytestmark = pytest.mark.integration

SERVER_READY = re.compile(r"p2pchat-bootstrap (did:key:\S+) listening on (\S+)")


class ServerProcess(NodeProcess):
    """A ``p2pchat-bootstrap serve`` process (same output handling as a node)."""

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bootstrap.cli import main; main()", "serve",
             "--listen", f"127.0.0.1:{self.port}", "--home", str(self.home)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self.out = _Lines(self.proc.stdout, self._cond)
        self.err = _Lines(self.proc.stderr, self._cond)
        line = self.wait_for(lambda: next((m for ln in self.out.lines
                                           if (m := SERVER_READY.search(ln))), None),
                             timeout, "server ready line")
        self.did, self.address = line.group(1), line.group(2)
        return self


@pytest.fixture
def servers(short_tmp: Path) -> Iterator[Callable[[str], ServerProcess]]:
    started: list[ServerProcess] = []

    def make(name: str) -> ServerProcess:
        server = ServerProcess(short_tmp / name, free_udp_port(), config=None)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.cleanup()


def _config(*addresses: str) -> str:
    listed = ", ".join(f'"{a}"' for a in addresses)
    return FAST_CONFIG.replace("[node]\n", f"[node]\nbootstrap = [{listed}]\n")


def _texts(node: NodeProcess, channel: str) -> list[str]:
    return [m["text"] for m in history(node, channel)]


def _server_linked(node: NodeProcess, server: str) -> bool:
    report = json.loads(node.cli("doctor", "--json").stdout)
    return any(s["address"] == server and s["reachable"] for s in report["bootstrap"])


def _store_and_forward(spawn: Callable[..., NodeProcess], config: str, server: str,
                       tag: str, padding: int = 0) -> tuple[list[str], list[bytes]]:
    a = spawn(f"A{tag}", config=config)
    channel, invite = create_channel(a, f"relay{tag}")
    b = spawn(f"B{tag}", config=config)
    join(b, invite)
    wait_until(lambda: synced(b, channel), 10, "B to receive the channel")
    wait_until(lambda: _server_linked(a, server) and _server_linked(b, server), 10,
               "both nodes to reach the server")
    assert 0 == b.stop()  # B goes offline
    texts = [f"stored {i} {tag} {time.monotonic_ns()} " + "w" * padding for i in range(100)]
    sent = subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(a.home), "send", channel, "--stdin"],
        input="\n".join(texts) + "\n", capture_output=True, text=True, env=_env(), timeout=60,
        check=False)
    assert 0 == sent.returncode, sent.stderr
    wait_until(lambda: all_stored(a), 10, "A's uploads to the server")
    assert 0 == a.stop()  # A goes offline too: only the server has the 100
    b.start()
    wait_until(lambda: texts == _texts(b, channel), 5, "B to get all 100 from the server")
    return texts, [parse_invite(invite).cap, *_secrets_of(a), *_secrets_of(b)]


def _secrets_of(node: NodeProcess) -> list[bytes]:
    """Every secret key byte string a node keeps: epoch secrets and prekey private keys."""
    with sqlite3.connect(node.home / DB_FILE) as db:
        rows = db.execute("SELECT secret FROM epoch_keys").fetchall()
        rows += db.execute("SELECT private FROM prekeys").fetchall()
    assert rows, "no secrets stored?"
    return [bytes(r[0]) for r in rows]


def test_store_and_forward_through_one_server(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],
) -> None:
    s = servers("S")
    texts, secrets = _store_and_forward(spawn, _config(s.address), s.address, "1")
    # the server cannot read: none of the plaintexts and no key material in its files
    s.stop()
    blob = b"".join(p.read_bytes() for p in s.home.rglob("*") if p.is_file()
                    and not p.name.endswith(".sock"))
    assert blob, "the server stored nothing?"
    for text in texts:
        assert text.encode() not in blob
    assert len(secrets) >= 4  # the invite's capability, epoch secrets, prekey keys
    for secret in secrets:
        assert secret not in blob and secret.hex().encode() not in blob


def test_store_and_forward_with_one_of_two_servers_down(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],
) -> None:
    down = f"127.0.0.1:{free_udp_port()}"  # S1: nothing listens there
    s2 = servers("S2")
    # long posts: the burst goes out as envelopes of up to 56 KiB of text each
    _store_and_forward(spawn, _config(down, s2.address), s2.address, "2", padding=1_500)


def test_members_find_each_other_through_a_server(
    spawn: Callable[..., NodeProcess], servers: Callable[[str], ServerProcess],
) -> None:
    s = servers("S")
    a = spawn("A", config=_config(s.address))
    channel, _ = create_channel(a, "meet")
    wait_until(lambda: _server_linked(a, s.address), 10, "A to reach the server (and announce)")
    invite = json.loads(a.cli("invite", channel, "--no-peers", "--json").stdout)["invite"]
    assert not parse_invite(invite).peers
    b = spawn("B", config=_config(s.address))
    join(b, invite)  # no address for A: B must learn it from the server
    wait_until(lambda: synced(b, channel), 10, "B to get the channel from the server")

    def found() -> bool:
        peers = json.loads(b.cli("peers", "--json").stdout)
        return any(p["did"] == a.did and p["found_by"] == "bootstrap" for p in peers)

    wait_until(found, 15, "B to find A through the server's peer records")
    assert 0 == a.cli("send", channel, "direct now").returncode
    wait_until(lambda: _texts(b, channel) == ["direct now"], 10, "B to get A's message")
