"""``ChatCommands``: a line of input run against the node.

:meth:`ChatCommands.run_line` takes one line as typed: ``s/old/new/`` edits this
node's last message, a ``/command`` runs the ``_cmd_NAME`` method of a command
listed in :data:`~p2pchat.tui.format.COMMANDS`, and anything else (``//`` escapes
a leading slash) is sent to the open channel. Commands that name a message take
its handle (the dim number before it, ``^`` the newest); commands that name a
member take a DID or a part of one that only it has. Errors are raised as
:class:`~p2pchat.errors.LocalError` or ``ValueError``; the app's command loop
shows them inline.
"""

from __future__ import annotations

import time
from typing import Any

from p2pchat.errors import LocalError
from p2pchat.tui.format import (
    ACTION_PREFIX,
    COMMANDS,
    MOD_WITH_REASON,
    MessageRef,
    Substitution,
    clean,
    gutter,
    help_lines,
    message_text,
    parse_input,
    parse_substitution,
    peer_via,
    reaction_of,
    resolve_handle,
    resolve_member,
    short,
    split_handle,
)
from p2pchat.tui.modlog import ModlogScreen
from p2pchat.tui.view import TAIL, ChatView


class ChatCommands(ChatView):
    """The commands typed in the input (see the module docstring)."""

    # --- a line of input --------------------------------------------------------------

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

    # --- messages by handle: reply, edit, delete, react -------------------------------

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

    # --- channels, direct messages, moderation ----------------------------------------

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

    # --- looking things up: moderation log, search, members, peers --------------------

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
