"""``ChatApp``: a Textual chat client attached to a running node's control socket.

Two connections to the socket: one for requests (pipelined, see
:mod:`p2pchat.tui.client`) and one subscribed with ``watch``, whose events mark
parts of the UI dirty. One refresh task fetches what is dirty, at most one
batch at a time, so a burst of events costs one ``channel.list`` and one
history tail, not one per event. Commands typed in the input run one after the
other on their own task, so messages are sent in the order they were typed.

Every failure of a request is shown in the message pane as a notice; nothing
the node or a peer does can raise out of the app.

This module is the shell: the layout and key bindings, the connection (reconnecting
when the node goes away), the ``watch`` events, the refresh loop and the command
loop. It tops a stack of layers, each a class the next one extends:
:mod:`p2pchat.tui.state` (the state and the primitives), :mod:`p2pchat.tui.view`
(loading from the node, rendering) and :mod:`p2pchat.tui.commands` (what the user
types); :mod:`p2pchat.tui.chatinput` is the input line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, OptionList, Static

from p2pchat.control.protocol import ControlError
from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.tui.chatinput import ChatInput
from p2pchat.tui.client import AsyncControl, WatchStream
from p2pchat.tui.commands import ChatCommands
from p2pchat.tui.format import parse_sync
from p2pchat.tui.modlog import ModlogScreen
from p2pchat.tui.pane import MessagePane
from p2pchat.tui.view import HISTORY_WINDOW

__all__ = ["HISTORY_WINDOW", "MODLOG_VIEW_INTERVAL", "ChatApp", "run_chat", "run_chat_async"]

log = logging.getLogger("p2pchat.tui")

#: Seconds between refreshes when the node has no ``watch`` method.
POLL_INTERVAL = 2.0
#: Reconnect back-off when the node is not reachable.
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0
#: Seconds between two refreshes of an open moderation log view (events coming
#: faster are folded into one refresh at the end of the interval).
MODLOG_VIEW_INTERVAL = 0.5


class ChatApp(ChatCommands):
    """Channels on the left, messages in the middle, members on the right."""

    TITLE = "p2pchat"
    CSS = """
    Screen { layout: vertical; }
    #body { height: 1fr; }
    #channels { width: 26; height: 1fr; }
    #pane { width: 1fr; height: 1fr; border: tall $primary-darken-2; }
    #pane:focus { border: tall $primary; }
    #members-box { width: 30; height: 1fr; border: tall $primary-darken-2; }
    #status { height: 1; background: $primary-darken-2; color: $text; padding: 0 1; }
    #status.busy { background: $accent-darken-2; }
    #status.warn { background: $warning-darken-2; }
    ChatInput { height: 3; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("ctrl+n", "switch(1)", "next channel", priority=True),
        Binding("ctrl+p", "switch(-1)", "previous channel", priority=True),
        Binding("ctrl+l", "modlog", "moderation log", priority=True),
        Binding("pageup", "page(-1)", "scroll up", show=False, priority=True),
        Binding("pagedown", "page(1)", "scroll down", show=False, priority=True),
    ]

    # --- layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Vertical():
            with Horizontal(id="body"):
                yield OptionList(id="channels")
                yield MessagePane(id="pane")
                with VerticalScroll(id="members-box"):
                    yield Static(id="members")
            yield Static(id="status")
            yield ChatInput(self._completion_dids, self.message_refs, id="input",
                            placeholder="message, or /help for commands")

    async def on_mount(self) -> None:
        self.query_one("#channels", OptionList).border_title = "channels"
        self.query_one("#members-box").border_title = "members"
        self.chat_input.focus()
        self._update_status()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._guard(self._supervise)),
                       loop.create_task(self._guard(self._refresh_loop)),
                       loop.create_task(self._guard(self._command_loop))]

    async def on_unmount(self) -> None:
        if self._modlog_timer is not None:
            self._modlog_timer.cancel()
        if self._older is not None:
            self._older.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ctl is not None:
            await self.ctl.close()

    # --- connection -------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, load, follow ``watch`` events; reconnect when the node goes away."""
        delay = RECONNECT_MIN
        told = ""
        while True:
            ctl = AsyncControl(self.socket_path)
            watch = WatchStream(self.socket_path)
            try:
                await ctl.connect()
                self.ctl = ctl
                # subscribe before loading, so nothing that changes meanwhile is missed
                try:
                    await watch.start()
                    live = "watch"
                except ControlError as exc:
                    if "unknown control method" not in str(exc):
                        raise
                    live = "poll"
                await self._load_all(first=not self.me)
                delay, told = RECONNECT_MIN, ""
                self.live = live
                self._update_status()
                if live == "poll":
                    self.notice(f"this node has no live events; refreshing every "
                                f"{POLL_INTERVAL:g} s")
                    while ctl.connected:
                        await asyncio.sleep(POLL_INTERVAL)
                        self._mark(all_=True)
                else:
                    async for event in watch.events():
                        self._on_event(event)
                self._offline()
                self.notice("lost the connection to the node; reconnecting", error=True)
            except (LocalError, OSError, TimeoutError) as exc:
                self._offline()
                if str(exc) != told:
                    told = str(exc)
                    self.notice(f"{exc}; retrying", error=True)
            finally:
                await watch.close()
                await ctl.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _offline(self) -> None:
        """The node is not reachable: no figures from it are current (sync progress)."""
        self.live = "offline"
        if self.sync:
            self.sync.clear()
            self._render_channel_list()
        self._update_status()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        channel = event.get("channel")
        if kind == "channel" and isinstance(channel, str):
            self._mark(channel=channel)
            screen = self.modlog_screen
            if screen is not None and screen.channel == channel and screen.is_active:
                self._mark_modlog()
        elif kind == "keys" and isinstance(channel, str):
            self._dirty_keys.add(channel)
            self._mark(channel=channel)
        elif kind == "peers":
            self._mark(peers=True)
        elif kind == "sync" and isinstance(channel, str):
            self._on_sync(channel, event.get("sync"))
        elif kind == "lagged":
            self._mark(all_=True)
            if self.modlog_screen is not None and self.modlog_screen.is_active:
                self._mark_modlog()

    def _on_sync(self, cid: str, value: Any) -> None:
        """A ``sync`` event: shown at once (the node sends a few a second at most)."""
        try:
            sync = parse_sync(value)
        except ValueError:
            log.warning("ignored a sync event for %s: %r", cid[:80], value)
            return
        self._sync_seq += 1
        self._sync_at[cid] = self._sync_seq
        if sync == self.sync.get(cid):
            return
        if sync is None:
            self.sync.pop(cid, None)
        else:
            self.sync[cid] = sync
        self._render_channel_list()
        self._update_status()

    # --- the open moderation log view -------------------------------------------------

    def _mark_modlog(self) -> None:
        """Refresh the open moderation log view: at once, or, within
        :data:`MODLOG_VIEW_INTERVAL` of the last refresh, once at the end of it."""
        wait = self._modlog_at + MODLOG_VIEW_INTERVAL - time.monotonic()
        if wait <= 0:
            self._dirty_modlog = True
            self._wake.set()
        elif self._modlog_timer is None:
            def fire() -> None:
                self._modlog_timer = None
                self._mark_modlog()

            self._modlog_timer = asyncio.get_running_loop().call_later(wait, fire)

    async def _refresh_modlog_view(self) -> None:
        """The open moderation log view shows the log as it is now (``channel`` events of
        its channel, at most every :data:`MODLOG_VIEW_INTERVAL` s)."""
        screen = self.modlog_screen
        if screen is None or not screen.is_active:
            return
        self._modlog_at = time.monotonic()
        entries = await self.call("modlog", {"channel": screen.channel})
        if screen.is_active:
            screen.update_entries(entries, dict(self.names))

    # --- refreshing -------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            channels, self._dirty_channels = self._dirty_channels, set()
            keys, self._dirty_keys = self._dirty_keys, set()
            peers, self._dirty_peers = self._dirty_peers, False
            everything, self._dirty_all = self._dirty_all, False
            modlog, self._dirty_modlog = self._dirty_modlog, False
            if modlog:
                try:
                    await self._refresh_modlog_view()
                except LocalError as exc:
                    if self.ctl is not None and self.ctl.connected:
                        self.notice(f"moderation log refresh failed: {exc}", error=True)
            try:
                if everything:
                    await self._load_all(first=False)
                    continue
                if peers:
                    await self._load_peers()
                if channels or keys:
                    before = {c: i.get("keys") for c, i in self.channels.items()}
                    await self._load_channels()
                    self._key_notices(keys, before)
                if self.current is not None and self.current in channels:
                    await self._load_current_tail()
                elif peers and self.current is not None:
                    await self._load_members()
            except LocalError as exc:
                if self.ctl is not None and self.ctl.connected:
                    self.notice(f"refresh failed: {exc}", error=True)

    def _key_notices(self, keys: set[str], before: dict[str, Any]) -> None:
        """A ``keys`` event: the first key of a channel this node just made or joined is
        no news; the keys reaching a waiting node mean it was admitted; any other new
        key is a rotation (after a ban or kick, every 100 messages, or weekly)."""
        for cid in sorted(keys):
            if cid not in before or cid not in self.channels:
                continue
            now = self.channels[cid].get("keys")
            where = "" if cid == self.current else f" in {self._label(cid)}"
            if before[cid] == "waiting" and now == "member":
                self.notice(f"admitted{where}: this node holds the channel keys now")
            elif now == "member":
                self.notice(f"new channel key{where} (key rotation)")
            elif now == "removed" and before[cid] != "removed":
                self.notice(f"this node was removed{where}", error=True)

    # --- input and keys ---------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        line = event.value
        event.input.value = ""
        if isinstance(event.input, ChatInput):
            event.input.remember(line)
            event.input.completer.reset()
        if line.strip():
            self._commands.put_nowait(line)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        cid = event.option.id
        if cid is not None:
            self._commands.put_nowait(f"/join {cid}")
        self.chat_input.focus()

    def action_switch(self, step: int) -> None:
        ids = list(self.channels)
        if not ids:
            return
        at = ids.index(self.current) if self.current in ids else 0
        self._commands.put_nowait(f"/join {ids[(at + step) % len(ids)]}")

    def action_page(self, step: int) -> None:
        pane = self.pane
        if step < 0 and pane.at_top():
            self.scroll_back()
        elif step > 0 and pane.at_end():
            self._follow_again()
        pane.scroll_to(y=pane.scroll_offset.y + step * max(1, pane.size.height - 2),
                       animate=False)

    def action_modlog(self) -> None:
        if isinstance(self.screen, ModlogScreen):
            self.screen.dismiss(None)
            return
        self._commands.put_nowait("/modlog")

    def on_message_pane_reached_top(self, message: MessagePane.ReachedTop) -> None:
        self.scroll_back()

    async def _command_loop(self) -> None:
        while True:
            line = await self._commands.get()
            try:
                await self.run_line(line)
            except (LocalError, ValueError) as exc:
                self.notice(str(exc), error=True)
            except Exception as exc:  # a bug: say so inline, keep the app running
                log.exception("command failed: %s", line)
                self.notice(f"{line.split()[0]} failed: {type(exc).__name__}: {exc}",
                            error=True)
            finally:
                self.lines_done += 1


async def run_chat_async(home: NodeHome | Path | str, channel: str | None = None) -> None:
    """Run the chat UI on the running event loop (e.g. next to an in-process node)."""
    await ChatApp(home, channel).run_async()


def run_chat(home: NodeHome | Path | str, channel: str | None = None) -> None:
    """Run the chat UI attached to the node of ``home``; returns when it quits."""
    ChatApp(home, channel).run()
