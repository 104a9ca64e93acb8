"""``ChatView``: what the chat shows, loaded from the node and rendered into the widgets.

Loading: ``status``, ``peers`` and ``channel.list`` (with the channels' sync
figures and unread counts), opening a channel (the last :data:`HISTORY_WINDOW`
messages and its members), scrolling back a page of :data:`SCROLLBACK_PAGE` at a
time, and the open channel's tail after an event (:data:`TAIL` messages, merged
into the pane by id). Rendering: the channel list, the members box, the status
line and the pane's titles. Messages get a handle, the dim number shown before
each, kept for the session so a number always means the same message.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rich.text import Text
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from p2pchat.errors import LocalError
from p2pchat.tui.format import (
    BOOTSTRAP_PATH,
    MessageRef,
    bootstrap_text,
    clean,
    message_text,
    modlog_line,
    parse_sync,
    peer_via,
    peers_text,
    short,
)
from p2pchat.tui.state import ChatState

#: Messages fetched when a channel is opened; older ones come a page at a time when
#: the user scrolls above the oldest one loaded.
HISTORY_WINDOW = 500
#: Messages fetched per step of scrolling back (``history`` with ``before``).
SCROLLBACK_PAGE = 200
#: Messages fetched after a ``channel`` event: new ones are added by id.
TAIL = 100
#: Ranks that see placeholders for messages hidden by moderation.
MODERATOR_RANKS = ("owner", "moderator")
RANK_ORDER = {"owner": 0, "moderator": 1, "member": 2, "muted": 3, "banned": 4}


class ChatView(ChatState):
    """Loading from the node and rendering (see the module docstring)."""

    # --- the node's state: status, peers, channels ------------------------------------

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

    # --- the open channel: window, scrollback, handles --------------------------------

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

    # --- new messages: the tail, merged by id -----------------------------------------

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

    # --- members and the status line --------------------------------------------------

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
