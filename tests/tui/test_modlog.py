"""The moderation-log view: ``/modlog`` or ctrl+l over the chat, escape closes it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable

from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.app import MODLOG_VIEW_INTERVAL
from p2pchat.tui.format import short
from p2pchat.tui.modlog import ModlogScreen, modlog_row
from tests.integration.nodeproc import NodeProcess
from tests.tui.test_app import (
    SIZE,
    cli,
    enter,
    has_rank,
    member_ready,
    room_with_member,
    spawn,
    until,
)

__all__ = ["spawn"]  # the fixture

pytestmark = pytest.mark.integration

OWNER = "did:key:z6MkOwnerOwnerOwner11111111"
MOD = "did:key:z6MkModModModMod22222222"
USER = "did:key:z6MkUserUserUser33333333"


def test_rows_show_applied_and_invalid_entries() -> None:
    cells = [c.plain for c in modlog_row(
        {"action": "ban", "target": USER, "by": OWNER, "reason": "spam", "ts": 1_700_000_000_000,
         "applied": True, "why": ""}, {OWNER: "alice"})]
    assert ["ban", "\u202633333333", "spam", "alice \u202611111111", "applied"] == cells[1:]
    cells = [c.plain for c in modlog_row(
        {"action": "topic", "value": "hi", "by": MOD, "ts": 0, "applied": False,
         "why": "not a moderator at that point"})]
    assert ["--:--", "topic", "", "'hi'", "\u202622222222"] == cells[:5]
    assert "INVALID: not a moderator at that point" == cells[5]
    cells = [c.plain for c in modlog_row({"action": "mode", "value": "invite-only", "on": False,
                                          "by": OWNER, "applied": True})]
    assert ("mode (off)", "invite-only") == (cells[1], cells[3])


def test_modlog_view_lists_every_entry(spawn: Callable[[str], NodeProcess]) -> None:
    a, b, channel = room_with_member(spawn)

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), "#room")
        async with app.run_test(size=SIZE) as pilot:
            await member_ready(pilot, app, b, channel, rank="member")
            # an empty log still opens, and says so
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, ModlogScreen), "the view (ctrl+l)")
            assert app.modlog_screen is not None and [] == app.modlog_screen.rows()
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ModlogScreen), "escape")
            for line in ("/topic moderated room", f"/mute {b.did} too loud", f"/unmute {b.did}",
                         f"/ban {b.did} spam"):
                await enter(pilot, app, line)
            assert [] == app.errors
            await until(pilot, lambda: has_rank(app, b.did, "banned"), "the ban")
            assert 0 == (await cli(a, "send", channel, "still here")).returncode
            await enter(pilot, app, "/modlog")
            await until(pilot, lambda: isinstance(app.screen, ModlogScreen), "the view (/modlog)")
            screen = app.modlog_screen
            assert screen is not None
            rows = screen.rows()
            assert [r[1] for r in rows] == ["topic", "mute", "unmute", "ban"], rows
            assert all(r[4].endswith(short(a.did)) for r in rows), rows
            assert all(r[5] == "applied" for r in rows), rows
            assert rows[1][2] == short(b.did) and rows[1][3] == "too loud"
            assert rows[0][3] == "'moderated room'" and rows[3][3] == "spam"
            title = str(screen.query_one("#modlog-title").render())
            assert "moderation log of #room" in title and "4 entries" in title
            # typing goes to the table, not the chat input, while the view is open
            await pilot.press("x")
            assert "" == app.chat_input.value
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ModlogScreen), "escape")
            assert app.chat_input.has_focus
            await pilot.press("ctrl+l")
            await until(pilot, lambda: isinstance(app.screen, ModlogScreen), "ctrl+l again")
            await pilot.press("ctrl+l")  # ctrl+l toggles
            await until(pilot, lambda: not isinstance(app.screen, ModlogScreen), "ctrl+l closes")
            assert [] == app.errors

    asyncio.run(main())


def test_modlog_view_updates_while_open(spawn: Callable[[str], NodeProcess]) -> None:
    """A ban (and a burst of further actions) made while the view is open shows in it,
    without reopening it; the refreshes are rate-limited."""
    a, b, channel = room_with_member(spawn)

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), "#room")
        async with app.run_test(size=SIZE) as pilot:
            await member_ready(pilot, app, b, channel, rank="member")
            await enter(pilot, app, "/topic before the view")
            await enter(pilot, app, "/modlog")
            await until(pilot, lambda: isinstance(app.screen, ModlogScreen), "the view")
            screen = app.modlog_screen
            assert screen is not None and ["topic"] == [r[1] for r in screen.rows()]
            # the ban happens elsewhere (A's CLI) while the view is open
            banned = await cli(a, "mod", "ban", channel, b.did, "--reason", "spam")
            assert 0 == banned.returncode, banned.stderr
            await until(pilot, lambda: [r[1] for r in screen.rows()] == ["topic", "ban"],
                        "the ban in the open view")
            assert app.screen is screen and screen.updates >= 1
            ban = screen.rows()[1]
            assert (short(b.did), "spam", "applied") == (ban[2], ban[3], ban[5]), ban
            title = str(screen.query_one("#modlog-title").render())
            assert "2 entries" in title
            # the cursor was on the last row: it follows the new last row
            assert 1 == screen.query_one(DataTable).cursor_row
            # a burst: three actions, one after the other; the view ends with all of them
            for args in (("unban", b.did), ("mute", b.did), ("topic", "after the burst")):
                assert 0 == (await cli(a, "mod", args[0], channel, args[1])).returncode
            await until(pilot, lambda: [r[1] for r in screen.rows()]
                        == ["topic", "ban", "unban", "mute", "topic"], "the burst in the view")
            assert "5 entries" in str(screen.query_one("#modlog-title").render())
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ModlogScreen), "escape")
            assert [] == app.errors

    asyncio.run(main())


def test_modlog_view_refreshes_are_rate_limited(tmp_path: Path) -> None:
    """Many ``channel`` events for the open view's channel: one refresh at once, then at
    most one per MODLOG_VIEW_INTERVAL (the last one after the burst)."""

    async def main() -> None:
        app = ChatApp(tmp_path / "control.sock")
        async with app.run_test(size=SIZE) as pilot:
            log: list[dict[str, Any]] = []
            asked: list[float] = []

            async def answer(method: str, params: Any = None) -> Any:
                if method == "modlog":
                    asked.append(time.monotonic())
                    return list(log)
                raise LocalError("no node")

            app.call = answer  # type: ignore[method-assign]
            screen = ModlogScreen("#room", [], {}, channel="C1")
            app.modlog_screen = screen
            await app.push_screen(screen)
            await until(pilot, lambda: screen.is_active, "the view")
            start = time.monotonic()
            for i in range(40):
                log.append({"id": f"e{i}", "action": "topic", "value": str(i), "by": OWNER,
                            "applied": True, "ts": 0})
                app._on_event({"event": "channel", "channel": "C1"})
                app._on_event({"event": "channel", "channel": "other"})  # not the view's
                await pilot.pause(0.02)
            await until(pilot, lambda: len(screen.rows()) == 40, "the last refresh")
            spent = time.monotonic() - start
            # leading refresh plus about one per interval, far fewer than 40 events
            assert len(asked) <= 2 + spent / MODLOG_VIEW_INTERVAL, (len(asked), spent)
            gaps = [b - a for a, b in itertools.pairwise(asked)]
            assert all(g >= MODLOG_VIEW_INTERVAL * 0.9 for g in gaps), gaps
            assert "40 entries" in str(screen.query_one("#modlog-title").render())

    asyncio.run(main())
