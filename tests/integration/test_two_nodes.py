"""Two real ``p2pchat run`` processes on 127.0.0.1 (acceptance, issue 2)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.nodeproc import NodeProcess, cli, free_udp_port

pytestmark = pytest.mark.integration


def _peer_dids(node: NodeProcess) -> list[str]:
    result = node.cli("peers", "--json")
    assert 0 == result.returncode, result.stderr
    return [p["did"] for p in json.loads(result.stdout)]


def test_connect_lists_both_sides_and_reconnects_after_restart(
    spawn: Callable[..., NodeProcess],
) -> None:
    port = free_udp_port()
    b = spawn("B", port)
    a = spawn("A")
    result = a.cli("connect", f"{b.did}@127.0.0.1:{b.port}")
    assert 0 == result.returncode, result.stderr
    assert b.did in result.stdout

    a.wait_log(f"peer connected {b.did}", timeout=5)
    b.wait_log(f"peer connected {a.did}", timeout=5)
    assert [b.did] == _peer_dids(a)
    assert [a.did] == _peer_dids(b)
    peers = json.loads(a.cli("peers", "--json").stdout)
    assert f"127.0.0.1:{b.port}" == peers[0]["address"]
    assert {"did", "address", "rtt_ms"} <= set(peers[0])

    mark = a.log_mark()
    b.kill()
    a.wait_log(f"peer disconnected {b.did}", timeout=10, after=mark)
    assert [] == _peer_dids(a)

    mark = a.log_mark()
    b2 = spawn("B", port)  # same home, same port
    assert b.did == b2.did
    a.wait_log(f"peer connected {b.did}", timeout=20, after=mark)
    assert [b.did] == _peer_dids(a)
    b2.wait_log(f"peer connected {a.did}", timeout=5)
    assert [a.did] == _peer_dids(b2)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_reconnects_to_stored_peers_after_own_restart(
    spawn: Callable[..., NodeProcess], how: str
) -> None:
    """``connect`` answered success, so the peer was stored: even SIGKILL right after keeps it."""
    b = spawn("B")
    a = spawn("A")
    assert 0 == a.cli("connect", f"127.0.0.1:{b.port}").returncode
    if how == "sigkill":
        a.kill()
    else:
        assert 0 == a.stop()
    a2 = spawn("A")
    a2.wait_log(f"peer connected {b.did}", timeout=10)
    assert [b.did] == _peer_dids(a2)


def test_connect_to_wrong_did_is_refused_naming_both(spawn: Callable[..., NodeProcess]) -> None:
    b = spawn("B")
    a = spawn("A")
    c_home = a.home.parent / "C"
    c_did = cli(c_home, "init").stdout.strip()
    result = a.cli("connect", f"{c_did}@127.0.0.1:{b.port}")
    assert 1 == result.returncode
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    assert b.did in lines[0] and c_did in lines[0]
    assert [] == _peer_dids(a)


def test_connect_to_nothing_fails_cleanly(spawn: Callable[..., NodeProcess]) -> None:
    a = spawn("A")
    result = a.cli("connect", f"127.0.0.1:{free_udp_port()}")
    assert 1 == result.returncode
    assert "cannot reach" in result.stderr and "port closed" in result.stderr
    status = json.loads(a.cli("status", "--json").stdout)
    assert [] == status["wanted"]


@pytest.mark.parametrize("args", [
    ("peers",), ("peers", "--json"), ("status",), ("stop",),
    ("connect", "127.0.0.1:9"),
    ("ping", "did:key:z6MkmbkqKbbUQZeaWfJtfq8nKqnT4qXtaZ2WgM6pv6P96AvR"),
])
def test_control_commands_without_node_exit_3(short_tmp: Path, args: tuple[str, ...]) -> None:
    home = short_tmp / "nobody"
    result = cli(home, *args)
    assert 3 == result.returncode
    assert f"node not running at {home}" in result.stderr


def test_key_file_home_and_socket_are_private(spawn: Callable[..., NodeProcess]) -> None:
    a = spawn("A")
    assert 0o600 == stat.S_IMODE((a.home / "identity.json").stat().st_mode)
    assert 0o600 == stat.S_IMODE((a.home / "control.sock").stat().st_mode)
    assert 0o600 == stat.S_IMODE((a.home / "node.db").stat().st_mode)
    assert 0o700 == stat.S_IMODE(a.home.stat().st_mode)


def test_graceful_stop_closes_links_with_reason(spawn: Callable[..., NodeProcess]) -> None:
    b = spawn("B")
    a = spawn("A")
    assert 0 == a.cli("connect", f"127.0.0.1:{b.port}").returncode
    mark = a.log_mark()
    result = b.cli("stop")
    assert 0 == result.returncode, result.stderr
    assert 0 == b.proc.wait(15) if b.proc else False
    line = a.wait_log(f"peer disconnected {b.did}", timeout=10, after=mark)
    assert "node shutting down" in line
    assert not (b.home / "control.sock").exists()


def test_second_node_on_same_home_is_refused(spawn: Callable[..., NodeProcess]) -> None:
    a = spawn("A")
    result = cli(a.home, "run", "--listen", "127.0.0.1:0")
    assert 1 == result.returncode
    assert "already running" in result.stderr


def test_init_whoami(short_tmp: Path) -> None:
    home = short_tmp / "W"
    first = cli(home, "init", "--name", "wen")
    assert 0 == first.returncode
    did = first.stdout.strip()
    assert did.startswith("did:key:z6Mk")
    who = json.loads(cli(home, "whoami", "--json").stdout)
    assert {"did": did, "name": "wen", "home": str(home)} == who
    again = cli(home, "init")
    assert 1 == again.returncode and did in again.stderr


def test_frozen_peer_is_dropped_at_idle_timeout(spawn: Callable[..., NodeProcess]) -> None:
    import signal

    b = spawn("B")
    a = spawn("A")
    assert 0 == a.cli("connect", f"127.0.0.1:{b.port}").returncode
    assert b.proc is not None
    mark = a.log_mark()
    b.proc.send_signal(signal.SIGSTOP)
    try:
        line = a.wait_log(f"peer disconnected {b.did}", timeout=10, after=mark)
        assert "nothing received for 3 s" in line
    finally:
        b.proc.send_signal(signal.SIGCONT)
    a.wait_log(f"peer connected {b.did}", timeout=15, after=mark)


def test_disconnect_forgets_peer(spawn: Callable[..., NodeProcess]) -> None:
    b = spawn("B")
    a = spawn("A")
    assert 0 == a.cli("connect", f"127.0.0.1:{b.port}").returncode
    result = a.cli("disconnect", f"127.0.0.1:{b.port}", "--json")
    assert 0 == result.returncode, result.stderr
    assert {"closed": 1, "forgotten": [f"127.0.0.1:{b.port}"]} == json.loads(result.stdout)
    assert [] == _peer_dids(a)
    assert [] == json.loads(a.cli("status", "--json").stdout)["wanted"]
    b.wait_log("disconnected by user", timeout=5)
    # forgotten for good: a restart does not redial
    assert 0 == a.stop()
    a2 = spawn("A")
    assert [] == json.loads(a2.cli("status", "--json").stdout)["wanted"]



def test_watch_streams_change_events_until_the_client_leaves(
    spawn: Callable[..., NodeProcess],
) -> None:
    import socket as sock

    from p2pchat.home import SOCKET_FILE

    a = spawn("A")
    watcher = sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)
    watcher.settimeout(10)
    watcher.connect(str(a.home / SOCKET_FILE))
    stream = watcher.makefile("rb")
    watcher.sendall(b'{"method": "watch"}\n')
    assert {"ok": True, "result": {"watching": True}} == json.loads(stream.readline())
    created = json.loads(a.cli("channel", "create", "watched", "--json").stdout)
    events = [json.loads(stream.readline()) for _ in range(2)]
    assert {"event": "channel", "channel": created["channel"]} in events
    assert {"event": "keys", "channel": created["channel"]} in events  # the first epoch
    assert 0 == a.cli("send", created["channel"], "hi").returncode
    assert {"event": "channel", "channel": created["channel"]} == \
        json.loads(stream.readline())
    watcher.close()
    # watch is only the first request of a connection; the node keeps serving others
    from p2pchat.control.client import ControlConnection
    from p2pchat.control.protocol import ControlError
    from p2pchat.home import NodeHome

    with ControlConnection(NodeHome(a.home)) as conn:
        assert conn.call("status")["did"] == a.did
        with pytest.raises(ControlError, match="first request"):
            conn.call("watch")
