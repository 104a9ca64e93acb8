"""Pure pieces of the terminal UI: labels, message lines, commands, completion.

Nothing here touches Textual or the node, so it is cheap to test.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

#: A message whose text starts with this is an action (``/me``), shown as
#: ``* author rest``. Other clients show the text as it is, which still reads well.
ACTION_PREFIX = "/me "

#: Slash commands: name -> (arguments, one-line help). Order is the order of ``/help``.
COMMANDS: dict[str, tuple[str, str]] = {
    "join": ("INVITE|#NAME", "join a channel with an invite, or switch to a channel"),
    "create": ("NAME", "create a channel and show its invite"),
    "invite": ("", "show the invite of the current channel"),
    "me": ("TEXT", "send an action: * you TEXT"),
    "msg": ("DID TEXT", "send a direct message"),
    "reply": ("N TEXT", "reply to message N (the dim number before it; ^ is the newest)"),
    "edit": ("[N] TEXT", "edit your message N, or your last one (also: s/old/new/)"),
    "delete": ("[N]", "delete your message N, or your last one"),
    "react": ("N EMOJI", "add or take back a reaction (:+1: :heart: ... or any emoji)"),
    "topic": ("TEXT", "set the channel topic (moderators)"),
    "ban": ("DID [REASON]", "ban a member (moderators)"),
    "unban": ("DID", "lift a ban (moderators)"),
    "kick": ("DID [REASON]", "remove a member, who may rejoin (moderators)"),
    "mute": ("DID [REASON]", "mute a member (moderators)"),
    "unmute": ("DID", "lift a mute (moderators)"),
    "op": ("DID", "make a member a moderator (owner)"),
    "deop": ("DID", "make a moderator a member again (owner)"),
    "modlog": ("", "show the moderation log of the channel"),
    "search": ("WORDS", "search the channel (words match as prefixes)"),
    "members": ("", "list the members of the channel with their ranks"),
    "peers": ("", "list the connected peers"),
    "help": ("", "list the commands"),
    "quit": ("", "leave the chat (the node keeps running)"),
}
#: Commands whose first argument is a member's DID (tab completes DIDs there).
DID_COMMANDS = frozenset({"msg", "ban", "unban", "kick", "mute", "unmute", "op", "deop"})
MOD_WITH_REASON = frozenset({"ban", "kick", "mute"})
#: Commands whose first argument is a message handle (tab completes handles there).
HANDLE_COMMANDS = frozenset({"reply", "edit", "delete", "react"})
#: Of those, the ones that only apply to this node's own messages.
OWN_HANDLE_COMMANDS = frozenset({"edit", "delete"})
#: Width of the handle column before each message (wider handles push the line).
HANDLE_WIDTH = 3
#: ``/react N :name:`` (or ``name``) for a few common emoji; tab cycles them in this order.
REACTIONS: dict[str, str] = {
    "+1": "\U0001f44d", "heart": "\u2764\ufe0f", "joy": "\U0001f602", "tada": "\U0001f389",
    "eyes": "\U0001f440", "check": "\u2705", "-1": "\U0001f44e", "fire": "\U0001f525",
    "thinking": "\U0001f914", "pray": "\U0001f64f", "wave": "\U0001f44b", "rocket": "\U0001f680",
}
REACTION_ALIASES: dict[str, str] = {**REACTIONS, "thumbsup": "\U0001f44d",
                                    "thumbsdown": "\U0001f44e", "laugh": "\U0001f602",
                                    "love": "\u2764\ufe0f"}


def clean(text: str) -> str:
    """Peer text with every Unicode category C character shown as U+FFFD
    (newline and tab kept), so it cannot carry terminal escape sequences."""
    return "".join(c if c in "\n\t" or unicodedata.category(c)[0] != "C" else "\ufffd"
                   for c in text)


def short(did: str) -> str:
    """``…`` and the last 8 characters of a DID."""
    return "\u2026" + did[-8:] if len(did) > 8 else did


def clock(ts_ms: int, now: float | None = None) -> str:
    """``HH:MM`` for today (local time), ``MM-DD HH:MM`` otherwise."""
    when = time.localtime(ts_ms / 1000)
    today = time.localtime(time.time() if now is None else now)
    if when[:3] == today[:3]:
        return time.strftime("%H:%M", when)
    return time.strftime("%m-%d %H:%M", when)


def author_label(did: str, names: dict[str, str]) -> str:
    name = names.get(did, "")
    return f"{clean(name)} {short(did)}" if name else short(did)


def excerpt(msg: dict[str, Any] | None, width: int = 50) -> str:
    """A short one-line form of a message's text (for reply quotes and errors)."""
    if msg is None:
        return ""
    if msg.get("deleted"):
        return "(deleted)"
    if msg.get("hidden"):
        return "(hidden by moderation)"
    body = " ".join(clean(str(msg.get("text", ""))).split())
    if body.startswith(ACTION_PREFIX):
        body = "* " + body[len(ACTION_PREFIX):]
    return body if len(body) <= width else body[:width - 1] + "\u2026"


def gutter(handle: int | None) -> str:
    """The handle column: the message's handle right-aligned, or blanks."""
    return f"{handle if handle is not None else '':>{HANDLE_WIDTH}} "


def message_text(msg: dict[str, Any], names: dict[str, str], me: str,
                 replied: dict[str, Any] | None = None, handle: int | None = None,
                 replied_handle: int | None = None) -> Text:
    """One message of ``history`` as a line (wrapped by the pane).

    ``handle`` is the short number typed to refer to it (``/reply 12 …``), shown
    dimly before the time. A reply starts with a line quoting what it answers:
    ``╭─ 7 …author: excerpt`` (``replied``, with its handle), or ``╭─ an earlier
    message`` when that one is not loaded."""
    author = str(msg.get("author", ""))
    body = str(msg.get("text", ""))
    ts = msg.get("ts")
    line = Text(no_wrap=False)
    if msg.get("reply_to"):
        line.append(" " * (HANDLE_WIDTH + 1 + 6))
        line.append("\u256d\u2500 ", style="dim")
        if replied is not None:
            if replied_handle is not None:
                line.append(f"{replied_handle} ", style="dim")
            line.append(author_label(str(replied.get("author", "")), names) + ": ",
                        style="italic dim")
            line.append(excerpt(replied), style="italic dim")
        else:
            line.append("an earlier message", style="italic dim")
        line.append("\n")
    line.append(gutter(handle), style="dim")
    line.append(clock(ts) if isinstance(ts, int) else "--:--", style="dim")
    line.append(" ")
    author_style = "bold green" if author == me else "bold cyan"
    if msg.get("deleted"):
        line.append(author_label(author, names), style=author_style)
        line.append(" (deleted)", style="dim italic")
        return line
    if msg.get("hidden"):  # a placeholder, shown to moderators only
        line.append(author_label(author, names), style=author_style)
        line.append(f"  [hidden by moderation: {clean(str(msg['hidden']))}]",
                    style="dim italic")
        return line
    if body.startswith(ACTION_PREFIX):
        line.append("* ", style="magenta")
        line.append(author_label(author, names), style=author_style)
        line.append(" " + clean(body[len(ACTION_PREFIX):]), style="italic")
    else:
        line.append(author_label(author, names), style=author_style)
        line.append("  ")
        line.append(clean(body))
    if msg.get("edited"):
        line.append(" (edited)", style="dim")
    reactions = msg.get("reactions") or {}
    if isinstance(reactions, dict) and reactions:
        line.append("  ")
        for emoji, who in reactions.items():
            count = len(who) if isinstance(who, list) else 1
            mine = isinstance(who, list) and me in who
            line.append(f"[{clean(str(emoji))} {count}]", style="bold" if mine else "dim")
            line.append(" ")
        line.rstrip()
    return line


def notice_text(text: str, style: str = "yellow", ts: float | None = None) -> Text:
    """A notice line: ``-- text`` in the pane (errors in red)."""
    line = Text(no_wrap=False)
    stamp = time.strftime("%H:%M", time.localtime(time.time() if ts is None else ts))
    line.append(gutter(None) + stamp, style="dim")
    line.append(" -- ", style=style)
    line.append(text, style=style)
    return line


def modlog_line(entry: dict[str, Any]) -> str:
    """One ``modlog`` entry as a sentence."""
    action = str(entry.get("action", "?"))
    by = short(str(entry.get("by", "")))
    target = str(entry.get("target") or "")
    value = clean(str(entry.get("value") or ""))
    parts = [f"{by} {action}"]
    if not entry.get("on", True):
        parts[0] += " (off)"
    if target:
        parts.append(short(target))
    if value:
        parts.append(repr(value) if action == "topic" else value)
    reason = clean(str(entry.get("reason") or ""))
    if reason:
        parts.append(f"({reason})")
    if not entry.get("applied", True):
        parts.append(f"[ignored: {clean(str(entry.get('why') or 'does not count'))}]")
    return " ".join(parts)


#: How a peer is reached (``peers`` ``via``), in the order the status bar lists them;
#: ``bootstrap`` links are bootstrap servers, counted apart from chat peers.
PEER_PATHS = ("lan", "direct")
BOOTSTRAP_PATH = "bootstrap"


def peer_via(peer: dict[str, Any]) -> str:
    """``peers`` ``via`` of one entry; ``direct`` for a node without that field, or for
    a value this client does not know."""
    via = peer.get("via")
    return via if via in PEER_PATHS or via == BOOTSTRAP_PATH else "direct"


def peers_text(paths: dict[str, int]) -> str:
    """``2 peers (1 lan, 1 direct)`` from a count per ``via`` (bootstrap servers left
    out: :func:`bootstrap_text` shows them)."""
    count = sum(n for via, n in paths.items() if via != BOOTSTRAP_PATH)
    text = f"{count} peer{'s' if count != 1 else ''}"
    used = [f"{paths[via]} {via}" for via in PEER_PATHS if paths.get(via)]
    return text + (f" ({', '.join(used)})" if used else "")


def bootstrap_text(linked: int, configured: int) -> str:
    """``bootstrap 1/2``: servers linked of those configured; empty without any."""
    if not configured and not linked:
        return ""
    return f"bootstrap {linked}/{max(configured, linked)}"


@dataclass(frozen=True, slots=True)
class Sync:
    """A channel catching up: ``channel.list`` ``sync`` or a ``sync`` event."""

    received: int
    expected: int

    @property
    def percent(self) -> int:
        """Whole percent done, 99 at most while it lasts."""
        return min(99, self.received * 100 // self.expected) if self.expected else 0

    def figure(self) -> str:
        return f"{self.received:,}/{self.expected:,}"


def parse_sync(value: Any) -> Sync | None:
    """``{"received": n, "expected": m}`` (0 <= n <= m, m > 0) as :class:`Sync`, None for
    ``null`` (not syncing); ValueError for anything else."""
    if value is None:
        return None
    received = value.get("received") if isinstance(value, dict) else None
    expected = value.get("expected") if isinstance(value, dict) else None
    if type(received) is not int or type(expected) is not int \
            or not 0 <= received <= expected or expected == 0:
        raise ValueError(f"malformed sync progress: {str(value)[:80]}")
    return Sync(received, expected)


@dataclass(frozen=True)
class Command:
    name: str
    args: str


def parse_input(line: str) -> Command | None:
    """``/name args`` -> Command; plain text (and ``//text``, sent as ``/text``) -> None."""
    if not line.startswith("/") or line.startswith("//"):
        return None
    name, _, args = line[1:].partition(" ")
    return Command(name.lower(), args.strip())


def resolve_member(arg: str, dids: Iterable[str]) -> str:
    """A full DID as it is, or the unique DID among ``dids`` that ends with
    ``arg`` (``…`` optional) or starts with it. ValueError otherwise."""
    arg = arg.strip()
    if not arg:
        raise ValueError("missing DID")
    if arg.startswith("did:"):
        return arg
    tail = arg.lstrip("\u2026.")
    known = list(dict.fromkeys(dids))
    matches = [d for d in known if d.endswith(tail)] or [d for d in known if tail in d]
    if not matches:
        raise ValueError(f"no member matches {arg!r}")
    if len(matches) > 1:
        raise ValueError(f"{arg!r} matches {len(matches)} members; type more of the DID")
    return matches[0]


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message of the open channel as the input line refers to it: its handle
    (the dim number shown before it) and what commands and completion need."""

    handle: int
    id: str
    author: str
    text: str
    deleted: bool = False
    hidden: bool = False
    reactions: tuple[str, ...] = ()
    mine: bool = False

    @property
    def editable(self) -> bool:
        """This node's own message, still there: ``edit`` and ``delete`` apply."""
        return self.mine and not self.deleted and not self.hidden


_HANDLE = re.compile(r"\d{1,9}|\^\d{0,6}")


def is_handle(word: str) -> bool:
    """``12`` (a handle), ``^`` (the newest message) or ``^3`` (the third newest)."""
    return _HANDLE.fullmatch(word) is not None


def resolve_handle(word: str, refs: Sequence[MessageRef]) -> MessageRef:
    """The message ``word`` refers to among ``refs`` (oldest first). ValueError if none."""
    if not is_handle(word):
        raise ValueError(f"{word!r} is not a message number (the dim number before "
                         "each message; ^ is the newest)")
    if word.startswith("^"):
        back = int(word[1:] or 1)
        if back < 1 or back > len(refs):
            raise ValueError(f"there is no message {word} here")
        return refs[-back]
    handle = int(word)
    found = next((r for r in refs if r.handle == handle), None)
    if found is None:
        raise ValueError(f"no message {handle} in this channel (the numbers are the dim "
                         "ones before each message)")
    return found


def split_handle(args: str) -> tuple[str | None, str]:
    """``"12 rest"`` -> ``("12", "rest")``; ``"rest"`` -> ``(None, "rest")``: a first word
    that looks like a handle is one."""
    first, _, rest = args.strip().partition(" ")
    if is_handle(first):
        return first, rest.strip()
    return None, args.strip()


def reaction_of(word: str) -> str:
    """``:+1:``, ``+1`` or ``thumbsup`` -> 👍 (:data:`REACTION_ALIASES`); anything else as
    typed (an emoji, or any short text)."""
    name = word.strip()
    alias = REACTION_ALIASES.get(name.strip(":").lower()) if name else None
    if alias is not None and (name == name.strip(":") or (name.startswith(":")
                                                          and name.endswith(":"))):
        return alias
    return name


_SUBSTITUTION = re.compile(r"s/((?:\\.|[^\\/])+)/((?:\\.|[^\\/])*)/(g?)")


@dataclass(frozen=True, slots=True)
class Substitution:
    """``s/old/new/`` (``g`` after it: every occurrence): edit the last message."""

    old: str
    new: str
    every: bool = False

    def apply(self, text: str) -> str:
        """``text`` with ``old`` replaced; ValueError if ``old`` is not in it."""
        if self.old not in text:
            raise ValueError(f"{self.old!r} is not in your last message")
        return text.replace(self.old, self.new, -1 if self.every else 1)


def parse_substitution(line: str) -> Substitution | None:
    """``s/old/new/`` or ``s/old/new/g`` (a whole line; ``\\/`` is a slash inside old or
    new) as a :class:`Substitution`; None for any other line."""
    found = _SUBSTITUTION.fullmatch(line)
    if found is None:
        return None

    def unescape(part: str) -> str:
        return re.sub(r"\\(.)", r"\1", part)

    return Substitution(unescape(found.group(1)), unescape(found.group(2)),
                        found.group(3) == "g")


def _tail_match(did: str, tail: str) -> bool:
    """``tail`` is how the end of a DID is typed: a start of its short form, its last
    characters, or (4 characters or more) any part of it."""
    if not tail:
        return False
    return did[-8:].startswith(tail) or did.endswith(tail) or (len(tail) >= 4 and tail in did)


class Completer:
    """Tab completion of command names and member DIDs; repeated tabs cycle."""

    def __init__(self) -> None:
        self._matches: list[str] = []
        self._index = 0
        self._head = ""
        self._last = ""

    def reset(self) -> None:
        self._matches = []
        self._last = ""

    def complete(self, value: str, dids: Sequence[str],
                 messages: Sequence[MessageRef] = ()) -> str | None:
        """The new input value, or None when nothing matches. ``messages`` are the open
        channel's, oldest first (handles after ``/reply /edit /delete /react``)."""
        if self._matches and value == self._last:
            self._index = (self._index + 1) % len(self._matches)
            self._last = self._head + self._matches[self._index]
            return self._last
        head, sep, word = value.rpartition(" ")
        head = head + sep
        if not head and word.startswith("/") and not word.startswith("//"):
            matches = [f"/{name} " for name in COMMANDS if name.startswith(word[1:].lower())]
            if len(matches) == 1:  # one command: a further tab completes its argument
                self.reset()
                return matches[0]
        else:
            words = head[1:].split() if head.startswith("/") else []
            command = words[0].lower() if words else ""
            if command in HANDLE_COMMANDS:
                matches = self._message_matches(command, words[1:], word, messages)
                if len(matches) == 1:  # one handle: a further tab goes on to what follows
                    self.reset()
                    return head + matches[0]
            else:
                in_command = command in DID_COMMANDS
                tail = word.lstrip("\u2026")
                found = [d for d in dids if d.startswith(word) or _tail_match(d, tail)] \
                    if word else list(dids)
                matches = [f"{d} " if in_command else f"{short(d)} " for d in found]
        if not matches:
            self.reset()
            return None
        self._matches, self._index, self._head = matches, 0, head
        self._last = head + matches[0]
        return self._last

    @staticmethod
    def _message_matches(command: str, before: list[str], word: str,
                         messages: Sequence[MessageRef]) -> list[str]:
        """After ``/reply`` etc.: handles, newest first (own messages for ``/edit`` and
        ``/delete``); after ``/edit N``: the text of N, to change; after ``/react N``:
        emoji, those already on N first."""
        newest = list(reversed(messages))
        if not before:  # the handle itself
            if command in OWN_HANDLE_COMMANDS:
                newest = [m for m in newest if m.editable]
            digits = word.lstrip("#")
            return [f"{m.handle} " for m in newest if str(m.handle).startswith(digits)]
        if len(before) != 1:
            return []
        try:
            target = resolve_handle(before[0], messages)
        except ValueError:
            return []
        if command == "edit":
            return [target.text] if target.editable and not word else []
        if command == "react":
            emoji = list(dict.fromkeys([*target.reactions, *REACTIONS.values()]))
            if not word:
                return emoji
            name = word.strip(":").lower()
            aliased = [e for alias, e in REACTION_ALIASES.items() if alias.startswith(name)]
            return list(dict.fromkeys([e for e in target.reactions if e.startswith(word)]
                                      + aliased))
        return []


def help_lines() -> list[str]:
    lines = [f"/{name} {args}".rstrip() + f"  {text}" for name, (args, text) in COMMANDS.items()]
    lines.append("plain text is sent to the current channel; //text sends '/text'")
    return lines
