"""``ChatState``: what the chat app knows, and the primitives every part of it uses.

The state of a session attached to a node (who this node is, the channels, the
open channel's messages and handles, members, sync progress, what is dirty and
waits for the refresh task) lives here, with the few operations the rest build
on: a request to the node (:meth:`ChatState.call`), a notice in the message pane
(:meth:`ChatState.notice`), marking parts of the UI dirty (:meth:`ChatState._mark`)
and running a long-lived task that survives its own bugs (:meth:`ChatState._guard`).

The app is layered over it: :mod:`p2pchat.tui.view` loads from the node and
renders, :mod:`p2pchat.tui.commands` runs what the user types, and
:mod:`p2pchat.tui.app` is the shell (layout, key bindings, the connection, events
and the refresh loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.app import App

from p2pchat.control.protocol import ControlError
from p2pchat.home import NodeHome
from p2pchat.tui.chatinput import ChatInput
from p2pchat.tui.client import AsyncControl, socket_path_of
from p2pchat.tui.format import Sync, notice_text
from p2pchat.tui.modlog import ModlogScreen
from p2pchat.tui.pane import MessagePane

log = logging.getLogger("p2pchat.tui")


class ChatState(App[None]):
    """The chat app's state and primitives (see the module docstring)."""

    # --- state ------------------------------------------------------------------------

    def __init__(self, target: NodeHome | Path | str, channel: str | None = None) -> None:
        super().__init__()
        self.socket_path = socket_path_of(target)
        self.initial_channel = channel
        self.ctl: AsyncControl | None = None
        #: ``connecting``, ``watch`` (live events), ``poll`` (an older node), ``offline``
        self.live = "connecting"
        self.me = ""
        self.my_name = ""
        #: connected peers (bootstrap servers apart), and every link counted by ``via``
        self.peer_count = 0
        self.paths: dict[str, int] = {}
        #: bootstrap servers configured on the node (``status``)
        self.servers_configured = 0
        #: channel id -> its sync progress while it catches up (``sync`` events)
        self.sync: dict[str, Sync] = {}
        self._sync_seq = 0
        self._sync_at: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.peer_dids: list[str] = []
        #: channel id -> the entry of ``channel.list``
        self.channels: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        #: channel id -> number of messages when it was last looked at
        self.seen: dict[str, int] = {}
        #: messages of the current channel shown in the pane, by id
        self.messages: dict[str, dict[str, Any]] = {}
        #: channel id -> message id -> its handle, the number shown before it (kept for
        #: the session, so a number always means the same message)
        self.handles: dict[str, dict[str, int]] = {}
        #: channels whose next refresh fetches the whole window, not just the tail (this
        #: node changed a message older than the tail)
        self._wide: set[str] = set()
        #: channels whose oldest message is loaded (nothing more to scroll back to)
        self._history_start: set[str] = set()
        #: scrolling back dropped the newest messages from the pane (MAX_ENTRIES): it
        #: stops following new ones until the user scrolls down to the end again
        self.detached = False
        self._older: asyncio.Task[None] | None = None
        self.members: list[dict[str, Any]] = []
        #: this node is owner or moderator of the open channel (sees hidden placeholders)
        self.moderating = False
        self.modlog_len: dict[str, int] = {}
        self.last_invite = ""
        #: the moderation-log view last opened (tests and the screenshot script read it)
        self.modlog_screen: ModlogScreen | None = None
        self._listed = False
        #: every notice shown, oldest first (the pane only keeps the current channel's)
        self.notices: list[str] = []
        #: the notices that were errors
        self.errors: list[str] = []
        #: input lines handled so far (tests wait on it)
        self.lines_done = 0
        #: pages of older messages loaded by scrolling back (tests wait on it)
        self.scrollback_loads = 0
        self._notice_seq = 0
        self._open_seq = 0
        self._commands: asyncio.Queue[str] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._dirty_channels: set[str] = set()
        self._dirty_keys: set[str] = set()
        self._dirty_peers = False
        self._dirty_all = False
        self._dirty_modlog = False
        self._modlog_at = 0.0
        self._modlog_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- widgets ----------------------------------------------------------------------

    @property
    def pane(self) -> MessagePane:
        return self.query_one("#pane", MessagePane)

    @property
    def chat_input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

    # --- tasks ------------------------------------------------------------------------

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run a long-lived task; a bug in it becomes a notice, not a crash."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("chat task failed")
                self.notice(f"internal error: {type(exc).__name__}: {exc}", error=True)
                await asyncio.sleep(1.0)

    # --- notices, requests, dirty parts -----------------------------------------------

    def notice(self, text: str, error: bool = False) -> None:
        """A line in the message pane (errors in red); also kept in ``notices``."""
        text = text.replace("\r", "")
        self.notices.append(text)
        if error:
            self.errors.append(text)
        self._notice_seq += 1
        with contextlib.suppress(Exception):
            self.pane.add(f"notice:{self._notice_seq}",
                          notice_text(text, "bold red" if error else "yellow"))

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self.ctl is None:
            raise ControlError("not connected to the node")
        return await self.ctl.call(method, params)

    def _mark(self, channel: str | None = None, peers: bool = False, all_: bool = False) -> None:
        """Mark parts of the UI dirty; the refresh task fetches them, one batch at a time."""
        if channel is not None:
            self._dirty_channels.add(channel)
        self._dirty_peers |= peers
        self._dirty_all |= all_
        self._wake.set()
