"""``ChatInput``: the chat's input line, with its own line history and tab completion.

Up/down walk the last :data:`INPUT_HISTORY` lines typed (the draft being typed is
kept while walking); tab completes the last word with
:class:`~p2pchat.tui.format.Completer`: a command name, a member's DID, or the
handle of a message after ``/reply``, ``/edit``, ``/delete`` or ``/react`` (the
app supplies the DIDs and the open channel's messages); repeated tabs cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Input

from p2pchat.tui.format import Completer, MessageRef

#: Lines of input remembered for up/down.
INPUT_HISTORY = 500


class ChatInput(Input):
    """The input line: up/down walk the lines typed before, tab completes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "history(-1)", "previous line", show=False),
        Binding("down", "history(1)", "next line", show=False),
        Binding("tab", "complete", "complete", show=False),
    ]

    def __init__(self, complete: Callable[[], list[str]],
                 messages: Callable[[], list[MessageRef]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: list[str] = []
        self._at = 0
        self._draft = ""
        self._dids = complete
        self._messages = messages or list
        self.completer = Completer()

    def remember(self, line: str) -> None:
        if line and (not self.lines or self.lines[-1] != line):
            self.lines.append(line)
            del self.lines[:-INPUT_HISTORY]
        self._at = len(self.lines)
        self._draft = ""

    def action_history(self, step: int) -> None:
        if not self.lines:
            return
        if self._at == len(self.lines):
            self._draft = self.value
        self._at = max(0, min(len(self.lines), self._at + step))
        self.value = self.lines[self._at] if self._at < len(self.lines) else self._draft
        self.cursor_position = len(self.value)

    def action_complete(self) -> None:
        new = self.completer.complete(self.value, self._dids(), self._messages())
        if new is not None:
            self.value = new
            self.cursor_position = len(new)
