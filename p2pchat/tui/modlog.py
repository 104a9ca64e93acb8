"""The moderation-log view: every entry of the ``modlog`` control method in a table.

Opened by ``/modlog`` or ctrl+l over the chat, closed with escape. One row per
entry in the order the node folds them (causal order): the author's time, the
action (``(off)`` for a mode cleared), the target's short DID, the detail
(topic text, mode name, reason), who did it, and whether it counts: ``applied``,
or ``INVALID: why`` (an action by someone without the authority, a ban of the
owner, ...), which the node keeps in the log but ignores.

The view follows the log while it is open: the app calls :meth:`ModlogScreen.update_entries`
when the channel changes (rate-limited, see ``MODLOG_VIEW_INTERVAL`` in ``app.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from p2pchat.tui.format import clean, clock, short

COLUMNS = ("time", "action", "target", "detail", "by", "status")


def modlog_row(entry: dict[str, Any], names: dict[str, str] | None = None) -> tuple[Text, ...]:
    """The cells of one ``modlog`` entry."""
    names = names or {}
    ts = entry.get("ts")
    action = str(entry.get("action", "?")) + ("" if entry.get("on", True) else " (off)")
    target = str(entry.get("target") or "")
    by = str(entry.get("by") or "")
    value = clean(str(entry.get("value") or ""))
    reason = clean(str(entry.get("reason") or ""))
    detail = " \u2014 ".join(p for p in (repr(value) if value and entry.get("action") == "topic"
                                        else value, reason) if p)

    def who(did: str) -> str:
        name = clean(names.get(did, ""))[:12]
        return f"{name} {short(did)}" if name else short(did)

    if entry.get("applied", True):
        status = Text("applied", style="green")
    else:
        status = Text("INVALID: " + clean(str(entry.get("why") or "does not count")),
                      style="bold red")
    return (Text(clock(ts) if isinstance(ts, int) and ts > 0 else "--:--", style="dim"),
            Text(action, style="bold"), Text(who(target) if target else ""),
            Text(detail[:60]), Text(who(by)), status)


class ModlogScreen(ModalScreen[None]):
    """The moderation log of one channel over the chat; escape closes it."""

    DEFAULT_CSS = """
    ModlogScreen { align: center middle; }
    #modlog-box {
        width: 98%; height: 85%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    #modlog-title { height: 1; text-style: bold; }
    #modlog-table { height: 1fr; }
    #modlog-help { height: 1; color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close", priority=True),
        Binding("ctrl+l", "close", "close", show=False, priority=True),
    ]

    def __init__(self, label: str, entries: list[dict[str, Any]],
                 names: dict[str, str] | None = None, channel: str = "") -> None:
        super().__init__()
        self.label = label
        self.channel = channel
        self.entries = entries
        self.names = names or {}
        #: times the rows were replaced while open (tests wait on it)
        self.updates = 0

    def title_text(self) -> str:
        invalid = sum(1 for e in self.entries if not e.get("applied", True))
        count = f"{len(self.entries)} entr{'y' if len(self.entries) == 1 else 'ies'}"
        return (f"moderation log of {self.label} \u2014 {count}"
                + (f", {invalid} invalid" if invalid else ""))

    def help_text(self) -> str:
        return ("no moderation actions yet" if not self.entries else
                "escape closes \u00b7 up/down scroll \u00b7 invalid entries are kept "
                "in the log and ignored \u00b7 updates live")

    def compose(self) -> ComposeResult:
        with Vertical(id="modlog-box"):
            yield Static(self.title_text(), id="modlog-title")
            yield DataTable(id="modlog-table", cursor_type="row", zebra_stripes=True)
            yield Static(self.help_text(), id="modlog-help")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        self._fill(table)
        table.focus()
        if self.entries:
            table.move_cursor(row=len(self.entries) - 1)

    def _fill(self, table: DataTable[Any]) -> None:
        for i, entry in enumerate(self.entries):
            table.add_row(*modlog_row(entry, self.names), key=str(entry.get("id") or i))

    def update_entries(self, entries: list[dict[str, Any]],
                       names: dict[str, str] | None = None) -> bool:
        """Show ``entries`` (the log now) if they differ; True if they did. A cursor on the
        last row stays on the last row (new entries come into view); any other row keeps
        its place."""
        names = names if names is not None else self.names
        if entries == self.entries and names == self.names:
            return False
        table = self.query_one(DataTable)
        row = table.cursor_row
        follow = row >= table.row_count - 1
        self.entries, self.names = entries, names
        table.clear()
        self._fill(table)
        if entries:
            table.move_cursor(row=len(entries) - 1 if follow else min(row, len(entries) - 1))
        self.query_one("#modlog-title", Static).update(self.title_text())
        self.query_one("#modlog-help", Static).update(self.help_text())
        self.updates += 1
        return True

    def rows(self) -> list[list[str]]:
        """The table's cells as plain text (for tests)."""
        table = self.query_one(DataTable)
        return [[str(c.plain if isinstance(c, Text) else c) for c in table.get_row_at(i)]
                for i in range(table.row_count)]

    def action_close(self) -> None:
        self.dismiss(None)
