"""Replies, edits, deletions and reactions from the input line, by message handle.

The pure parts (handles, ``s/old/new/``, reaction names, completion) are tested
without a node; the commands run against two real nodes, and what they did is
read back from the second node's ``history`` (the control API, through its CLI).
Every wait is a bounded poll (helpers in ``test_app``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from p2pchat.home import NodeHome
from p2pchat.tui import ChatApp
from p2pchat.tui.client import AsyncControl, socket_path_of
from p2pchat.tui.format import (
    Completer,
    MessageRef,
    message_text,
    parse_substitution,
    reaction_of,
    resolve_handle,
    short,
    split_handle,
)
from tests.integration.nodeproc import NodeProcess
from tests.tui.test_app import (
    SIZE,
    attached,
    cli,
    cli_until,
    enter,
    member_ready,
    pane_has,
    room_with_member,
    spawn,
    type_keys,
    until,
)

__all__ = ["spawn"]  # the fixture

pytestmark = pytest.mark.integration

ME = "did:key:z6MkMeMeMeMeMeMe11111111"
OTHER = "did:key:z6MkOtherOtherOther22222222"
THUMBS = "\U0001f44d"


# --- pure parts ------------------------------------------------------------------------


def test_handles_substitutions_and_reactions() -> None:
    refs = [MessageRef(4, "A", OTHER, "from other"),
            MessageRef(5, "B", ME, "mine", mine=True, reactions=(THUMBS,)),
            MessageRef(6, "C", ME, "gone", mine=True, deleted=True)]
    assert "B" == resolve_handle("5", refs).id
    assert "C" == resolve_handle("^", refs).id
    assert "B" == resolve_handle("^2", refs).id
    with pytest.raises(ValueError, match="no message 9"):
        resolve_handle("9", refs)
    with pytest.raises(ValueError, match="no message \\^4"):
        resolve_handle("^4", refs)
    with pytest.raises(ValueError, match="not a message number"):
        resolve_handle("abc", refs)
    assert [True, False, False] == [r.editable for r in refs[1:]] + [refs[0].editable]
    # a first word that looks like a handle is one
    assert ("12", "3 apples") == split_handle("12 3 apples")
    assert (None, "new text") == split_handle("new text")
    assert ("^", "x") == split_handle("^ x")

    sub = parse_substitution("s/wrold/world/")
    assert sub is not None and "hello world" == sub.apply("hello wrold")
    sub = parse_substitution(r"s/a\/b/c/g")
    assert sub is not None and ("a/b", "c", True) == (sub.old, sub.new, sub.every)
    assert "c c" == sub.apply("a/b a/b")
    with pytest.raises(ValueError, match="not in your last message"):
        sub.apply("nothing here")
    for line in ("s/x/y", "s//y/", " s/x/y/", "s/x/y/ more", "/s/x/y/"):
        assert parse_substitution(line) is None, line

    assert THUMBS == reaction_of(":+1:") == reaction_of("+1") == reaction_of("thumbsup")
    assert "\u2764\ufe0f" == reaction_of(":heart:")
    assert "lol" == reaction_of("lol")
    assert ":tada" == reaction_of(":tada")  # half an alias is text as typed


def test_message_lines_show_handles_replies_edits_reactions() -> None:
    parent = {"id": "A", "author": OTHER, "text": "the first message", "ts": 0,
              "reply_to": None, "edited": None, "deleted": False,
              "reactions": {THUMBS: [ME], "\U0001f389": [OTHER, "did:key:zThird"]}}
    line = message_text(parent, {}, ME, handle=7).plain
    assert line.startswith("  7 ")
    assert line.endswith(f"{short(OTHER)}  the first message  [{THUMBS} 1] [\U0001f389 2]")
    reply = {"id": "B", "author": ME, "text": "an answer", "ts": 0, "reply_to": "A",
             "edited": 5, "deleted": False, "reactions": {}}
    quote, body = message_text(reply, {}, ME, parent, handle=12, replied_handle=7).plain \
        .split("\n")
    assert quote.strip() == f"\u256d\u2500 7 {short(OTHER)}: the first message"
    assert body.startswith(" 12 ") and body.endswith("an answer (edited)")
    orphan = message_text(reply, {}, ME, None, handle=13).plain
    assert "\u256d\u2500 an earlier message" in orphan
    deleted = message_text({**parent, "deleted": True, "text": ""}, {}, ME, handle=7).plain
    assert deleted.endswith(f"{short(OTHER)} (deleted)")
    assert "(deleted)" in message_text(reply, {}, ME, {**parent, "deleted": True},
                                       handle=12, replied_handle=7).plain


def test_completion_of_handles_texts_and_emoji() -> None:
    refs = [MessageRef(1, "A", OTHER, "theirs"),
            MessageRef(2, "B", ME, "my old text", mine=True, reactions=("\U0001f389",)),
            MessageRef(3, "C", OTHER, "newest")]
    completer = Completer()
    # handles newest first, and tab cycles them
    assert "/reply 3 " == completer.complete("/reply ", [], refs)
    assert "/reply 2 " == completer.complete("/reply 3 ", [], refs)
    completer.reset()
    # /edit and /delete offer this node's own messages only; one match goes on at once
    assert "/edit 2 " == completer.complete("/edit ", [], refs)
    assert "/edit 2 my old text" == completer.complete("/edit 2 ", [], refs)
    assert "/delete 2 " == completer.complete("/delete ", [], refs)
    completer.reset()
    assert "/react 2 \U0001f389" == completer.complete("/react 2 ", [], refs)
    assert f"/react 2 {THUMBS}" == completer.complete("/react 2 \U0001f389", [], refs)
    completer.reset()
    assert "/react ^ \u2764\ufe0f" == completer.complete("/react ^ hea", [], refs)
    assert completer.complete("/react 9 ", [], refs) is None
    assert completer.complete("/edit 1 ", [], refs) is None  # not this node's


# --- against real nodes ------------------------------------------------------------------


def ref_by_text(app: ChatApp, text: str) -> MessageRef | None:
    return next((r for r in reversed(app.message_refs()) if r.text == text), None)


def entry_of(app: ChatApp, ref: MessageRef) -> str:
    return app.pane.plain(ref.id) if ref.id in app.pane else ""


def b_message(pred: Callable[[dict[str, Any]], bool]) -> Callable[[Any], Any]:
    """A predicate over B's ``history --json``: the first message ``pred`` holds for."""
    return lambda history: next((m for m in history if pred(m)), None)


def test_reply_edit_delete_react_from_the_input_line(
        spawn: Callable[[str], NodeProcess]) -> None:
    a, b, channel = room_with_member(spawn)

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), "#room")
        async with app.run_test(size=SIZE) as pilot:
            await member_ready(pilot, app, b, channel)
            history = ("history", channel)

            async def ok(line: str) -> None:
                errors = len(app.errors)
                notices = await enter(pilot, app, line)
                assert app.errors[errors:] == [], (line, notices)

            async def fails(line: str, text: str) -> None:
                errors = len(app.errors)
                await enter(pilot, app, line)
                new = app.errors[errors:]
                assert any(text in e for e in new), (line, new)
                assert not any(" failed: " in e for e in new), new  # no internal error

            assert 0 == (await cli(b, "send", channel, "hello from B")).returncode
            theirs = await until(pilot, lambda: ref_by_text(app, "hello from B"), "B's message")
            # the handle is shown dimly before the message
            assert entry_of(app, theirs).startswith(f"{theirs.handle:>3} ")

            # /reply, typed with tab completion of the command and of the newest handle
            await type_keys(pilot, "/rep")
            await pilot.press("tab")
            assert "/reply " == app.chat_input.value
            await pilot.press("tab")
            assert f"/reply {theirs.handle} " == app.chat_input.value
            await type_keys(pilot, "thanks B")
            done = app.lines_done
            await pilot.press("enter")
            await until(pilot, lambda: app.lines_done > done, "/reply")
            assert [] == app.errors
            answer = await cli_until(
                pilot, b, history, b_message(lambda m: m["text"] == "thanks B"),
                "the reply in B's history")
            assert theirs.id == answer["reply_to"] and a.did == answer["author"]
            reply = await until(pilot, lambda: ref_by_text(app, "thanks B"), "the reply")
            quote = f"\u256d\u2500 {theirs.handle} {short(b.did)}: hello from B"
            assert quote in entry_of(app, reply)

            # edit by handle, with the old text completed by tab
            await ok("first draft")
            draft = await until(pilot, lambda: ref_by_text(app, "first draft"), "the draft")
            app.chat_input.value = f"/edit {draft.handle} "
            await pilot.press("tab")
            assert f"/edit {draft.handle} first draft" == app.chat_input.value
            app.chat_input.value = f"/edit {draft.handle} second draft"
            await ok(app.chat_input.value)
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == draft.id and m["text"] == "second draft" and m["edited"]),
                "the edit in B's history")
            await until(pilot, lambda: entry_of(app, draft).endswith("second draft (edited)"),
                        "(edited) in A's pane")
            # /edit without a handle, and s/old/new/: this node's last message
            await ok("/edit third draft")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == draft.id and m["text"] == "third draft"), "/edit (last)")
            await until(pilot, lambda: "third draft (edited)" in entry_of(app, draft),
                        "the last-message edit in A's pane")
            await ok("s/third/fourth/")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == draft.id and m["text"] == "fourth draft"), "s/// edit")

            # react toggles: on, then off with the same command
            await ok(f"/react {theirs.handle} :+1:")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == theirs.id and m["reactions"] == {THUMBS: [a.did]}),
                "the reaction in B's history")
            await until(pilot, lambda: f"[{THUMBS} 1]" in entry_of(app, theirs),
                        "the reaction count in A's pane")
            await ok(f"/react {theirs.handle} {THUMBS}")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == theirs.id and not m["reactions"]),
                "the reaction taken back in B's history")
            await until(pilot, lambda: THUMBS not in entry_of(app, theirs),
                        "the reaction gone from A's pane")

            # B reacts too (its CLI): the count is B's, not bold; A's reaction adds to it
            assert 0 == (await cli(b, "react", channel, draft.id, THUMBS)).returncode
            await until(pilot, lambda: f"[{THUMBS} 1]" in entry_of(app, draft), "B's reaction")
            await ok(f"/react {draft.handle} {THUMBS}")
            await until(pilot, lambda: f"[{THUMBS} 2]" in entry_of(app, draft), "two reactions")

            # /delete without a handle deletes the last own message; by handle, that one
            await ok("/delete")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == draft.id and m["deleted"]), "the deletion in B's history")
            await until(pilot, lambda: entry_of(app, draft).endswith(f"{short(a.did)} (deleted)"),
                        "the deleted placeholder")
            await ok(f"/delete {reply.handle}")
            await cli_until(pilot, b, history, b_message(
                lambda m: m["id"] == reply.id and m["deleted"]), "/delete N in B's history")

            # a reply to a message deleted later quotes it as deleted
            await ok(f"/reply {draft.handle} about that")
            late = await until(pilot, lambda: ref_by_text(app, "about that"), "the late reply")
            assert f"{draft.handle} {short(a.did)}: (deleted)" in entry_of(app, late)

            # errors are inline notices, never a traceback, and nothing is sent
            count = len(json.loads((await cli(a, "history", channel, "--json")).stdout))
            await fails("/reply 999 hi", "no message 999")
            await fails("/reply", "usage: /reply N TEXT")
            await fails(f"/reply {theirs.handle}", "usage: /reply N TEXT")
            await fails(f"/edit {theirs.handle} mine now", "is not yours")
            await fails(f"/edit {draft.handle} back", "is deleted")
            await fails("/edit", "usage: /edit [N] TEXT")
            await fails(f"/delete {theirs.handle}", "is not yours")
            await fails("/delete 999", "no message 999")
            await fails("/delete 1 2", "usage: /delete [N]")
            await fails("/react", "usage: /react N EMOJI")
            await fails("/react abc x", "not a message number")
            await fails("/react ^99 x", "no message ^99")
            await fails("s/zzz/y/", "'zzz' is not in your last message")
            await fails(f"/edit {late.handle} about that", "nothing to change")  # the node's
            assert count == len(json.loads((await cli(a, "history", channel, "--json")).stdout))

    asyncio.run(main())


async def send_many(node: NodeProcess, channel: str, count: int) -> None:
    """``count`` messages through the control API, pipelined on one connection."""
    ctl = await AsyncControl(socket_path_of(NodeHome(node.home))).connect()
    try:
        await asyncio.gather(*(ctl.call("send", {"channel": channel, "text": f"filler {i}"})
                               for i in range(count)))
    finally:
        await ctl.close()


def test_changes_to_a_message_older_than_the_tail(spawn: Callable[[str], NodeProcess]) -> None:
    """A reaction to (and an edit of) a message 120 back shows: the refresh after it takes
    the whole window, not the last 100."""
    a = spawn("A")
    created = a.cli("channel", "create", "room", "--json")
    assert 0 == created.returncode, created.stderr
    channel = json.loads(created.stdout)["channel"]

    async def main() -> None:
        app = ChatApp(NodeHome(a.home), "#room")
        async with app.run_test(size=SIZE) as pilot:
            await attached(pilot, app)
            await enter(pilot, app, "an old message")
            old = await until(pilot, lambda: ref_by_text(app, "an old message"), "the message")
            await send_many(a, channel, 120)
            await until(pilot, lambda: pane_has(app, "filler 119"), "the fillers", within=30)
            await enter(pilot, app, f"/react {old.handle} :tada:")
            await until(pilot, lambda: "[\U0001f389 1]" in entry_of(app, old),
                        "the reaction to the old message")
            await enter(pilot, app, f"/edit {old.handle} an old message, edited")
            await until(pilot, lambda: "edited (edited)" in entry_of(app, old), "the old edit")
            assert [] == app.errors

    asyncio.run(main())
