"""``ChatApp``: a Textual chat client attached to a running node's control socket.

Two connections to the socket: one for requests (pipelined, see
:mod:`p2pchat.tui.client`) and one subscribed with ``watch``, whose events mark
parts of the UI dirty. One refresh task fetches what is dirty, at most one
batch at a time, so a burst of events costs one ``channel.list`` and one
history tail, not one per event. Commands typed in the input run one after the
other on their own task, so messages are sent in the order they were typed.

Every failure of a request is shown in the message pane as a notice; nothing
the node or a peer does can raise out of the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from p2pchat.control.protocol import ControlError
from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.tui.client import AsyncControl, WatchStream, socket_path_of
from p2pchat.tui.format import (
    ACTION_PREFIX,
    BOOTSTRAP_PATH,
    COMMANDS,
    MOD_WITH_REASON,
    Completer,
    MessageRef,
    Substitution,
    Sync,
    bootstrap_text,
    clean,
    gutter,
    help_lines,
    message_text,
    modlog_line,
    notice_text,
    parse_input,
    parse_substitution,
    parse_sync,
    peer_via,
    peers_text,
    reaction_of,
    resolve_handle,
    resolve_member,
    short,
    split_handle,
)
from p2pchat.tui.modlog import ModlogScreen
from p2pchat.tui.pane import MessagePane

log = logging.getLogger("p2pchat.tui")

#: Messages fetched when a channel is opened; older ones come a page at a time when
#: the user scrolls above the oldest one loaded.
HISTORY_WINDOW = 500
#: Messages fetched per step of scrolling back (``history`` with ``before``).
SCROLLBACK_PAGE = 200
#: Messages fetched after a ``channel`` event: new ones are added by id.
TAIL = 100
#: Seconds between refreshes when the node has no ``watch`` method.
POLL_INTERVAL = 2.0
#: Reconnect back-off when the node is not reachable.
RECONNECT_MIN, RECONNECT_MAX = 0.5, 5.0
#: Ranks that see placeholders for messages hidden by moderation.
MODERATOR_RANKS = ("owner", "moderator")
RANK_ORDER = {"owner": 0, "moderator": 1, "member": 2, "muted": 3, "banned": 4}
INPUT_HISTORY = 500
#: Seconds between two refreshes of an open moderation log view (events coming
#: faster are folded into one refresh at the end of the interval).
MODLOG_VIEW_INTERVAL = 0.5


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


class ChatApp(App[None]):
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

    # --- layout ----------------------------------------------------------------------

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

    @property
    def pane(self) -> MessagePane:
        return self.query_one("#pane", MessagePane)

    @property
    def chat_input(self) -> ChatInput:
        return self.query_one("#input", ChatInput)

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

    # --- notices ---------------------------------------------------------------------

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

    # --- connection ------------------------------------------------------------------

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

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        if self.ctl is None:
            raise ControlError("not connected to the node")
        return await self.ctl.call(method, params)

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

    def _mark(self, channel: str | None = None, peers: bool = False, all_: bool = False) -> None:
        if channel is not None:
            self._dirty_channels.add(channel)
        self._dirty_peers |= peers
        self._dirty_all |= all_
        self._wake.set()

    # --- refreshing ------------------------------------------------------------------

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

    async def _load_all(self, first: bool) -> None:
        status = await self.call("status")
        self.me = str(status.get("did", ""))
        self.my_name = str(status.get("name") or "")
        servers = status.get("bootstrap_servers", 0)
        self.servers_configured = servers if type(servers) is int and servers >= 0 else 0
        if self.me and self.my_name:
            self.names[self.me] = self.my_name
        await self._load_peers()
        await self._load_channels()
        target = self.current
        if first and self.initial_channel:
            target = self._find_channel(self.initial_channel)
            if target is None:
                self.notice(f"no channel {self.initial_channel!r}; /join an invite first",
                            error=True)
        if target is None or target not in self.channels:
            target = next(iter(self.channels), None)
        if target is not None:
            await self.open_channel(target, keep_notices=not first)
        elif first:
            self.notice("no channels yet: /create NAME, or /join INVITE")
            self._update_status()

    async def _load_peers(self) -> None:
        peers = await self.call("peers")
        self.paths = {}
        for p in peers:
            via = peer_via(p)
            self.paths[via] = self.paths.get(via, 0) + 1
        self.peer_count = len(peers) - self.paths.get(BOOTSTRAP_PATH, 0)
        self.peer_dids = [str(p.get("did")) for p in peers if peer_via(p) != BOOTSTRAP_PATH]
        for p in peers:
            if p.get("name"):
                self.names[str(p["did"])] = str(p["name"])
        self._update_status()

    async def _load_channels(self) -> None:
        asked = self._sync_seq
        listed = await self.call("channel.list")
        channels = {str(c["channel"]): c for c in listed}
        # the listing's sync figures, unless a sync event came after it was asked for
        # (events and answers travel on two connections: the newer one wins)
        for cid in set(self.sync) | set(channels):
            if self._sync_at.get(cid, 0) > asked:
                continue
            try:
                sync = parse_sync(channels.get(cid, {}).get("sync"))
            except ValueError:
                sync = None  # malformed: shown as not syncing (an older node has none)
            if sync is None:
                self.sync.pop(cid, None)
            else:
                self.sync[cid] = sync
        for cid, info in channels.items():
            if cid not in self.seen:
                # at start nothing is news; a channel that shows up later (joined, or a
                # direct message from a peer) is unread in full
                self.seen[cid] = int(info.get("messages", 0)) if not self._listed else 0
        self._listed = True
        self.channels = channels
        if self.current in channels:
            self.seen[self.current] = int(channels[self.current].get("messages", 0))
        self._render_channel_list()
        self._update_status()

    def _find_channel(self, text: str) -> str | None:
        if text in self.channels:
            return text
        if text.startswith("did:"):
            return next((c for c, i in self.channels.items() if i.get("dm") == text), None)
        name = text.removeprefix("#")
        matches = [c for c, i in self.channels.items() if i.get("name") == name]
        return matches[0] if len(matches) == 1 else None

    def _label(self, cid: str) -> str:
        info = self.channels.get(cid, {})
        if info.get("dm"):
            return f"dm with {short(str(info['dm']))}"
        return "#" + clean(str(info.get("name") or cid[:8]))

    def unread(self, cid: str) -> int:
        if cid == self.current:
            return 0
        info = self.channels.get(cid, {})
        return max(0, int(info.get("messages", 0)) - self.seen.get(cid, 0))

    def _render_channel_list(self) -> None:
        try:
            widget = self.query_one("#channels", OptionList)
        except Exception:
            return
        options = []
        for cid in self.channels:
            label = Text(self._label(cid))
            count = self.unread(cid)
            if count:
                label.append(f" ({count})", style="bold")
                label.stylize("bold")
            sync = self.sync.get(cid)
            if sync is not None:
                label.append(f" sync {sync.percent}%", style="italic cyan")
            if cid == self.current:
                label.stylize("reverse")
            options.append(Option(label, id=cid))
        highlighted = widget.highlighted
        widget.set_options(options)
        if highlighted is not None and highlighted < len(options):
            widget.highlighted = highlighted  # keep the cursor of someone browsing the list

    async def open_channel(self, cid: str, keep_notices: bool = False) -> None:
        """Show ``cid``: the last :data:`HISTORY_WINDOW` messages, its members."""
        self._open_seq += 1
        seq = self._open_seq
        members = await self.call("members", {"channel": cid})
        self.moderating = any(m.get("did") == self.me and m.get("rank") in MODERATOR_RANKS
                              for m in members)
        window = await self.call("history", {"channel": cid, "limit": HISTORY_WINDOW,
                                              "hidden": True})
        history = self._shown(window)
        if seq != self._open_seq:
            return  # another channel was opened meanwhile
        if len(window) < HISTORY_WINDOW:
            self._history_start.add(cid)
        else:
            self._history_start.discard(cid)
        self.detached = False
        notices = []
        if keep_notices and cid == self.current:
            notices = [e for e in self.pane.entries() if e[0].startswith("notice:")]
        self.current = cid
        self.messages = {str(m["id"]): m for m in history}
        entries = [(mid, self._message_text(m)) for mid, m in self.messages.items()]
        self.pane.set_entries(entries + notices)
        info = self.channels.get(cid, {})
        self.seen[cid] = int(info.get("messages", 0))
        self._render_channel_list()
        self._update_status()
        try:
            self.modlog_len[cid] = len(await self.call("modlog", {"channel": cid}))
        except LocalError:
            self.modlog_len[cid] = 0
        await self._load_members()
        topic = clean(str(info.get("topic") or ""))
        if topic and not keep_notices:
            self.notice(f"topic: {topic}")

    def scroll_back(self) -> None:
        """Load the page before the oldest message in the pane (once at a time)."""
        if self._older is None or self._older.done():
            self._older = asyncio.get_running_loop().create_task(self._load_older())

    async def _load_older(self) -> None:
        cid = self.current
        if cid is None or cid in self._history_start:
            return
        oldest = next((k for k in self.pane.keys() if k in self.messages), None)  # noqa: SIM118
        if oldest is None:
            return
        seq = self._open_seq
        page: list[dict[str, Any]] = []
        cursor = oldest
        while not self._shown(page):  # a page of posts hidden from us shows nothing: on
            try:
                page = await self.call("history", {"channel": cid, "limit": SCROLLBACK_PAGE,
                                                   "before": cursor, "hidden": True})
            except LocalError as exc:
                self.notice(f"could not load older messages: {exc}", error=True)
                return
            if seq != self._open_seq or cid != self.current:
                return
            if len(page) < SCROLLBACK_PAGE:
                self._history_start.add(cid)
                break
            cursor = str(page[0]["id"])
        older = [m for m in self._shown(page) if str(m["id"]) not in self.messages]
        for m in older:
            self.messages[str(m["id"])] = m
        dropped = self.pane.prepend([(str(m["id"]), self._message_text(m)) for m in older])
        for key in dropped:
            if self.messages.pop(key, None) is not None:
                self.detached = True
        self.scrollback_loads += 1

    def _follow_again(self) -> None:
        """Scrolled down to the end after the newest messages were dropped: show the
        newest window again, live."""
        if self.detached and self.current is not None:
            self.detached = False
            cid = self.current

            async def reopen() -> None:
                await self.open_channel(cid, keep_notices=True)

            asyncio.get_running_loop().create_task(self._guard(reopen))

    def on_message_pane_reached_top(self, message: MessagePane.ReachedTop) -> None:
        self.scroll_back()

    def _shown(self, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Messages hidden by moderation stay as placeholders for moderators only."""
        return history if self.moderating else [m for m in history if not m.get("hidden")]

    def _handle(self, mid: str, cid: str | None = None) -> int:
        """The handle of message ``mid`` of ``cid`` (the open channel by default): the next
        number the first time it is shown, the same one afterwards."""
        handles = self.handles.setdefault(cid or self.current or "", {})
        handle = handles.get(mid)
        if handle is None:
            handle = handles[mid] = len(handles) + 1
        return handle

    def _message_text(self, m: dict[str, Any]) -> Text:
        reply = str(m.get("reply_to") or "")
        replied = self.messages.get(reply) if reply else None
        return message_text(m, self.names, self.me, replied, handle=self._handle(str(m["id"])),
                            replied_handle=self._handle(reply) if replied is not None else None)

    def message_refs(self) -> list[MessageRef]:
        """The open channel's messages in the pane, oldest first, as commands refer to them."""
        refs = []
        for mid in self.pane.keys():  # noqa: SIM118 (a pane is not iterable)
            m = self.messages.get(mid)
            if m is None:
                continue
            reactions = m.get("reactions")
            refs.append(MessageRef(
                handle=self._handle(mid), id=mid, author=str(m.get("author", "")),
                text=str(m.get("text", "")), deleted=bool(m.get("deleted")),
                hidden=bool(m.get("hidden")), mine=m.get("author") == self.me,
                reactions=tuple(str(e) for e in reactions) if isinstance(reactions, dict)
                else ()))
        return refs

    async def _load_current_tail(self) -> None:
        cid = self.current
        if cid is None:
            return
        seq = self._open_seq
        if self.detached:
            return  # scrolled back: the newest messages come when the user returns
        modlog = await self.call("modlog", {"channel": cid})
        moderated = len(modlog) != self.modlog_len.get(cid, 0)
        wide = cid in self._wide
        self._wide.discard(cid)
        limit = HISTORY_WINDOW if moderated or wide else TAIL
        tail = self._shown(await self.call("history", {"channel": cid, "limit": limit,
                                                       "hidden": True}))
        if limit < HISTORY_WINDOW and len(tail) == limit and self.messages \
                and not any(str(m["id"]) in self.messages for m in tail):
            # more new messages than the tail holds: the whole window, so the pane keeps
            # the messages before them (and their handles)
            limit = HISTORY_WINDOW
            tail = self._shown(await self.call("history", {"channel": cid, "limit": limit,
                                                           "hidden": True}))
        if seq != self._open_seq or cid != self.current:
            return
        if moderated:
            before = self.modlog_len.get(cid, 0)
            self.modlog_len[cid] = len(modlog)
            for entry in modlog[before:]:
                self.notice("moderation: " + modlog_line(entry))
        self._merge(tail, limit)
        await self._load_members()  # new authors, ranks, online state

    def _merge(self, tail: list[dict[str, Any]], limit: int) -> None:
        """Add new messages of ``tail`` by id, re-render changed ones, drop hidden ones."""
        ids = [str(m["id"]) for m in tail]
        present = set(ids)
        full = len(tail) == limit
        if full and self.messages and not any(i in self.messages for i in ids):
            # more new messages than the tail holds: start over with this window
            self.messages = {}
            self.pane.set_entries([k for k in self.pane.entries() if k[0].startswith("notice:")])
        # messages inside the span the tail covers that are not in it were hidden
        # (moderation); a tail that is not full is the whole history
        shown = [k for k in self.pane.keys() if k in self.messages]  # noqa: SIM118
        start = shown.index(ids[0]) if full and ids[0] in self.messages else 0 if not full \
            else len(shown)
        changed: set[str] = set()
        for mid in shown[start:]:
            if mid not in present:
                del self.messages[mid]
                self.pane.remove_entry(mid)
                changed.add(mid)
        for pos, m in enumerate(tail):
            mid = ids[pos]
            old = self.messages.get(mid)
            self.messages[mid] = m
            if old == m:
                continue
            changed.add(mid)
            text = self._message_text(m)
            if old is not None:
                self.pane.replace(mid, text)
                continue
            after = next((i for i in ids[pos + 1:] if i in self.pane), None)
            self.pane.insert_sorted(mid, text, after)
        if changed:  # replies quote what they answer: show its new text, or that it is gone
            for mid, m in self.messages.items():
                if mid not in changed and m.get("reply_to") in changed and mid in self.pane:
                    self.pane.replace(mid, self._message_text(m))

    async def _load_members(self) -> None:
        cid = self.current
        if cid is None:
            self.members = []
        else:
            members = await self.call("members", {"channel": cid})
            if cid != self.current:
                return
            self.moderating = any(m.get("did") == self.me
                                  and m.get("rank") in MODERATOR_RANKS for m in members)
            self.members = sorted(members, key=lambda m: (
                RANK_ORDER.get(str(m.get("rank")), 9), m.get("did") != self.me, str(m.get("did"))))
        self._render_members()

    def _render_members(self) -> None:
        text = Text()
        for m in self.members:
            did = str(m.get("did", ""))
            online = bool(m.get("online"))
            text.append("\u25cf " if online else "\u25cb ", style="green" if online else "dim")
            text.append(self.names.get(did, "") and clean(self.names[did])[:10] + " ")
            text.append(short(did), style="bold" if did == self.me else "")
            rank = str(m.get("rank", ""))
            if rank != "member":
                style = {"owner": "bold magenta", "moderator": "magenta",
                         "banned": "bold red", "muted": "red"}.get(rank, "")
                text.append(f" {rank}", style=style)
            text.append("\n")
        with contextlib.suppress(Exception):
            self.query_one("#members", Static).update(text)

    def sync_text(self) -> str:
        """``syncing #general 3,200/10,000``: the open channel's sync, or else the first
        syncing one's (``+N more`` when several are); empty when none is."""
        if not self.sync:
            return ""
        order = {cid: i for i, cid in enumerate(self.channels)}
        syncing = sorted(self.sync, key=lambda c: (c != self.current, order.get(c, len(order)), c))
        first = syncing[0]
        more = f" (+{len(syncing) - 1} more)" if len(syncing) > 1 else ""
        return f"syncing {self._label(first)} {self.sync[first].figure()}{more}"

    def status_text(self) -> str:
        parts = [f"{short(self.me) if self.me else 'not attached'}"
                 + (f" {clean(self.my_name)}" if self.my_name else ""),
                 peers_text(self.paths)]
        servers = bootstrap_text(self.paths.get(BOOTSTRAP_PATH, 0), self.servers_configured)
        if servers:
            parts.append(servers)
        info = self.channels.get(self.current or "", {})
        if self.current is not None:
            parts.append(self._label(self.current))
        syncing = self.sync_text()
        if syncing:
            parts.append(syncing)
        if self.current is not None:
            keys = info.get("keys")
            if keys == "waiting":
                parts.append("waiting for a member to admit this node")
            elif keys == "removed":
                parts.append("removed from this channel")
            sealed = int(info.get("sealed", 0) or 0)
            if sealed:
                parts.append(f"{sealed} envelope{'s' if sealed != 1 else ''} not readable here")
        if self.live == "offline":
            parts.append("node not reachable")
        elif self.live == "poll":
            parts.append("polling")
        elif self.live == "connecting":
            parts.append("connecting")
        return " \u2502 ".join(parts)

    def _update_status(self) -> None:
        with contextlib.suppress(Exception):
            status = self.query_one("#status", Static)
            text = self.status_text()
            status.update(text)
            info = self.channels.get(self.current or "", {})
            if self.current is not None:
                topic = clean(str(info.get("topic") or ""))
                self.pane.border_title = self._label(self.current) + (
                    f" \u2014 {topic}" if topic else "")
                sync = self.sync.get(self.current)
                self.pane.border_subtitle = f"syncing {sync.figure()}" if sync else ""
            status.set_class(self.live == "offline" or info.get("keys") in ("waiting", "removed")
                             or bool(info.get("sealed")), "warn")
            status.set_class(bool(self.sync), "busy")

    def _completion_dids(self) -> list[str]:
        dids = [str(m.get("did")) for m in self.members if m.get("did") != self.me]
        return list(dict.fromkeys(dids + [d for d in self.peer_dids if d != self.me]))

    # --- input -----------------------------------------------------------------------

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

    async def run_line(self, line: str) -> None:
        """One line of input: a /command, ``s/old/new/``, or text for the current channel."""
        substitution = parse_substitution(line)
        if substitution is not None:
            await self._substitute(substitution)
            return
        command = parse_input(line)
        if command is None:
            text = line[1:] if line.startswith("//") else line
            await self._send(text)
            return
        handler = getattr(self, f"_cmd_{command.name}", None)
        if command.name not in COMMANDS or handler is None:
            self.notice(f"unknown command /{command.name} (try /help)", error=True)
            return
        await handler(command.args)

    def _need_channel(self) -> str:
        if self.current is None:
            raise LocalError("no channel open: /create NAME or /join INVITE first")
        return self.current

    async def _send(self, text: str, reply_to: str = "") -> None:
        cid = self._need_channel()
        params = {"channel": cid, "text": text}
        if reply_to:
            params["reply_to"] = reply_to
        await self.call("send", params)
        self._mark(channel=cid)  # the watch event will follow; do not wait for it

    # --- messages by handle: reply, edit, delete, react --------------------------------

    def _message(self, word: str) -> MessageRef:
        """The message a handle typed in a command refers to (ValueError: inline error)."""
        self._need_channel()
        return resolve_handle(word, self.message_refs())

    def _my_message(self, word: str | None, usage: str) -> MessageRef:
        """``word``'s message, which must be this node's and still there; without a word,
        this node's newest such message."""
        if word is None:
            self._need_channel()
            mine = [r for r in self.message_refs() if r.editable]
            if not mine:
                raise LocalError(f"you have no message here to change ({usage})")
            return mine[-1]
        ref = self._message(word)
        if not ref.mine:
            raise LocalError(f"message {ref.handle} is not yours (by {short(ref.author)}); "
                             "only your own messages can be changed")
        if ref.deleted or ref.hidden:
            raise LocalError(f"message {ref.handle} is "
                             f"{'deleted' if ref.deleted else 'hidden by moderation'}")
        return ref

    async def _message_op(self, method: str, ref: MessageRef, **params: Any) -> None:
        cid = self._need_channel()
        if method == "edit" and params.get("text") == ref.text:
            raise LocalError(f"nothing to change: message {ref.handle} already says that")
        await self.call(method, {"channel": cid, "id": ref.id, **params})
        refs = [r.id for r in self.message_refs()]
        if ref.id not in refs[-TAIL:]:
            self._wide.add(cid)  # older than the tail a refresh fetches
        self._mark(channel=cid)

    async def _cmd_reply(self, args: str) -> None:
        word, _, text = args.partition(" ")
        if not word or not text.strip():
            raise LocalError("usage: /reply N TEXT (N: the dim number before a message)")
        ref = self._message(word)
        await self._send(text.strip(), reply_to=ref.id)

    async def _cmd_edit(self, args: str) -> None:
        usage = "usage: /edit [N] TEXT, or s/old/new/"
        word, text = split_handle(args)
        if not text:
            raise LocalError(usage)
        ref = self._my_message(word, usage)
        await self._message_op("edit", ref, text=text)

    async def _substitute(self, sub: Substitution) -> None:
        ref = self._my_message(None, "s/old/new/ changes your last message")
        await self._message_op("edit", ref, text=sub.apply(ref.text))

    async def _cmd_delete(self, args: str) -> None:
        word = args.strip() or None
        if word is not None and " " in word:
            raise LocalError("usage: /delete [N]")
        await self._message_op("delete", self._my_message(word, "usage: /delete [N]"))

    async def _cmd_react(self, args: str) -> None:
        word, _, emoji = args.partition(" ")
        if not word or not emoji.strip():
            raise LocalError("usage: /react N EMOJI (again to take it back)")
        ref = self._message(word)
        reaction = reaction_of(emoji)
        message = self.messages.get(ref.id, {})
        who = (message.get("reactions") or {}).get(reaction, [])
        on = not (isinstance(who, list) and self.me in who)
        await self._message_op("react", ref, emoji=reaction, on=on)

    def _member(self, arg: str) -> str:
        return resolve_member(arg, self._completion_dids())

    async def _cmd_help(self, args: str) -> None:
        for line in help_lines():
            self.notice(line)
        self.notice("s/old/new/ edits your last message; N is the dim number before a "
                    "message, ^ the newest, ^2 the one before")
        self.notice("keys: tab completes, up/down recall lines, ctrl+n/ctrl+p switch channel, "
                    "pageup/pagedown scroll, ctrl+q quits")

    async def _cmd_quit(self, args: str) -> None:
        self.exit()

    async def _cmd_me(self, args: str) -> None:
        if not args:
            raise LocalError("usage: /me TEXT")
        await self._send(ACTION_PREFIX + args)

    async def _cmd_join(self, args: str) -> None:
        if not args:
            raise LocalError("usage: /join INVITE (or /join #name to switch)")
        found = self._find_channel(args)
        if found is not None:
            if found != self.current:
                await self.open_channel(found)
            return
        if args.startswith("#"):
            raise LocalError(f"no channel {args}; /join needs an invite to join a new one")
        result = await self.call("join", {"invite": args})
        cid = str(result["channel"])
        await self._load_channels()
        await self.open_channel(cid)
        again = " again" if result.get("rejoined") else ""
        self.notice(f"already a member of {self._label(cid)}" if result.get("new") is False
                    and not again else f"joined {self._label(cid)}{again}")
        if self.channels.get(cid, {}).get("keys") == "waiting":
            self.notice("waiting for a member to admit this node")

    async def _cmd_create(self, args: str) -> None:
        if not args:
            raise LocalError("usage: /create NAME")
        result = await self.call("channel.create", {"name": args.removeprefix("#")})
        cid = str(result["channel"])
        self.last_invite = str(result.get("invite", ""))
        await self._load_channels()
        await self.open_channel(cid)
        self.notice(f"created {self._label(cid)}; invite: {self.last_invite}")

    async def _cmd_invite(self, args: str) -> None:
        result = await self.call("invite", {"channel": self._need_channel()})
        self.last_invite = str(result["invite"])
        self.notice(f"invite for {self._label(self._need_channel())}: {self.last_invite}")

    async def _cmd_msg(self, args: str) -> None:
        target, _, text = args.partition(" ")
        if not target or not text.strip():
            raise LocalError("usage: /msg DID TEXT")
        did = self._member(target)
        result = await self.call("dm", {"did": did, "text": text.strip()})
        cid = str(result["channel"])
        self.seen.setdefault(cid, 1)  # our own message is not unread
        await self._load_channels()
        self.notice(f"direct message to {short(did)} sent"
                    + (" (new conversation)" if result.get("new") else "")
                    + (f"; ctrl+n or /join {cid} to open it" if cid != self.current else ""))

    async def _cmd_topic(self, args: str) -> None:
        cid = self._need_channel()
        await self.call("mod", {"channel": cid, "action": "topic", "value": args})
        self.notice(f"topic set: {args}" if args else "topic cleared")

    async def _moderate(self, action: str, args: str) -> None:
        cid = self._need_channel()
        target, _, reason = args.partition(" ")
        if not target:
            raise LocalError(f"usage: /{action} DID" + (" [REASON]"
                                                         if action in MOD_WITH_REASON else ""))
        did = self._member(target)
        params: dict[str, Any] = {"channel": cid, "action": action, "target": did}
        if reason.strip() and action in MOD_WITH_REASON:
            params["reason"] = reason.strip()
        await self.call("mod", params)
        self._mark(channel=cid)

    async def _cmd_ban(self, args: str) -> None:
        await self._moderate("ban", args)

    async def _cmd_unban(self, args: str) -> None:
        await self._moderate("unban", args)

    async def _cmd_kick(self, args: str) -> None:
        await self._moderate("kick", args)

    async def _cmd_mute(self, args: str) -> None:
        await self._moderate("mute", args)

    async def _cmd_unmute(self, args: str) -> None:
        await self._moderate("unmute", args)

    async def _cmd_op(self, args: str) -> None:
        await self._moderate("op", args)

    async def _cmd_deop(self, args: str) -> None:
        await self._moderate("deop", args)

    async def _cmd_modlog(self, args: str) -> None:
        """The moderation log view (:class:`ModlogScreen`); escape closes it."""
        cid = self._need_channel()
        entries = await self.call("modlog", {"channel": cid})
        if isinstance(self.screen, ModlogScreen):
            self.screen.dismiss(None)
        invalid = sum(1 for e in entries if not e.get("applied", True))
        self.notice(f"moderation log of {self._label(cid)}: {len(entries)} "
                    f"entr{'y' if len(entries) == 1 else 'ies'}"
                    + (f", {invalid} invalid" if invalid else "") + " (escape closes it)")
        self.modlog_screen = ModlogScreen(self._label(cid), entries, dict(self.names), channel=cid)
        self._modlog_at = time.monotonic()
        await self.push_screen(self.modlog_screen)

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

    def action_modlog(self) -> None:
        if isinstance(self.screen, ModlogScreen):
            self.screen.dismiss(None)
            return
        self._commands.put_nowait("/modlog")

    async def _cmd_search(self, args: str) -> None:
        cid = self._need_channel()
        if not args:
            raise LocalError("usage: /search WORDS")
        found = await self.call("search", {"channel": cid, "query": args})
        self.notice(f"search {args!r}: {len(found)} message{'s' if len(found) != 1 else ''}")
        handles = self.handles.get(cid, {})
        for m in found:
            line = message_text({**m, "reply_to": None}, self.names, self.me).plain.lstrip()
            # the handle of a message shown in the pane, to /reply or /react to it
            self.notice(f"  {gutter(handles.get(str(m.get('id'))))}{line}")

    async def _cmd_members(self, args: str) -> None:
        cid = self._need_channel()
        await self._load_members()
        self.notice(f"members of {self._label(cid)} ({len(self.members)}):")
        for m in self.members:
            did = str(m.get("did"))
            self.notice(f"  {did} {m.get('rank')}" + (" online" if m.get("online") else ""))

    async def _cmd_peers(self, args: str) -> None:
        peers = await self.call("peers")
        if not peers:
            self.notice("no peers connected")
            return
        self.notice(f"{len(peers)} peer{'s' if len(peers) != 1 else ''}:")
        for p in peers:
            name = clean(str(p.get("name") or ""))
            rtt = p.get("rtt_ms")
            self.notice(f"  {p.get('did')} {name} {p.get('address')} {p.get('direction', '')}"
                        f" {peer_via(p)}"
                        + (f" {rtt:.1f} ms" if isinstance(rtt, int | float) else ""))


async def run_chat_async(home: NodeHome | Path | str, channel: str | None = None) -> None:
    """Run the chat UI on the running event loop (e.g. next to an in-process node)."""
    await ChatApp(home, channel).run_async()


def run_chat(home: NodeHome | Path | str, channel: str | None = None) -> None:
    """Run the chat UI attached to the node of ``home``; returns when it quits."""
    ChatApp(home, channel).run()
