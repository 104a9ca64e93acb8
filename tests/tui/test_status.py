"""The chat client's status bar: the paths to peers (LAN, direct, bootstrap servers) and
the indicator while a channel catches up, from the node's ``peers``, ``channel.list``
``sync`` and the ``sync`` watch events.

Waits are bounded polls of the app's state with short pilot pauses (``until``).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import OptionList

from p2pchat.control.client import ControlConnection
from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.devnodes import DevNode
from p2pchat.tui.format import Sync, bootstrap_text, parse_sync, peer_via, peers_text
from tests.integration.nodeproc import FAST_CONFIG, NodeProcess, free_udp_port
from tests.integration.test_store_and_forward import ServerProcess
from tests.tui.test_app import SIZE, attached, cli, enter, until

pytestmark = pytest.mark.integration

#: Messages in the channel joined in the long-sync test, and their length: ~4 MB of
#: envelopes, more than one sync window, a second or so to catch up on loopback.
SYNC_MESSAGES = 3_000
SYNC_TEXT = "x" * 1_000
SYNCING = re.compile(r"syncing (\S+) ([\d,]+)/([\d,]+)")


@pytest.fixture
def root() -> Iterator[Path]:
    """A short temp dir (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="p2p-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --- pure parts and the app without a node ------------------------------------------------


def test_paths_and_sync_texts() -> None:
    assert "0 peers" == peers_text({})
    assert "1 peer (1 direct)" == peers_text({"direct": 1})
    assert "3 peers (2 lan, 1 direct)" == peers_text({"direct": 1, "lan": 2, "bootstrap": 1})
    assert "" == bootstrap_text(0, 0)
    assert "bootstrap 0/2" == bootstrap_text(0, 2)
    assert "bootstrap 1/1" == bootstrap_text(1, 0)  # a server link the status did not count
    assert "lan" == peer_via({"via": "lan"})
    assert "direct" == peer_via({"found_by": "mdns"})  # an older node: no via
    assert "direct" == peer_via({"via": "\x1b[31m"})
    assert parse_sync(None) is None
    sync = parse_sync({"received": 3_200, "expected": 10_000})
    assert Sync(3_200, 10_000) == sync and "3,200/10,000" == sync.figure()
    assert 32 == sync.percent and 99 == Sync(9_999, 10_000).percent
    for bad in ({"received": 5, "expected": 4}, {"received": -1, "expected": 4},
                {"received": True, "expected": 4}, {"received": 0, "expected": 0},
                {"received": "1", "expected": 4}, [1, 2], "x"):
        with pytest.raises(ValueError, match="malformed sync"):
            parse_sync(bad)


def test_sync_events_drive_the_indicator(tmp_path: Path) -> None:
    """``sync`` events as the node writes them: the status bar, the channel list and the
    pane's subtitle follow each one; malformed ones are ignored; a ``channel.list``
    answer older than the last event does not bring an ended sync back."""

    async def main() -> None:
        app = ChatApp(tmp_path / "control.sock")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.errors, "the 'node not running' notice")
            app.live = "watch"
            app.me = "did:key:z6MkExampleExample12345678"
            app.paths = {"lan": 1, "direct": 2, "bootstrap": 1}
            app.servers_configured = 2
            app.channels = {c: {"channel": c, "name": n, "dm": "", "keys": "member",
                                "sealed": 0, "messages": 0}
                            for c, n in (("C1", "general"), ("C2", "random"))}
            app.current = "C1"
            app._on_event({"event": "sync", "channel": "C1",
                           "sync": {"received": 3_200, "expected": 10_000}})
            status = app.status_text()
            assert "3 peers (1 lan, 2 direct) \u2502 bootstrap 1/2 \u2502 #general" in status
            assert "syncing #general 3,200/10,000" in status
            options = app.query_one("#channels", OptionList)
            assert "#general sync 32%" == str(options.get_option("C1").prompt)
            assert "syncing 3,200/10,000" == app.pane.border_subtitle
            await pilot.pause()
            assert app.query_one("#status").has_class("busy")
            app._on_event({"event": "sync", "channel": "C2",
                           "sync": {"received": 1, "expected": 4}})
            assert "syncing #general 3,200/10,000 (+1 more)" in app.status_text()
            assert "#random sync 25%" == str(options.get_option("C2").prompt)
            for bad in ({"received": 9, "expected": 4}, "soon", 7):
                app._on_event({"event": "sync", "channel": "C1", "sync": bad})
            assert Sync(3_200, 10_000) == app.sync["C1"]
            app._on_event({"event": "sync", "channel": "C1", "sync": None})
            assert "syncing #random 1/4" in app.status_text()
            assert "#general" == str(options.get_option("C1").prompt)
            assert "" == app.pane.border_subtitle

            # a listing asked for before the last event is older than it: C2's sync
            # ended while the listing (still showing it) was on its way
            listed = [{**app.channels["C1"], "sync": {"received": 1, "expected": 4}},
                      {**app.channels["C2"], "sync": {"received": 2, "expected": 4}}]

            async def answer_after_an_event(method: str, params: Any = None) -> Any:
                assert "channel.list" == method
                app._on_event({"event": "sync", "channel": "C2", "sync": None})
                return listed

            app.call = answer_after_an_event  # type: ignore[method-assign]
            await app._load_channels()
            assert {"C1": Sync(1, 4)} == app.sync  # C1 from the listing; C2 ended after it
            listed[0]["sync"] = listed[1]["sync"] = None

            async def answer(method: str, params: Any = None) -> Any:
                return listed

            app.call = answer  # type: ignore[method-assign]
            await app._load_channels()
            assert {} == app.sync and "syncing" not in app.status_text()
            await pilot.pause()
            assert not app.query_one("#status").has_class("busy")
            app._on_event({"event": "sync", "channel": "C1",
                           "sync": {"received": 0, "expected": 7}})
            app._offline()  # the node went away: no figure of it is current
            assert {} == app.sync and "syncing" not in app.status_text()

    asyncio.run(main())


# --- against real nodes --------------------------------------------------------------------


def test_status_bar_shows_paths_live(root: Path) -> None:
    """A node with a bootstrap server: the server link counts apart from chat peers; a
    peer dialled by address is direct; peers coming and going update the bar."""
    server = ServerProcess(root / "S", free_udp_port(), config=None).start()
    nodes = [NodeProcess(root / "A", config=FAST_CONFIG.replace(
        "[node]\n", f'[node]\nbootstrap = ["{server.address}"]\n')), NodeProcess(root / "B")]
    try:
        a, b = (node.start() for node in nodes)

        async def main() -> None:
            app = ChatApp(NodeHome(a.home))
            async with app.run_test(size=SIZE) as pilot:
                await attached(pilot, app)
                await until(pilot, lambda: "0 peers \u2502 bootstrap 1/1" in app.status_text(),
                            "the bootstrap server link in the status bar")
                assert 1 == app.servers_configured
                connected = await cli(a, "connect", b.address)
                assert 0 == connected.returncode, connected.stderr
                await until(pilot, lambda: "1 peer (1 direct) \u2502 bootstrap 1/1"
                            in app.status_text(), "B as a direct peer")
                assert [b.did] == app.peer_dids  # the server is not a chat peer
                peers = json.loads((await cli(a, "peers", "--json")).stdout)
                assert {(b.did, "manual", "direct"), (server.did, "bootstrap-server",
                                                      "bootstrap")} == \
                    {(p["did"], p["found_by"], p["via"]) for p in peers}
                assert all(p["path"] == "loopback" for p in peers)  # the existing key stays
                notices = await enter(pilot, app, "/peers")
                assert any(b.did in n and " direct" in n for n in notices), notices
                assert any(server.did in n and " bootstrap" in n for n in notices), notices
                assert 0 == (await cli(a, "disconnect", b.address)).returncode
                await until(pilot, lambda: "0 peers \u2502 bootstrap 1/1" in app.status_text(),
                            "B gone from the status bar")
                assert [] == app.errors

        asyncio.run(main())
    finally:
        for node in nodes:
            node.cleanup()
        server.cleanup()


class _Recording(ChatApp):
    """Keeps every status bar text and pane subtitle shown, for a test to look back on
    a sync that may take less than a second."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shown: list[str] = []

    def _update_status(self) -> None:
        super()._update_status()
        self.shown.append(self.status_text())
        with_pane = self.is_running and self.current is not None
        if with_pane and self.pane.border_subtitle:
            self.shown.append(f"subtitle: {self.pane.border_subtitle}")


def test_sync_indicator_during_a_long_initial_sync(root: Path) -> None:
    """B's chat joins a channel of 3,000 messages with /join: the status bar shows the
    progress from the node's sync events, and nothing once the channel is complete."""
    a, b = DevNode(root / "A", "alice"), DevNode(root / "B", "bob")
    try:
        a.start()
        b.start()
        channel = str(a.cli_json("channel", "create", "big")["channel"])
        # one request at a time, as a chatty day: one envelope per message (a pipelined
        # burst would be sealed into a few multi-post envelopes: a short sync)
        with ControlConnection(NodeHome(a.home)) as conn:
            for i in range(SYNC_MESSAGES):
                conn.call("send", {"channel": channel, "text": f"{i} {SYNC_TEXT}"})
        invite = str(a.cli_json("invite", channel)["invite"])

        async def main() -> None:
            app = _Recording(NodeHome(b.home))
            async with app.run_test(size=SIZE) as pilot:
                await attached(pilot, app)
                assert "syncing" not in app.status_text()
                joined = time.monotonic()
                notices = await enter(pilot, app, f"/join {invite}", within=30)
                assert any("joined #big" in n for n in notices), notices
                assert channel == app.current
                await until(pilot, lambda: app.channels.get(channel, {}).get("messages")
                            == SYNC_MESSAGES, "all messages at B", within=60)
                await until(pilot, lambda: not app.sync, "the sync to end", within=10)
                figures = [(int(m[2].replace(",", "")), int(m[3].replace(",", "")))
                           for m in map(SYNCING.search, app.shown) if m]
                assert figures, app.shown[-20:]
                print(f"{len(figures)} sync figures shown: {figures[:3]} … {figures[-3:]}; "
                      f"sync took {time.monotonic() - joined:.2f} s")
                # A announced every message (and the channel's genesis and keys); B
                # lacked all of them but the genesis, which the invite carries
                # (and a key rotation every 100 envelopes)
                assert all(SYNC_MESSAGES < expected < SYNC_MESSAGES * 21 // 20
                           for _, expected in figures), figures
                assert all(0 <= received < expected for received, expected in figures)
                received = [r for r, _ in figures]
                assert received == sorted(received), figures
                assert any(s.startswith("subtitle: syncing ") for s in app.shown)
                assert "syncing" not in app.status_text()
                assert "" == app.pane.border_subtitle
                options = app.query_one("#channels", OptionList)
                assert "sync" not in str(options.get_option(channel).prompt)
                assert [] == app.errors, app.errors

        asyncio.run(main())
        listed = b.cli_json("channel", "list")
        assert [None] == [c["sync"] for c in listed if c["channel"] == channel]
    finally:
        a.stop()
        b.stop()
