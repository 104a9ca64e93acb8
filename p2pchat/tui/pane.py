"""The message pane: a Line-API widget that keeps messages and notices by key.

Each entry (a message by its id, or a notice) is wrapped once for the current
width and kept as strips; ``render_line`` only crops the visible strips, so
scrolling costs the same with 50 or 5,000 entries. Appending an entry renders
just that entry, and replacing one (an edit, a reaction) re-renders just it and
shifts the line offsets after it. Everything is re-wrapped only when the width
changes.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.text import Text
from textual.events import MouseScrollUp, Resize
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

#: Most entries kept. New ones drop the oldest from the top; older pages loaded while
#: scrolling back drop the newest from the bottom (history can be fetched again).
MAX_ENTRIES = 5000


@dataclass(slots=True)
class Entry:
    key: str
    text: Text
    strips: list[Strip] = field(default_factory=list)


class MessagePane(ScrollView, can_focus=True):
    """Messages and notices of the current channel, newest at the bottom."""

    class ReachedTop(Message):
        """The user scrolled to the first line (or tried to scroll above it)."""

    DEFAULT_CSS = """
    MessagePane {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
    }
    """

    def __init__(self, *, max_entries: int = MAX_ENTRIES, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_entries = max_entries
        self._entries: list[Entry] = []
        self._index: dict[str, int] = {}
        #: first line of each entry (parallel to ``_entries``)
        self._starts: list[int] = []
        self._lines: list[Strip] = []
        self._width = 0
        #: how many entries were rendered (a measure for tests and benchmarks)
        self.renders = 0
        #: ``render_line`` calls, and the lowest and highest virtual line they drew,
        #: since :meth:`reset_line_counts` (scrolling draws only the visible lines)
        self.lines_rendered = 0
        self.rendered_span: tuple[int, int] | None = None

    # --- state, for the app and for tests --------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def keys(self) -> list[str]:
        return [e.key for e in self._entries]

    def plain(self, key: str) -> str:
        return self._entries[self._index[key]].text.plain

    def entries(self) -> list[tuple[str, Text]]:
        return [(e.key, e.text) for e in self._entries]

    def plain_lines(self) -> list[str]:
        """The plain text of every entry, top to bottom."""
        return [e.text.plain for e in self._entries]

    @property
    def line_count(self) -> int:
        return len(self._lines)

    def reset_line_counts(self) -> None:
        self.lines_rendered = 0
        self.rendered_span = None

    # --- changes -------------------------------------------------------------------

    def clear_entries(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._starts.clear()
        self._lines.clear()
        self._update_size(scroll=False)
        self.refresh()

    def set_entries(self, entries: list[tuple[str, Text]]) -> None:
        """Replace everything (opening a channel) and scroll to the end."""
        self._entries = [Entry(k, t) for k, t in entries[-self.max_entries:]]
        self._reindex()
        self._relayout()
        self._update_size(scroll=True)
        self.refresh()

    def add(self, key: str, text: Text) -> bool:
        """Append ``key``, or replace it in place if it is there. True if added."""
        at = self._index.get(key)
        if at is not None:
            self.replace(key, text)
            return False
        follow = self._at_end()
        entry = Entry(key, text)
        self._render_entry(entry)
        self._index[key] = len(self._entries)
        self._starts.append(len(self._lines))
        self._entries.append(entry)
        self._lines.extend(entry.strips)
        if len(self._entries) > self.max_entries:
            self._drop_oldest(len(self._entries) - self.max_entries)
        self._update_size(scroll=follow)
        self.refresh()
        return True

    def insert_sorted(self, key: str, text: Text, before: str | None) -> None:
        """Insert ``key`` before the entry ``before`` (a late message), or append."""
        if before is None or before not in self._index or key in self._index:
            self.add(key, text)
            return
        at = self._index[before]
        entry = Entry(key, text)
        self._render_entry(entry)
        self._entries.insert(at, entry)
        self._reindex()
        start = self._starts[at]
        self._lines[start:start] = entry.strips
        self._starts.insert(at, start)
        n = len(entry.strips)
        for i in range(at + 1, len(self._starts)):
            self._starts[i] += n
        self._update_size(scroll=False)
        self.refresh()

    def prepend(self, entries: list[tuple[str, Text]]) -> list[str]:
        """Put ``entries`` (older ones, oldest first) above the first entry, keeping the
        lines on screen where they are. Beyond ``max_entries`` the newest entries are
        dropped from the bottom; returns their keys."""
        new = [Entry(k, t) for k, t in entries if k not in self._index]
        if not new:
            return []
        starts: list[int] = []
        lines: list[Strip] = []
        for entry in new:
            self._render_entry(entry)
            starts.append(len(lines))
            lines.extend(entry.strips)
        added = len(lines)
        self._entries[0:0] = new
        self._starts = starts + [s + added for s in self._starts]
        self._lines[0:0] = lines
        keep = min(len(self._entries), self.max_entries)
        dropped = [e.key for e in self._entries[keep:]]
        if dropped:
            del self._lines[self._starts[keep]:]
            del self._entries[keep:]
            del self._starts[keep:]
        self._reindex()
        y = self.scroll_offset.y
        self._update_size(scroll=False)
        self.scroll_to(y=y + added, animate=False, immediate=True)
        self.refresh()
        return dropped

    def at_top(self) -> bool:
        return self.scroll_offset.y <= 0

    def at_end(self) -> bool:
        return self._at_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value <= 0 < old_value:
            self.post_message(self.ReachedTop())

    def on_mouse_scroll_up(self, event: MouseScrollUp) -> None:
        if self.at_top():
            self.post_message(self.ReachedTop())

    def replace(self, key: str, text: Text) -> None:
        at = self._index[key]
        entry = self._entries[at]
        if entry.text == text:
            return
        old = len(entry.strips)
        entry.text = text
        self._render_entry(entry)
        start = self._starts[at]
        self._lines[start:start + old] = entry.strips
        delta = len(entry.strips) - old
        if delta:
            for i in range(at + 1, len(self._starts)):
                self._starts[i] += delta
        self._update_size(scroll=False)
        self.refresh()

    def remove_entry(self, key: str) -> None:
        at = self._index.get(key)
        if at is None:
            return
        entry = self._entries.pop(at)
        start = self._starts.pop(at)
        n = len(entry.strips)
        del self._lines[start:start + n]
        for i in range(at, len(self._starts)):
            self._starts[i] -= n
        self._reindex()
        self._update_size(scroll=False)
        self.refresh()

    # --- internals -----------------------------------------------------------------

    def _reindex(self) -> None:
        self._index = {e.key: i for i, e in enumerate(self._entries)}

    def _drop_oldest(self, n: int) -> None:
        cut = self._starts[n]
        del self._entries[:n]
        del self._lines[:cut]
        self._starts = [s - cut for s in self._starts[n:]]
        self._reindex()

    def _at_end(self) -> bool:
        return self.scroll_offset.y >= self.max_scroll_y

    def _render_width(self) -> int:
        return max(self.scrollable_content_region.width, 20)

    def _render_entry(self, entry: Entry) -> None:
        if not self._width:
            entry.strips = []
            return
        console = self.app.console
        options = console.options.update_width(self._width)
        lines = console.render_lines(entry.text, options, pad=False)
        entry.strips = [Strip(line) for line in lines] or [Strip([Segment("")])]
        self.renders += 1

    def _relayout(self) -> None:
        self._width = self._render_width() if self.size.width else 0
        self._lines = []
        self._starts = []
        for entry in self._entries:
            self._render_entry(entry)
            self._starts.append(len(self._lines))
            self._lines.extend(entry.strips)

    def _update_size(self, scroll: bool) -> None:
        self.virtual_size = Size(self._width, len(self._lines))
        if scroll:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def on_resize(self, event: Resize) -> None:
        width = self._render_width() if event.size.width else 0
        if width != self._width:
            follow = self._at_end() or not self._width
            self._relayout()
            self._update_size(scroll=follow)

    def entry_at_line(self, y: int) -> str | None:
        """The key of the entry shown on virtual line ``y``."""
        if not self._entries or y < 0 or y >= len(self._lines):
            return None
        return self._entries[bisect_right(self._starts, y) - 1].key

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        self.lines_rendered += 1
        span = self.rendered_span
        self.rendered_span = (index, index) if span is None else (min(span[0], index),
                                                                   max(span[1], index))
        if index >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        return self._lines[index].crop_extend(scroll_x, scroll_x + width, self.rich_style) \
            .apply_style(self.rich_style)
