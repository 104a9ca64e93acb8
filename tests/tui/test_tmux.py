"""End to end under tmux: ``p2pchat chat`` in a real terminal against two real nodes.

The test makes a detached tmux session on its own server socket, runs ``p2pchat
--home A chat room`` in it, types with ``send-keys`` and reads the screen with
``capture-pane -p``, polled in bounded loops (the screen is the only thing there
is to observe). Node B is driven through its CLI. The tmux server is always killed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.channelkit import wait_until
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 160, 45


def poll(probe: Callable[[], Any], what: str, within: float = 20.0) -> Any:
    """Until ``probe()`` returns something true (returned), or AssertionError after
    ``within`` s naming ``what``. A terminal and another process's CLI give no event to
    wait on: polling them in a bounded loop is the only way (``wait_until``)."""
    return wait_until(probe, within, what)


class Tmux:
    def __init__(self) -> None:
        self.socket = f"p2pchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args],
                                capture_output=True, text=True, timeout=10, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {result.stderr}")
        return result.stdout

    def start(self, command: str) -> None:
        # remain-on-exit: a pane whose program ended stays, so the test can see that it did
        # (default-size too, so the window is that size with no client attached)
        self.run("start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
                 "set-option", "-g", "default-size", f"{WIDTH}x{HEIGHT}", ";",
                 "new-session", "-d", "-s", "chat", "-x", str(WIDTH), "-y", str(HEIGHT),
                 command)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "chat")

    def dead(self) -> bool:
        return self.run("display-message", "-p", "-t", "chat", "#{pane_dead}").strip() == "1"

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "chat", "-l", text)
        self.run("send-keys", "-t", "chat", "Enter")

    def until(self, predicate: Callable[[str], Any], what: str, within: float = 20.0) -> str:
        last = [""]

        def probe() -> str | None:
            last[0] = self.screen()
            return last[0] if predicate(last[0]) else None

        try:
            return str(poll(probe, what, within))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{last[0]}") from None

    def kill(self) -> None:
        self.run("kill-server", check=False)


@pytest.fixture
def nodes() -> Iterator[tuple[NodeProcess, NodeProcess]]:
    root = Path(tempfile.mkdtemp(prefix="p2p-"))
    a, b = NodeProcess(root / "A"), NodeProcess(root / "B")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.cleanup()
        b.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def cli_until(node: NodeProcess, args: tuple[str, ...], predicate: Callable[[Any], Any],
              what: str, within: float = 20.0) -> Any:
    def probe() -> Any:
        result = node.cli(*args, "--json")
        return predicate(json.loads(result.stdout)) if result.returncode == 0 else None

    return poll(probe, what, within)


def test_chat_in_tmux_against_two_nodes(nodes: tuple[NodeProcess, NodeProcess]) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    a, b = nodes
    created = a.cli("channel", "create", "room", "--json")
    assert 0 == created.returncode, created.stderr
    channel, invite = (json.loads(created.stdout)[k] for k in ("channel", "invite"))
    assert 0 == b.cli("join", invite).returncode
    cli_until(b, ("channel", "list"),
              lambda listed: any(c["channel"] == channel and c["synced"] for c in listed),
              "B to sync")
    # COLUMNS/LINES (set under pytest) would override the terminal's real size
    command = " ".join(["env", "-u", "P2PCHAT_HOME", "-u", "COLUMNS", "-u", "LINES",
                        "TERM=xterm-256color",
                        shlex.quote(sys.executable), "-m", "p2pchat",
                        "--home", shlex.quote(str(a.home)), "chat", "room"])
    tmux = Tmux()
    try:
        tmux.start(command)
        tmux.until(lambda s: "#room" in s and "1 peer" in s, "the chat to attach")
        size = tmux.run("display-message", "-p", "-t", "chat", "#{pane_width}x#{pane_height}")
        assert f"{WIDTH}x{HEIGHT}" == size.strip()
        tmux.type("hello from tmux")
        tmux.until(lambda s: "hello from tmux" in s, "the typed message in the pane")
        cli_until(b, ("history", channel),
                  lambda h: any(m["text"] == "hello from tmux" and m["author"] == a.did
                                for m in h), "the message in B's history")
        sent = b.cli("send", channel, "hello back from B's CLI")
        assert 0 == sent.returncode, sent.stderr
        screen = tmux.until(lambda s: "hello back from B's CLI" in s, "B's message in the pane")
        line = next(ln for ln in screen.splitlines() if "hello back from B's CLI" in ln)
        assert "\u2026" + b.did[-8:] in line, line
        assert not tmux.dead()
        tmux.type("/quit")
        poll(tmux.dead, "the app to quit", 15.0)
        # tmux does not always have the exit status when the pane is dead (it was seen
        # empty); when it has one, it must be a clean exit
        ended = tmux.run("display-message", "-p", "-t", "chat",
                         "#{pane_dead_status}|#{pane_dead_signal}").strip()
        assert ended in ("0|", "|"), (ended, tmux.screen())
        assert a.proc is not None and a.proc.poll() is None  # the attached node keeps running
    finally:
        tmux.kill()
