"""The terminal chat client (issue 7) driven by Textual's pilot against real nodes.

Each test runs the app headless with ``App.run_test()`` inside ``asyncio.run``
(no pytest-asyncio). Nodes are real ``p2pchat run`` processes; the second node
is driven through its CLI in a thread so the app's event loop keeps running.
Nothing sleeps and hopes: every wait polls the app's state (or a CLI answer) in
a bounded loop with short pilot pauses and fails with what it waited for.
"""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import OptionList

from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.format import Completer, parse_input, resolve_member, short
from p2pchat.tui.modlog import ModlogScreen
from p2pchat.tui.pane import MessagePane
from tests.integration.nodeproc import NodeProcess, patience

pytestmark = pytest.mark.integration

SIZE = (140, 40)


@pytest.fixture
def spawn() -> Iterator[Callable[[str], NodeProcess]]:
    """Real nodes in a short temp dir (Unix socket paths are limited to 107 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="p2p-"))
    nodes: list[NodeProcess] = []

    def make(name: str) -> NodeProcess:
        node = NodeProcess(root / name)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.cleanup()
    shutil.rmtree(root, ignore_errors=True)


# --- helpers -------------------------------------------------------------------------


async def until(pilot: Pilot[Any], predicate: Callable[[], Any], what: str,
                within: float = 10.0) -> Any:
    """Poll ``predicate`` between short pilot pauses until it is truthy."""
    within = patience(within)
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await pilot.pause(0.05)


async def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The node's CLI in a thread: the app keeps handling events meanwhile."""
    return await asyncio.to_thread(node.cli, *args)


async def cli_until(pilot: Pilot[Any], node: NodeProcess, args: tuple[str, ...],
                    predicate: Callable[[Any], Any], what: str, within: float = 10.0) -> Any:
    """Run ``node``'s CLI (``--json``) until ``predicate`` holds for its output."""
    within = patience(within)
    deadline = time.monotonic() + within
    while True:
        result = await cli(node, *args, "--json")
        if result.returncode == 0:
            value = predicate(json.loads(result.stdout))
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}: "
                                 f"{result.stdout[-500:]} {result.stderr[-500:]}")
        await pilot.pause(0.2)


async def enter(pilot: Pilot[Any], app: ChatApp, line: str, within: float = 10.0) -> list[str]:
    """Submit ``line`` and wait until the app has handled it; its new notices."""
    before, done = len(app.notices), app.lines_done
    app.chat_input.value = line
    await pilot.press("enter")
    await until(pilot, lambda: app.lines_done > done, f"{line!r} to be handled", within)
    return app.notices[before:]


async def type_keys(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*["space" if c == " " else c for c in text])


def pane_has(app: ChatApp, text: str) -> bool:
    return any(text in line for line in app.pane.plain_lines())


def rank_of(app: ChatApp, did: str) -> str | None:
    return next((str(m["rank"]) for m in app.members if m["did"] == did), None)


def has_rank(app: ChatApp, did: str, rank: str) -> bool:
    return rank_of(app, did) == rank


async def attached(pilot: Pilot[Any], app: ChatApp) -> None:
    await until(pilot, lambda: app.live == "watch", "the watch stream")


def synced(channel: str) -> Callable[[Any], bool]:
    return lambda listed: any(c["channel"] == channel and c["synced"] for c in listed)


async def member_ready(pilot: Pilot[Any], app: ChatApp, member: NodeProcess, channel: str,
                       rank: str | None = None) -> None:
    """The app follows its node's watch stream and ``member`` holds ``channel`` synced (and,
    with ``rank``, the app shows ``member`` with that rank)."""
    await attached(pilot, app)
    await cli_until(pilot, member, ("channel", "list"), synced(channel), "B to sync")
    if rank is not None:
        await until(pilot, lambda: has_rank(app, member.did, rank), f"B as {rank}")


# --- pure parts ------------------------------------------------------------------------


def test_commands_and_completion() -> None:
    assert parse_input("hello") is None
    assert parse_input("//not a command") is None
    command = parse_input("/BAN did:key:zAbc spam bot")
    assert command is not None and ("ban", "did:key:zAbc spam bot") == (command.name,
                                                                          command.args)
    dids = ["did:key:z6MkAAAA11112222", "did:key:z6MkBBBB33334444"]
    assert dids[1] == resolve_member("33334444", dids)
    assert dids[1] == resolve_member("\u202633334444", dids)
    assert "did:key:zOther" == resolve_member("did:key:zOther", dids)
    with pytest.raises(ValueError, match="matches 2"):
        resolve_member("z6Mk", dids)
    with pytest.raises(ValueError, match="no member"):
        resolve_member("nothing", dids)
    completer = Completer()
    assert "/modlog " == completer.complete("/modl", dids)
    first = completer.complete("/m", dids)
    second = completer.complete(str(first), dids)
    assert {"/me ", "/msg ", "/mute ", "/modlog ", "/members "} >= {first, second}
    assert first != second
    completer.reset()
    assert f"/ban {dids[0]} " == completer.complete("/ban 1111", dids)
    assert f"hi {short(dids[1])} " == completer.complete("hi 3333", dids)
    assert completer.complete("/nosuchcommand", dids) is None


class _PaneApp(App[None]):
    def compose(self) -> ComposeResult:
        yield MessagePane(id="pane", max_entries=20_000)


def test_pane_renders_only_what_changes() -> None:
    """10,000 entries: opening wraps each once; an append or an edit wraps one."""

    async def main() -> None:
        app = _PaneApp()
        async with app.run_test(size=SIZE) as pilot:
            pane = app.query_one(MessagePane)
            entries = [(f"m{i}", Text(f"12:00 \u2026abcdefgh  message number {i} " * 2))
                       for i in range(10_000)]
            pane.set_entries(entries)
            await pilot.pause()
            assert 10_000 == len(pane) == pane.renders
            assert pane.is_vertical_scroll_end
            pane.add("new", Text("a new message"))
            assert 10_001 == pane.renders
            pane.replace("m5000", Text("edited (edited)"))
            assert 10_002 == pane.renders
            assert "edited (edited)" == pane.plain("m5000")
            pane.insert_sorted("late", Text("a late message"), before="m9999")
            assert ["m9998", "late", "m9999", "new"] == pane.keys()[-4:]
            pane.remove_entry("late")
            assert "late" not in pane
            await pilot.pause()
            assert pane_line_text(pane, -1) == "a new message"

    asyncio.run(main())


def pane_line_text(pane: MessagePane, y: int) -> str:
    return pane.entries()[y][1].plain


def test_no_node_is_an_inline_notice(tmp_path: Path) -> None:
    async def main() -> None:
        app = ChatApp(tmp_path / "control.sock")
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.errors, "an error notice")
            assert "node not running" in app.errors[0]
            assert "not attached" in app.status_text()
            notices = await enter(pilot, app, "/create general")
            assert any("not connected" in n for n in notices), notices
            notices = await enter(pilot, app, "hello")
            assert any("no channel open" in n for n in notices), notices
            # the status bar's indicators come from channel.list's keys and sealed
            app.me, app.current = "did:key:z6MkExampleExample12345678", "C1"
            app.channels = {"C1": {"channel": "C1", "name": "general", "dm": "",
                                   "keys": "waiting", "sealed": 3, "messages": 0}}
            status = app.status_text()
            assert "\u202612345678" in status and "#general" in status
            assert "waiting for a member to admit this node" in status
            assert "3 envelopes not readable here" in status
            app.channels["C1"].update(keys="member", sealed=0, dm="did:key:z6MkPeer0000abcd")
            assert "dm with \u20260000abcd" in app.status_text()
            assert "waiting" not in app.status_text()
            await enter(pilot, app, "/quit")
            await until(pilot, lambda: app.return_code == 0, "the app to quit")

    asyncio.run(main())


# --- against real nodes ------------------------------------------------------------------


def test_join_send_receive_and_ban(spawn: Callable[[str], NodeProcess]) -> None:
    a, b = spawn("A"), spawn("B")

    async def main() -> None:
        app = ChatApp(NodeHome(a.home))
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            assert short(a.did) in app.status_text()
            # /create, typed with tab completion of the command name
            await type_keys(pilot, "/cre")
            await pilot.press("tab")
            assert "/create " == app.chat_input.value
            await type_keys(pilot, "lobby")
            done = app.lines_done
            await pilot.press("enter")
            await until(pilot, lambda: app.lines_done > done, "/create")
            assert [] == app.errors
            channel = str(app.current)
            assert "#lobby" == app._label(channel)
            notices = await enter(pilot, app, "/invite")
            assert app.last_invite.startswith("p2pchat://join/"), notices
            assert any(n.startswith("invite for #lobby: p2pchat://join/") for n in notices)

            # B joins with that invite through its CLI and is admitted
            joined = await cli(b, "join", app.last_invite)
            assert 0 == joined.returncode, joined.stderr
            await cli_until(pilot, b, ("channel", "list"), synced(channel), "B to sync")

            # B writes; the message shows up in A's pane from a watch event
            sent = await cli(b, "send", channel, "hello from B")
            assert 0 == sent.returncode, sent.stderr
            await until(pilot, lambda: pane_has(app, "hello from B"), "B's message in A's pane")
            assert "watch" == app.live  # pushed by the node, not polled
            assert any(short(b.did) in line and "hello from B" in line
                       for line in app.pane.plain_lines())
            await until(pilot, lambda: rank_of(app, b.did) == "member", "B in A's members")

            # A types a message; B's history has it
            await type_keys(pilot, "hi from A")
            done = app.lines_done
            await pilot.press("enter")
            await until(pilot, lambda: app.lines_done > done, "A's message to be sent")
            await cli_until(pilot, b, ("history", channel),
                            lambda h: any(m["text"] == "hi from A" for m in h),
                            "A's message in B's history")
            await pilot.press("up")
            assert "hi from A" == app.chat_input.value
            await pilot.press("down")
            assert "" == app.chat_input.value

            # /ban with the member's DID completed from its last characters
            await type_keys(pilot, "/ban " + b.did[-6:])
            await pilot.press("tab")
            assert f"/ban {b.did} " == app.chat_input.value
            await type_keys(pilot, "spam")
            done = app.lines_done
            await pilot.press("enter")
            await until(pilot, lambda: app.lines_done > done, "/ban")
            assert [] == app.errors
            await until(pilot, lambda: rank_of(app, b.did) == "banned", "B banned in A's list")
            members_text = str(app.query_one("#members").render())
            assert "banned" in members_text
            await until(pilot, lambda: any(n.startswith("moderation:") and " ban " in n
                                           for n in app.notices), "a moderation notice")
            # B's own node folds the ban too
            await cli_until(pilot, b, ("members", channel),
                            lambda ms: any(m["did"] == b.did and m["rank"] == "banned"
                                           for m in ms), "B's node to see the ban")
            # the ban rotates the channel key: a notice says so
            await until(pilot, lambda: any("key rotation" in n for n in app.notices),
                        "a key rotation notice")
            assert [] == app.errors

    asyncio.run(main())


def room_with_member(spawn: Callable[[str], NodeProcess]
                     ) -> tuple[NodeProcess, NodeProcess, str]:
    """Nodes A and B; A created #room and B joined it with A's invite (via the CLI)."""
    a, b = spawn("A"), spawn("B")
    created = a.cli("channel", "create", "room", "--json")
    assert 0 == created.returncode, created.stderr
    channel, invite = (json.loads(created.stdout)[k] for k in ("channel", "invite"))
    assert 0 == b.cli("join", invite).returncode
    return a, b, channel


def test_every_slash_command(spawn: Callable[[str], NodeProcess]) -> None:
    a, b, channel = room_with_member(spawn)

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), "#room")
        async with app.run_test(size=SIZE) as pilot:
            await member_ready(pilot, app, b, channel)
            assert 0 == (await cli(b, "send", channel, "findme please")).returncode
            await until(pilot, lambda: pane_has(app, "findme please"), "B's message")
            await until(pilot, lambda: rank_of(app, b.did) is not None, "B among the members")
            assert channel == app.current

            async def ok(line: str) -> list[str]:
                errors = len(app.errors)
                notices = await enter(pilot, app, line)
                assert app.errors[errors:] == [], (line, notices)
                return notices

            async def fails(line: str, text: str) -> None:
                errors = len(app.errors)
                notices = await enter(pilot, app, line)
                assert any(text in e for e in app.errors[errors:]), (line, notices)

            assert any("/join INVITE|#NAME" in n for n in await ok("/help"))
            assert any("members of #room (2)" in n for n in await ok("/members"))
            assert any(n.startswith("1 peer:") for n in await ok("/peers"))
            assert any("1 message" in n for n in await ok("/search findme"))
            await ok("/topic a fine topic")
            await until(pilot, lambda: app.channels[channel].get("topic") == "a fine topic",
                        "the topic")
            assert "a fine topic" in str(app.pane.border_title)
            assert any("topic cleared" in n for n in await ok("/topic"))
            await until(pilot, lambda: app.channels[channel].get("topic") == "",
                        "the topic to be cleared")
            await ok("/me waves")
            await until(pilot, lambda: any(line.endswith(f"* {short(a.did)} waves")
                                           for line in app.pane.plain_lines()), "the action")
            for line, rank in ((f"/op {b.did}", "moderator"), (f"/deop {b.did}", "member"),
                               (f"/mute {short(b.did)} too loud", "muted"),
                               (f"/unmute {b.did}", "member"),
                               (f"/ban {b.did} spam", "banned"), (f"/unban {b.did}", "member")):
                await ok(line)
                await until(pilot, functools.partial(has_rank, app, b.did, rank),
                            f"B's rank {rank} after {line}")
            await ok(f"/kick {b.did} bye")
            await until(pilot, lambda: rank_of(app, b.did) is None, "B kicked")
            notices = await ok("/modlog")
            assert any("moderation log of #room: 9 entries" in n for n in notices), notices
            await until(pilot, lambda: isinstance(app.screen, ModlogScreen), "the modlog view")
            assert app.modlog_screen is not None
            rows = app.modlog_screen.rows()
            assert 9 == len(rows)
            assert any(r[1] == "kick" and "bye" in r[3] for r in rows), rows
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ModlogScreen),
                        "the modlog view to close")
            assert any("invite for #room" in n for n in await ok("/invite"))
            await ok(f"/msg {b.did} psst")
            await until(pilot, lambda: any(i.get("dm") == b.did for i in app.channels.values()),
                        "the DM channel in the list")
            await ok("/create second")
            second = str(app.current)
            assert "#second" == app._label(second)
            await ok("/join #room")
            assert channel == app.current
            # a message in a channel that is not open counts as unread
            assert 0 == (await cli(a, "send", second, "elsewhere")).returncode
            await until(pilot, lambda: app.unread(second) == 1, "an unread message in #second")
            options = app.query_one("#channels", OptionList)
            assert "#second (1)" == str(options.get_option(second).prompt)
            await fails("/join p2pchat://join/bogus", "")
            await fails("/join #nosuch", "no channel #nosuch")
            await fails("/nosuch", "unknown command /nosuch")
            await fails("/ban", "usage: /ban DID [REASON]")
            await fails("/ban zzzzzzzz", "no member matches")
            await fails("/msg", "usage: /msg DID TEXT")
            await fails("/me", "usage: /me TEXT")
            await fails("/search", "usage: /search WORDS")
            await fails("/create", "usage: /create NAME")
            await ok("//slash text")
            await until(pilot, lambda: pane_has(app, "/slash text"), "the //text message")
            await pilot.press("ctrl+n")
            await until(pilot, lambda: app.current != channel, "ctrl+n to switch channel")
            await enter(pilot, app, "/quit")
            await until(pilot, lambda: app.return_code == 0, "the app to quit")

    asyncio.run(main())


def test_reconnects_when_the_node_restarts(spawn: Callable[[str], NodeProcess]) -> None:
    a = spawn("A")
    created = a.cli("channel", "create", "room", "--json")
    assert 0 == created.returncode, created.stderr
    channel = json.loads(created.stdout)["channel"]

    async def main() -> None:
        app = ChatApp(NodeHome(a.home))
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            assert channel == app.current
            assert 0 == await asyncio.to_thread(a.stop)
            await until(pilot, lambda: app.live == "offline", "the UI to notice")
            assert "node not reachable" in app.status_text()
            assert any("lost the connection" in e for e in app.errors)
            await asyncio.to_thread(a.start)
            await attached(pilot, app)
            assert 0 == (await cli(a, "send", channel, "after the restart")).returncode
            await until(pilot, lambda: pane_has(app, "after the restart"), "the new message")
            assert channel == app.current

    asyncio.run(main())


def test_hidden_messages_are_placeholders_for_moderators_only(tmp_path: Path) -> None:
    from p2pchat.tui.format import message_text

    hidden = {"id": "01H", "author": "did:key:zAuthor", "text": "", "ts": 0,
              "hidden": "author was muted in the post's causal past"}
    line = message_text(hidden, {}, "did:key:zMe").plain
    assert "[hidden by moderation: author was muted" in line
    app = ChatApp(NodeHome(tmp_path))
    shown = {"id": "01G", "author": "did:key:zAuthor", "text": "hi", "ts": 0}
    assert [shown] == app._shown([shown, hidden])  # a member sees nothing of it
    app.moderating = True
    assert [shown, hidden] == app._shown([shown, hidden])
