"""``python -m p2pchat.tui.screenshots OUTDIR`` writes the two SVGs of docs/screenshots."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TEXT = re.compile(r'<text[^>]*\bx="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>')


def screen_lines(svg: str) -> list[str]:
    """The terminal lines of a Textual SVG screenshot, as plain text."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in TEXT.finditer(svg):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)),
                                                        html.unescape(m.group(3))))
    return ["".join(t for _, t in sorted(spans)).replace("\xa0", " ")
            for _, spans in sorted(rows.items())]


def test_screenshot_script_writes_both_svgs(tmp_path: Path) -> None:
    out = tmp_path / "shots"
    run = subprocess.run([sys.executable, "-m", "p2pchat.tui.screenshots", str(out)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert 0 == run.returncode, run.stderr[-3000:]
    main, modlog = out / "main.svg", out / "modlog.svg"
    assert [str(main), str(modlog)] == run.stdout.split()
    for svg in (main, modlog):
        assert svg.read_text().lstrip().startswith("<svg")
    screen = "\n".join(screen_lines(main.read_text()))
    for text in ("channels", "#general \u2014 p2p chat, no servers", "members",
                 "morning! the new build is up", "* alice", "ok ok, fewer links",
                 "-- moderation:", "mute", "(too many links)", "alice", "owner", "muted",
                 "1 peer (1 direct)",
                 # handles, a reply's quote, a reaction and an edit typed in the input line
                 "\u256d\u2500", ": morning! the new build is up", "[\U0001f44d",
                 "cheers, well done (edited)"):
        assert text in screen, (text, screen)
    view = "\n".join(screen_lines(modlog.read_text()))
    for text in ("moderation log of #general", "5 entries, 1 invalid", "time", "action",
                 "target", "by", "status", "op", "deop", "applied", "INVALID:",
                 "too many links", "escape closes"):
        assert text in view, (text, view)
