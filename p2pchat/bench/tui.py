"""The chat UI with a big channel (issue 7): ``bench_tui(messages=10_000)``.

Budget: with 10,000 messages in a channel, opening it takes at most 500 ms and
scrolling renders only what is visible.

Setup: one real node process (``p2pchat run`` on loopback, a throwaway home,
see :mod:`p2pchat.tui.devnodes`) with a channel of ``messages`` messages of ~55
characters sent with ``p2pchat send --stdin``, and a second channel with one
message. The app (:class:`~p2pchat.tui.app.ChatApp`) runs headless (Textual's
``run_test``, 140x40) attached to that node.

Open: from the small channel, ``open_channel`` of the big one (``history`` of the
last 500, ``modlog``, ``members``, the pane wrapping the 500 entries) plus one
pilot pause, so the frame is painted; three opens, the budget takes the median.
Scroll: pageup, then a pause; the pane counts its ``render_line`` calls and the
virtual lines they drew, which must be the visible lines only (not the ~500
entries it holds, let alone 10,000), and no entry is wrapped again.

Run it with ``python -m p2pchat.bench.tui [MESSAGES]`` (prints the dict as JSON).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.tui.app import HISTORY_WINDOW, ChatApp
from p2pchat.tui.devnodes import DevNode

OPEN_BUDGET_MS = 500.0
OPENS = 3
SIZE = (140, 40)


def _fill(node: DevNode, channel: str, messages: int) -> float:
    lines = "".join(f"message {i:05d} of the benchmark, some words to wrap a bit\n"
                    for i in range(messages))
    start = time.perf_counter()
    sent = node.cli("send", channel, "--stdin", stdin=lines, timeout=600)
    if sent.returncode != 0:
        raise LocalError(f"send --stdin failed: {sent.stderr.strip()}")
    return time.perf_counter() - start


async def _measure(home: Path, big: str, small: str) -> dict[str, Any]:
    app = ChatApp(NodeHome(home), small)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 30
        while not (app.live == "watch" and app.current == small):
            if time.monotonic() > deadline:
                raise LocalError("the app did not attach")
            await pilot.pause(0.05)
        opens = []
        for _ in range(OPENS):
            await app.open_channel(small)
            await pilot.pause()
            start = time.perf_counter()
            await app.open_channel(big)
            await pilot.pause()
            opens.append((time.perf_counter() - start) * 1000)
        pane = app.pane
        await pilot.pause(0.1)
        visible = pane.scrollable_content_region.height
        top_before = pane.scroll_offset.y
        wrapped = pane.renders
        pane.reset_line_counts()
        await pilot.press("pageup")
        await pilot.pause(0.1)
        top = pane.scroll_offset.y
        span = pane.rendered_span
        drawn = 0 if span is None else span[1] - span[0] + 1
        return {
            "open_ms": [round(x, 1) for x in opens],
            "open_median_ms": round(statistics.median(opens), 1),
            "entries_in_pane": len(pane),
            "lines_in_pane": pane.line_count,
            "visible_lines": visible,
            "scrolled_lines": top_before - top,
            "render_line_calls": pane.lines_rendered,
            "rendered_span": list(span) if span else None,
            "distinct_lines_drawn": drawn,
            "entries_rewrapped_on_scroll": pane.renders - wrapped,
            "within_visible": span is not None and top <= span[0] and span[1] < top + visible,
        }


def bench_tui(messages: int = 10_000) -> dict[str, Any]:
    """Figures and budget verdicts for the chat UI with ``messages`` in a channel."""
    root = Path(tempfile.mkdtemp(prefix="p2p-bench-tui-"))
    node = DevNode(root / "node", "bench")
    try:
        node.start()
        big = str(node.cli_json("channel", "create", "big")["channel"])
        small = str(node.cli_json("channel", "create", "small")["channel"])
        fill_s = _fill(node, big, messages)
        if node.cli("send", small, "hello").returncode != 0:
            raise LocalError("send failed")
        figures = asyncio.run(_measure(node.home, big, small))
    finally:
        node.stop()
        shutil.rmtree(root, ignore_errors=True)
    open_ok = figures["open_median_ms"] <= OPEN_BUDGET_MS
    scroll_ok = bool(figures["within_visible"]
                     and figures["distinct_lines_drawn"] <= figures["visible_lines"]
                     and figures["entries_rewrapped_on_scroll"] == 0)
    return {
        "messages": messages,
        "history_window": HISTORY_WINDOW,
        "terminal": f"{SIZE[0]}x{SIZE[1]}",
        "fill_s": round(fill_s, 2),
        **figures,
        "budgets": {
            "open_median_ms<=500": open_ok,
            "scroll_renders_only_visible": scroll_ok,
        },
        "ok": open_ok and scroll_ok,
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    print(json.dumps(bench_tui(count), indent=2))
