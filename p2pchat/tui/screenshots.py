"""SVG screenshots of the chat UI exported by Textual: ``python -m p2pchat.tui.screenshots DIR``.

``DIR`` is usually ``docs/screenshots``. Starts two throwaway nodes (alice and
bob, real ``p2pchat run`` processes on loopback, homes in a temporary
directory), makes a channel with a few messages (one a reply), a topic and
moderation, including an action that does not count: bob, made a moderator, sets a topic
while the two nodes are apart and alice deops him meanwhile, so the log shows it
as INVALID. Then it runs the app headless attached to alice's node, reacts to
bob's reply and edits a message (``s/old/new/``) by typing, mutes bob from the
input line (a live moderation notice) and writes ``DIR/main.svg`` (the
main screen) and ``DIR/modlog.svg`` (the moderation-log view). Takes ~8 s.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.tui.app import ChatApp
from p2pchat.tui.devnodes import DevNode
from p2pchat.tui.modlog import ModlogScreen

SIZE = (140, 36)


def _ok(result: Any) -> None:
    if result.returncode != 0:
        raise LocalError(f"{' '.join(result.args[3:])}: {result.stderr.strip()}")


def _wait(predicate: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LocalError(f"timed out waiting for {what}")
        time.sleep(0.1)


def prepare(alice: DevNode, bob: DevNode) -> str:
    """The channel #general on both nodes; returns its id."""
    created = alice.cli_json("channel", "create", "general")
    channel = str(created["channel"])
    _ok(bob.cli("join", created["invite"]))
    bob.wait_synced(channel)
    _ok(alice.cli("mod", "topic", channel, "p2p chat, no servers"))
    first = ""
    for node, text in ((alice, "morning! the new build is up"),
                       (bob, "pulled it, syncing 10k messages took under a second"),
                       (alice, "/me cheers"),
                       (bob, "the member list shows who is online now")):
        reply = ("--reply-to", first) if node is bob and first and "pulled" in text else ()
        sent = node.cli_json("send", channel, text, *reply)
        first = first or str(sent["id"])
        time.sleep(0.05)  # distinct timestamps, so the order is the order written
    # an action that does not count: bob is made a moderator, then, while the two
    # nodes are apart, alice deops him and he sets a topic
    _ok(alice.cli("mod", "op", channel, bob.did))
    _wait(lambda: any(m["did"] == bob.did and m["rank"] == "moderator"
                      for m in bob.cli_json("members", channel)), "bob to be a moderator")
    bob.stop()
    _ok(alice.cli("mod", "deop", channel, bob.did))
    alice.stop()
    bob.start()
    _ok(bob.cli("mod", "topic", channel, "bob's topic"))
    alice.start()
    _wait(lambda: len(alice.cli_json("modlog", channel)) >= 4, "bob's topic at alice")
    return channel


async def shoot(home: Path, channel: str, out: Path, bob: DevNode) -> list[Path]:
    app = ChatApp(NodeHome(home), channel)
    written = []
    async with app.run_test(size=SIZE) as pilot:
        async def until(predicate: Callable[[], Any], what: str, within: float = 20.0) -> None:
            deadline = time.monotonic() + within
            while not predicate():
                if time.monotonic() > deadline:
                    raise LocalError(f"timed out waiting for {what}")
                await pilot.pause(0.05)

        async def typed(line: str) -> None:
            done = app.lines_done
            app.chat_input.value = line
            await pilot.press("enter")
            await until(lambda: app.lines_done > done, line)

        await until(lambda: app.live == "watch" and app.current == channel, "the app")
        await until(lambda: app.peer_count >= 1, "bob's node to connect")
        sent = await asyncio.to_thread(bob.cli, "send", channel, "ok ok, fewer links")
        _ok(sent)
        await until(lambda: any("fewer links" in ln for ln in app.pane.plain_lines()),
                    "bob's live message")
        await until(lambda: any(m.get("online") for m in app.members
                                if m.get("did") == bob.did), "bob online")
        # a reaction to bob's reply and an edit, typed (handles: the dim numbers)
        reply = next(r for r in app.message_refs() if r.text.startswith("pulled it"))
        for line in (f"/react {reply.handle} :+1:", "s/cheers/cheers, well done/"):
            await typed(line)
        await until(lambda: any("\U0001f44d 1]" in ln for ln in app.pane.plain_lines())
                    and any("well done (edited)" in ln for ln in app.pane.plain_lines()),
                    "the reaction and the edit")
        # a moderation notice, live: alice mutes bob from the input line
        app.chat_input.value = f"/mute {bob.did[-8:]} too many links"
        await pilot.press("enter")
        await until(lambda: any(n.startswith("moderation:") and " mute " in n
                                for n in app.notices), "the mute notice")
        await until(lambda: any(m.get("rank") == "muted" for m in app.members), "bob muted")
        app.chat_input.value = "see you at the release"
        await pilot.pause(0.2)
        main = out / "main.svg"
        main.write_text(app.export_screenshot(title="p2pchat chat"))
        written.append(main)
        await pilot.press("ctrl+l")
        await until(lambda: isinstance(app.screen, ModlogScreen), "the moderation log view")
        await pilot.pause(0.2)
        modlog = out / "modlog.svg"
        modlog.write_text(app.export_screenshot(title="p2pchat chat: moderation log"))
        written.append(modlog)
        await pilot.press("escape")
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m p2pchat.tui.screenshots OUTDIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="p2p-shots-"))
    alice, bob = DevNode(root / "alice", "alice"), DevNode(root / "bob", "bob")
    try:
        alice.start()
        bob.start()
        channel = prepare(alice, bob)
        for path in asyncio.run(shoot(alice.home, channel, out, bob)):
            print(path)
    finally:
        alice.stop()
        bob.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
