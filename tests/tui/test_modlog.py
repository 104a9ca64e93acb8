"""The moderation-log view: ``/modlog`` or ctrl+l over the chat, escape closes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.format import short
from p2pchat.tui.modlog import ModlogScreen, modlog_row
from tests.integration.nodeproc import NodeProcess
from tests.tui.test_app import (
    SIZE,
    attached,
    cli,
    cli_until,
    enter,
    has_rank,
    room_with_member,
    spawn,
    synced,
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
            await attached(pilot, app)
            await cli_until(pilot, b, ("channel", "list"), synced(channel), "B to sync")
            await until(pilot, lambda: has_rank(app, b.did, "member"), "B among the members")
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
