"""Scrolling back through a long channel in the chat client (issue 16): scrolling
above the oldest message loaded fetches the page before it (``history`` with
``before``), as far back as the channel goes, with the pane's memory bounded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.view import HISTORY_WINDOW
from tests.integration.nodeproc import NodeProcess
from tests.tui.test_app import SIZE, attached, cli, spawn, until

pytestmark = pytest.mark.integration

__all__ = ["spawn"]  # the fixture, shared with test_app

COUNT = 1_300  # well past the 500 messages a channel opens with


def fill(node: NodeProcess) -> tuple[str, list[str]]:
    """A channel of COUNT messages, sent over one control connection."""
    made = node.cli("channel", "create", "long", "--json")
    assert 0 == made.returncode, made.stderr
    channel = str(json.loads(made.stdout)["channel"])
    sent = subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel, "--stdin"],
        input="".join(f"line {i}\n" for i in range(COUNT)), capture_output=True, text=True,
        timeout=120, check=False)
    assert 0 == sent.returncode, sent.stderr
    ids = sent.stdout.split()
    assert COUNT == len(ids)
    return channel, ids


def shown_ids(app: ChatApp) -> list[str]:
    return [k for k in app.pane.keys() if not k.startswith("notice:")]  # noqa: SIM118


async def press_until(pilot: Pilot[Any], key: str, predicate: Callable[[], bool], what: str,
                      within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s pressing {key} for {what}")
        await pilot.press(key)
        await pilot.pause(0.01)


def test_scrolling_back_loads_older_pages_past_the_first_window(
        spawn: Callable[[str], NodeProcess]) -> None:
    a = spawn("A")
    channel, ids = fill(a)

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), channel)
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await until(pilot, lambda: ids[-1] in app.pane, "the newest message")
            assert ids[-HISTORY_WINDOW:] == shown_ids(app)

            # scroll up past the oldest loaded message, page after page, to the first
            await press_until(pilot, "pageup", lambda: ids[0] in app.pane, "the first message")
            assert ids == shown_ids(app)  # every message once, in order
            assert app.scrollback_loads >= (COUNT - HISTORY_WINDOW) // 200
            assert not app.detached
            assert [] == app.errors
            loads = app.scrollback_loads
            await pilot.press("pageup")  # at the very start: nothing more is asked for
            await pilot.pause(0.1)
            assert loads == app.scrollback_loads

            # memory stays bounded: with room for 800, reaching the first message drops
            # the newest ones, and the pane stops following until it is back at the end
            app.pane.max_entries = 800
            await app.open_channel(channel)
            assert ids[-HISTORY_WINDOW:] == shown_ids(app)
            await press_until(pilot, "pageup", lambda: ids[0] in app.pane, "the first message")
            assert ids[:800] == shown_ids(app)
            assert app.detached and len(app.messages) == 800
            sent = await cli(a, "send", channel, "while scrolled back")
            assert 0 == sent.returncode, sent.stderr
            new_id = sent.stdout.strip()
            await press_until(pilot, "pagedown", lambda: not app.detached, "the end")
            await until(pilot, lambda: new_id in app.pane, "the newest message again")
            assert [*ids, new_id][-HISTORY_WINDOW:] == shown_ids(app)
            assert [] == app.errors

    asyncio.run(main())
