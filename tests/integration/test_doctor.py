"""``doctor`` and ``peers`` report how a node is connected."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.channelkit import shared_channel
from tests.integration.nodeproc import FAST_CONFIG, NodeProcess, free_udp_port

pytestmark = pytest.mark.integration


def test_doctor_reports_listen_mdns_servers_and_reachable_members(
    spawn: Callable[..., NodeProcess],
) -> None:
    dead = free_udp_port()  # nothing listens here: an unreachable bootstrap server
    config = FAST_CONFIG.replace("[node]\n", f'[node]\nbootstrap = ["127.0.0.1:{dead}"]\n')
    a = spawn("A", config=config)
    b = spawn("B")
    channel, _ = shared_channel(a, b, "diag")
    report = json.loads(a.cli("doctor", "--json").stdout)
    assert a.did == report["did"]
    assert a.address == report["listen"]
    assert isinstance(report["mdns"], str) and report["mdns"]
    assert [f"127.0.0.1:{dead}"] == [s["address"] for s in report["bootstrap"]]
    assert [False] == [s["reachable"] for s in report["bootstrap"]]
    (ch,) = report["channels"]
    assert channel == ch["channel"] and ch["synced"]
    assert 1 == ch["linked_peers"]
    text = a.cli("doctor")
    assert 0 == text.returncode and "UNREACHABLE" in text.stdout and "#diag" in text.stdout
    peers = json.loads(b.cli("peers", "--json").stdout)
    assert [(a.did, "invite", "loopback")] == [(p["did"], p["found_by"], p["path"])
                                                for p in peers]
    peers_a = json.loads(a.cli("peers", "--json").stdout)
    assert [(b.did, "inbound")] == [(p["did"], p["found_by"]) for p in peers_a]


def test_a_bad_bootstrap_setting_is_a_clear_error(spawn: Callable[..., NodeProcess],
                                                  short_tmp: object) -> None:
    from pathlib import Path

    from tests.integration.nodeproc import cli

    home = Path(str(short_tmp)) / "bad"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text('[node]\nbootstrap = "127.0.0.1:1"\n')
    result = cli(home, "run", "--listen", "127.0.0.1:0")
    assert 1 == result.returncode
    assert "node.bootstrap must be a list" in result.stderr
