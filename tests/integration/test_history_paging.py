"""Large answers over the control socket (issue 16): a history longer than one 1 MiB
control line, read whole, in pages by cursor, and while messages keep arriving."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pchat.control.client import ControlConnection
from p2pchat.home import NodeHome
from tests.integration.channelkit import create_channel
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

#: Enough messages of this size that no answer holding all of them fits a 1 MiB line.
COUNT = 4_500
PAD = "x" * 400


def text_of(i: int) -> str:
    return f"message {i:05d} {PAD}"


def send_all(node: NodeProcess, channel: str, texts: list[str]) -> list[str]:
    """``send --stdin``: every text over one control connection; the ids acknowledged."""
    result = subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel, "--stdin"],
        input="".join(t + "\n" for t in texts), capture_output=True, text=True, timeout=300,
        check=False)
    assert 0 == result.returncode, result.stderr
    ids = result.stdout.split()
    assert len(texts) == len(ids), result.stderr
    return ids


@pytest.fixture(scope="module")
def big() -> Iterator[tuple[NodeProcess, str, list[str]]]:
    """One node holding a channel of COUNT messages (module-wide: sending takes a while)."""
    root = Path(tempfile.mkdtemp(prefix="p2p-"))
    node = NodeProcess(root / "A")
    try:
        node.start()
        channel, _ = create_channel(node, "big")
        ids = send_all(node, channel, [text_of(i) for i in range(COUNT)])
        yield node, channel, ids
    finally:
        node.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def cli_json(node: NodeProcess, *args: str) -> Any:
    result = node.cli(*args, "--json")
    assert 0 == result.returncode, result.stderr
    return json.loads(result.stdout)


def test_history_of_more_than_a_line_is_read_whole_and_in_order(
        big: tuple[NodeProcess, str, list[str]]) -> None:
    node, channel, ids = big
    messages = cli_json(node, "history", channel, "--limit", "100000")
    assert ids == [m["id"] for m in messages]
    assert [text_of(i) for i in range(COUNT)] == [m["text"] for m in messages]
    plain = node.cli("history", channel, "--limit", "100000")
    assert 0 == plain.returncode, plain.stderr
    lines = plain.stdout.splitlines()
    assert COUNT == len(lines)
    assert lines[0].endswith(f"[{ids[0]}]") and lines[-1].endswith(f"[{ids[-1]}]")
    # --limit N is the newest N, however many pages that takes
    assert ids[-2345:] == [m["id"] for m in cli_json(node, "history", channel,
                                                     "--limit", "2345")]


def test_one_control_answer_longer_than_a_line_is_streamed_in_parts(
        big: tuple[NodeProcess, str, list[str]]) -> None:
    node, channel, ids = big
    with ControlConnection(NodeHome(node.home)) as conn:
        conn.send("history", {"channel": channel, "limit": 100_000})
        conn.send("status")  # pipelined behind the long answer: still answered in order
        assert ids == [m["id"] for m in conn.receive()]
        assert "did" in conn.receive()
    found = cli_json(node, "search", channel, "message", "--limit", "100000")
    assert ids == [m["id"] for m in found]


def walk_back(node: NodeProcess, channel: str, size: int) -> list[str]:
    """Newest to oldest with ``--before``, in pages of ``size``; in display order."""
    pages: list[list[str]] = []
    args: tuple[str, ...] = ()
    while True:
        page = [m["id"] for m in cli_json(node, "history", channel, "--limit", str(size), *args)]
        if not page:
            break
        pages.append(page)
        if len(page) < size:
            break
        args = ("--before", page[0])
    return [i for page in reversed(pages) for i in page]


def walk_forward(node: NodeProcess, channel: str, first: str, size: int) -> list[str]:
    out = [first]
    while True:
        page = [m["id"] for m in cli_json(node, "history", channel, "--limit", str(size),
                                          "--after", out[-1])]
        out += page
        if len(page) < size:
            return out


def test_before_and_after_walk_every_message_once_while_more_arrive(
        big: tuple[NodeProcess, str, list[str]]) -> None:
    node, channel, ids = big
    start = [m["id"] for m in cli_json(node, "history", channel, "--limit", "100000")]
    assert ids == start[:COUNT]
    assert start == walk_back(node, channel, 1000)  # nothing arrives: exactly the channel

    sent: list[str] = []
    sender = threading.Thread(target=lambda: sent.extend(
        send_all(node, channel, [f"late {i}" for i in range(400)])))
    sender.start()
    try:
        backward = walk_back(node, channel, 700)
        forward = walk_forward(node, channel, start[0], 700)
    finally:
        sender.join(300)
    final = [m["id"] for m in cli_json(node, "history", channel, "--limit", "100000")]
    assert 400 == len(sent) and final == start + sent
    # walking back from the newest: the channel as it was at the first page, plus only
    # what arrived before that first page was read
    assert len(backward) == len(set(backward)), "a message was repeated"
    assert final[:len(backward)] == backward, "a message was skipped or reordered"
    assert len(backward) >= len(start)
    assert len(forward) == len(set(forward)), "a message was repeated"
    assert final[:len(forward)] == forward, "a message was skipped or reordered"
    assert len(forward) >= len(start)


def test_cursor_errors_are_one_line_and_change_nothing(
        big: tuple[NodeProcess, str, list[str]]) -> None:
    node, channel, ids = big
    for args, code, message in [
        (("--before", "not-an-id"), 1, "p2pchat: before must be a message id"),
        (("--after", "0" * 25), 1, "p2pchat: after must be a message id"),
        (("--before", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 1,
         "p2pchat: no message 01ARZ3NDEKTSV4RRFFQ69G5FAV in this channel"),
        (("--before", ids[5], "--after", ids[1]), 2, "p2pchat: give --before or --after"),
    ]:
        result = node.cli("history", channel, *args)
        assert code == result.returncode, (args, result.stderr)
        assert result.stderr.startswith(message), (args, result.stderr)
        assert 1 == len(result.stderr.splitlines()), result.stderr
        assert "" == result.stdout
    assert ids[2:5] == [m["id"] for m in cli_json(node, "history", channel, "--after", ids[1],
                                                  "--limit", "3")]
    assert ids[2:5] == [m["id"] for m in cli_json(node, "history", channel, "--before",
                                                  ids[5].lower(), "--limit", "3")]
