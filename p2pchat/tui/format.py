"""Pure pieces of the terminal UI: labels, message lines, commands, completion.

Nothing here touches Textual or the node, so it is cheap to test.
"""

from __future__ import annotations

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


def message_text(msg: dict[str, Any], names: dict[str, str], me: str,
                 replied: dict[str, Any] | None = None) -> Text:
    """One message of ``history`` as a line (wrapped by the pane)."""
    author = str(msg.get("author", ""))
    body = str(msg.get("text", ""))
    ts = msg.get("ts")
    line = Text(no_wrap=False)
    line.append(clock(ts) if isinstance(ts, int) else "--:--", style="dim")
    line.append(" ")
    author_style = "bold green" if author == me else "bold cyan"
    if msg.get("reply_to"):
        if replied is not None:
            excerpt = clean(str(replied.get("text", "")))[:40]
            line.append(f"\u21b3 {short(str(replied.get('author', '')))}: {excerpt}  ",
                        style="italic dim")
        else:
            line.append("\u21b3 reply  ", style="italic dim")
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
    line.append(stamp, style="dim")
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

    def complete(self, value: str, dids: Sequence[str]) -> str | None:
        """The new input value, or None when nothing matches."""
        if self._matches and value == self._last:
            self._index = (self._index + 1) % len(self._matches)
            self._last = self._head + self._matches[self._index]
            return self._last
        head, sep, word = value.rpartition(" ")
        head = head + sep
        if not head and word.startswith("/") and not word.startswith("//"):
            matches = [f"/{name} " for name in COMMANDS if name.startswith(word[1:].lower())]
        else:
            command = head[1:].split(" ", 1)[0].lower() if head.startswith("/") else ""
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


def help_lines() -> list[str]:
    lines = [f"/{name} {args}".rstrip() + f"  {text}" for name, (args, text) in COMMANDS.items()]
    lines.append("plain text is sent to the current channel; //text sends '/text'")
    return lines
