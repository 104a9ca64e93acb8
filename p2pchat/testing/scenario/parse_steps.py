"""Reading a scenario file's ``[[step]]`` tables into variants of :data:`~.model.Step`.

Owns the keys each step kind takes (``_STEP_KEYS``), how a table's keys are checked (the
common ones in the table's order, then those a kind checks itself) and the rules across
steps: labels (``id``) a post defines and later steps use, channel defaults, authorship.
:class:`StepParser` is extended by :mod:`.parser` for the rest of the file. Imports the
model and :mod:`.parse_values`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from p2pchat.testing.scenario.model import (
    ASSERTIONS,
    DEFAULT_BACKDATE_DAYS,
    DEFAULT_EMOJI,
    FAULTS,
    HOSTILE,
    HOSTILE_WITH_ID,
    KEY_STATUSES,
    LABEL_RE,
    MAX_BACKDATE_DAYS,
    MAX_BURST,
    MAX_COUNT,
    MAX_EMOJI_LENGTH,
    MAX_LATENCY_MS,
    MAX_LOSE_LAST,
    MAX_MESSAGES,
    MAX_REASON_LENGTH,
    MAX_REPEAT,
    MAX_SECONDS,
    MAX_TEXT_LENGTH,
    MOD_STEPS,
    RANKS,
    SETTLE_TIMEOUT,
    Advance,
    Block,
    Break,
    CannotDecrypt,
    ChannelSpec,
    Converged,
    Delete,
    Deleted,
    Edit,
    Edited,
    FaultPreset,
    Fired,
    Heal,
    HiddenFrom,
    HistoryEqual,
    Hostile,
    Isolate,
    KeyStatus,
    Link,
    MessageCount,
    Moderate,
    Offline,
    Online,
    Order,
    Partition,
    Post,
    RankIs,
    RateFault,
    React,
    Reactions,
    Reconnect,
    Repeat,
    Rotate,
    ServerHolds,
    SetRate,
    Settle,
    Step,
    Unblock,
    VisibleTo,
)
from p2pchat.testing.scenario.parse_values import Checker, Value

# step kind -> allowed keys (besides "do"), and keys it needs
_COMMON_ACTION = ("fails",)
_STEP_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "post": (("node", "nodes", "channel", "text", "id", "count", "burst", "interval", "pick",
              *_COMMON_ACTION), ()),
    "edit": (("node", "channel", "msg", "text", *_COMMON_ACTION), ("node", "msg", "text")),
    "delete": (("node", "channel", "msg", *_COMMON_ACTION), ("node", "msg")),
    "react": (("node", "channel", "msg", "emoji", "on", *_COMMON_ACTION), ("node", "msg")),
    "partition": (("groups", "random_groups", "mode"), ()),
    "heal": ((), ()),
    "offline": (("node", "nodes", "lose_own_last"), ()),
    "online": (("node", "nodes", "lose_last"), ()),
    **{k: (("node", "target", "channel", "reason", *_COMMON_ACTION), ("node", "target"))
       for k in MOD_STEPS},
    "rotate": (("node", "channel", *_COMMON_ACTION), ("node",)),
    "advance": (("seconds",), ("seconds",)),
    "settle": (("timeout",), ()),
    "drop": (("rate",), ("rate",)),
    "duplicate": (("rate",), ("rate",)),
    "reorder": (("rate",), ("rate",)),
    "faults": (("preset",), ("preset",)),
    "break": (("between", "silent"), ("between",)),
    "repeat": (("times", "steps"), ("times", "steps")),
    "converged": (("channel", "nodes"), ()),
    "history_equal": (("channel", "nodes", "texts"), ()),
    "visible_to": (("channel", "msg", "nodes", "text"), ("msg",)),
    "hidden_from": (("channel", "msg", "nodes"), ("msg", "nodes")),
    "cannot_decrypt": (("channel", "msg", "nodes"), ("msg", "nodes")),
    "rank_is": (("channel", "of", "rank", "nodes"), ("of", "rank")),
    "isolate": (("node", "nodes", "mode"), ()),
    "reconnect": (("node", "nodes"), ()),
    "block": (("from", "to"), ("from", "to")),
    "unblock": (("from", "to"), ("from", "to")),
    "link": (("between", "latency_ms", "loss", "one_way"), ("between",)),
    "hostile": (("node", "channel", "kind", "to", "text", "id", "age_days"), ("node", "kind")),
    "deleted": (("channel", "msg", "nodes"), ("msg",)),
    "edited": (("channel", "msg", "nodes", "text"), ("msg",)),
    "reactions": (("channel", "msg", "nodes", "emoji", "by"), ("msg", "by")),
    "message_count": (("channel", "nodes", "messages"), ("messages",)),
    "order": (("channel", "msgs", "nodes"), ("msgs",)),
    "key_status": (("channel", "node", "nodes", "status"), ("status",)),
    "fired": (("fault", "between", "at_least", "at_most"), ("fault",)),
    "server_holds": (("server", "channel", "at_least"), ("server",)),
}
#: keys a step kind checks itself (in ``StepParser._build``), not in the loop over common keys
_OWN_KEYS: dict[str, tuple[str, ...]] = {
    "block": ("from", "to"),
    "unblock": ("from", "to"),
    "link": ("between", "latency_ms", "loss", "one_way"),
    "hostile": ("kind", "to", "age_days"),
    "reactions": ("by",),
    "message_count": ("messages",),
    "order": ("msgs",),
    "key_status": ("status",),
    "fired": ("fault", "between", "at_least", "at_most"),
    "server_holds": ("server", "at_least"),
}
#: steps that take exactly one of ``node`` / ``nodes``
_ONE_OF_NODE = ("post", "offline", "online", "isolate", "reconnect")
#: steps whose node names may name a bootstrap server too
_NETWORK_STEPS = ("offline", "online", "isolate", "reconnect", "partition", "break", "block",
                  "unblock", "link", "fired")

_RATES: dict[str, RateFault] = {"drop": "drop", "duplicate": "duplicate",
                                 "reorder": "reorder"}


@dataclass
class _Fields:
    """The checked values of a step table's common keys (those not in ``_OWN_KEYS``),
    read in the table's order; ``StepParser._build`` makes the step's variant of them."""

    channel: str = ""
    node: str = ""
    nodes: tuple[str, ...] = ()  # also ``break``'s ``between``
    all_nodes: bool = False
    text: str = ""
    label: str = ""  # ``id``
    msg: str = ""
    count: int = 1
    burst: int = 1
    interval: float = 0.0
    pick: str = "cycle"
    target: str = ""  # also ``rank_is``'s ``of``
    reason: str = ""
    emoji: str = DEFAULT_EMOJI
    on: bool = True
    silent: bool = False
    fails: str = ""
    groups: tuple[tuple[str, ...], ...] = ()
    random_groups: int = 0
    mode: str = "reset"
    seconds: float = 0.0
    timeout: float = SETTLE_TIMEOUT
    rate: float = 0.0
    preset: str = ""
    lose_last: int = 0
    lose_own_last: int = 0
    times: int = 0
    rank: str = ""
    texts: tuple[str, ...] | None = None
    steps: tuple[Step, ...] = ()


@dataclass
class _Label:
    channel: str
    single: bool
    author: str  # "" when several nodes may have written it


@dataclass
class StepParser(Checker):
    """Step tables, with what earlier steps defined (labels) and the file's channels."""

    channels: dict[str, ChannelSpec] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)
    number: int = 0  # steps seen so far (pre-order)

    def _steps(self, tables: list[Value], *, nested: bool) -> tuple[Step, ...]:
        return tuple(self._step(table, nested) for table in tables)

    def _step(self, table: Value, nested: bool) -> Step:
        self.number += 1
        number = self.number
        start = self.loc.step(number)
        if not isinstance(table, dict):
            raise self.error(f"step {number} must be a table", start)
        if "do" not in table:
            raise self.error(f"step {number} has no 'do' key (what it does)", start)
        kind = table["do"]
        if not isinstance(kind, str) or kind not in _STEP_KEYS:
            raise self.error(f"unknown step {kind!r} (known: {', '.join(_STEP_KEYS)})", start)
        allowed, required = _STEP_KEYS[kind]
        for key in table:
            if key != "do" and key not in allowed:
                raise self.error(f"{kind}: unknown key {key!r} (it takes "
                                 f"{', '.join(allowed) or 'nothing'})", self.loc.key(start, key))
        for key in required:
            if key not in table:
                raise self.error(f"{kind}: missing {key!r}", start)
        if kind in _ONE_OF_NODE and ("node" in table) == ("nodes" in table):
            raise self.error(f"{kind}: give exactly one of 'node' and 'nodes'", start)
        if kind == "partition" and ("groups" in table) == ("random_groups" in table):
            raise self.error("partition: give exactly one of 'groups' and 'random_groups'", start)
        if kind == "repeat" and nested:
            raise self.error("repeat: steps inside a repeat cannot repeat again", start)

        def line(key: str) -> int | None:
            return self.loc.key(start, key)

        f = self._common_keys(table, kind, line, nested)
        step = self._build(kind, table, line, f, start or 0, number)
        self._check_step(step, f, start)
        return step

    def _common_keys(self, table: dict[str, Any], kind: str,
                     line: Callable[[str], int | None], nested: bool) -> _Fields:
        """Check the keys several kinds share, in the table's order (so the first bad
        key is the one reported); a repeat's inner steps are parsed here."""
        f = _Fields(channel=self._step_channel(table, kind, line))
        net_step = kind in _NETWORK_STEPS
        for key in table:
            if key in ("do", "channel") or key in _OWN_KEYS.get(kind, ()):
                continue
            value = table[key]
            if key == "node":
                f.node = self._node(value, "node", line(key), servers=net_step)
            elif key == "target":
                f.target = self._node(value, "target", line(key))
            elif key == "of":
                f.target = self._node(value, "of", line(key))
            elif key == "nodes":
                nodes, everyone = self._node_list(value, "nodes", line(key),
                                                  allow_all=kind in ("post", *ASSERTIONS),
                                                  servers=net_step)
                f.nodes, f.all_nodes = nodes, everyone
            elif key == "text":
                f.text = self._text(value, "text", line(key))
            elif key == "id":
                f.label = self._new_label(value, line(key), nested)
            elif key == "count":
                f.count = self._int(value, "count", line(key), 1, MAX_MESSAGES)
            elif key == "burst":
                f.burst = self._int(value, "burst", line(key), 1, MAX_BURST)
            elif key == "interval":
                f.interval = self._float(value, "interval", line(key), 0.0, MAX_SECONDS)
            elif key == "pick":
                f.pick = self._choice(value, "pick", line(key), ("cycle", "random"))
            elif key == "msg":
                f.msg = self._label_ref(value, line(key))
            elif key == "emoji":
                f.emoji = self._str(value, "emoji", line(key), MAX_EMOJI_LENGTH)
            elif key == "on":
                f.on = self._bool(value, key, line(key))
            elif key == "silent":
                f.silent = self._bool(value, key, line(key))
            elif key == "reason":
                f.reason = self._str(value, "reason", line(key), MAX_REASON_LENGTH)
            elif key == "fails":
                f.fails = self._str(value, "fails", line(key), MAX_REASON_LENGTH)
            elif key == "groups":
                f.groups = self._groups(value, line(key))
            elif key == "random_groups":
                f.random_groups = self._int(value, "random_groups", line(key), 2,
                                            len(self.nodes))
            elif key == "mode":
                f.mode = self._choice(value, "mode", line(key), ("reset", "stall"))
            elif key == "seconds":
                f.seconds = self._float(value, "seconds", line(key), 0.0, MAX_SECONDS)
            elif key == "timeout":
                f.timeout = self._float(value, "timeout", line(key), 1.0, MAX_SECONDS)
            elif key == "rate":
                f.rate = self._float(value, "rate", line(key), 0.0, 1.0)
            elif key == "preset":
                f.preset = self._choice(value, "preset", line(key), ("calm", "chaos"))
            elif key == "between":
                nodes, _ = self._node_list(value, "between", line(key), servers=True)
                if len(nodes) != 2:
                    raise self.error("between must name two different nodes", line(key))
                f.nodes = nodes
            elif key == "lose_last":
                f.lose_last = self._int(value, key, line(key), 0, MAX_LOSE_LAST)
            elif key == "lose_own_last":
                f.lose_own_last = self._int(value, key, line(key), 0, MAX_LOSE_LAST)
            elif key == "times":
                f.times = self._int(value, "times", line(key), 1, MAX_REPEAT)
            elif key == "rank":
                f.rank = self._choice(value, "rank", line(key), RANKS)
            elif key == "texts":
                if not isinstance(value, list):
                    raise self.error("texts must be a list of strings", line(key))
                f.texts = tuple(self._str(v, "texts", line(key), MAX_TEXT_LENGTH)
                                for v in value)
            elif key == "steps":
                if not isinstance(value, list) or not value:
                    raise self.error("repeat: steps must be a non-empty array of tables",
                                     line(key))
                f.steps = self._steps(value, nested=True)
        return f

    def _count(self, table: dict[str, Any], key: str, line: Callable[[str], int | None],
               default: int) -> int:
        if key not in table:
            return default
        return self._int(table[key], key, line(key), 0, MAX_COUNT)

    def _build(self, kind: str, table: dict[str, Any], line: Callable[[str], int | None],
               f: _Fields, at: int, number: int) -> Step:
        """The step variant of ``kind``, from the checked common keys ``f`` and the keys
        only this kind takes (checked here, in a fixed order: ``_OWN_KEYS``)."""
        who = (f.node,) if f.node else f.nodes
        ch = f.channel
        match kind:
            case "post":
                return Post(line=at, number=number, channel=ch, nodes=who,
                            all_nodes=f.all_nodes, text=f.text, label=f.label, count=f.count,
                            burst=f.burst, interval=f.interval, pick=f.pick, fails=f.fails)
            case "edit":
                return Edit(line=at, number=number, channel=ch, node=f.node, msg=f.msg,
                            text=f.text, fails=f.fails)
            case "delete":
                return Delete(line=at, number=number, channel=ch, node=f.node, msg=f.msg,
                              fails=f.fails)
            case "react":
                return React(line=at, number=number, channel=ch, node=f.node, msg=f.msg,
                             emoji=f.emoji, on=f.on, fails=f.fails)
            case _ if kind in MOD_STEPS:
                return Moderate(line=at, number=number, action=kind, channel=ch, node=f.node,
                                target=f.target, reason=f.reason, fails=f.fails)
            case "rotate":
                return Rotate(line=at, number=number, channel=ch, node=f.node, fails=f.fails)
            case "partition":
                return Partition(line=at, number=number, groups=f.groups,
                                 random_groups=f.random_groups, mode=f.mode)
            case "heal":
                return Heal(line=at, number=number)
            case "offline":
                return Offline(line=at, number=number, nodes=who, lose_own_last=f.lose_own_last)
            case "online":
                return Online(line=at, number=number, nodes=who, lose_last=f.lose_last)
            case "isolate":
                return Isolate(line=at, number=number, nodes=who, mode=f.mode)
            case "reconnect":
                return Reconnect(line=at, number=number, nodes=who)
            case "advance":
                return Advance(line=at, number=number, seconds=f.seconds)
            case "settle":
                return Settle(line=at, number=number, timeout=f.timeout)
            case "drop" | "duplicate" | "reorder":
                return SetRate(line=at, number=number, fault=_RATES[kind], rate=f.rate)
            case "faults":
                return FaultPreset(line=at, number=number, preset=f.preset)
            case "break":
                return Break(line=at, number=number, between=(f.nodes[0], f.nodes[1]),
                             silent=f.silent)
            case "repeat":
                return Repeat(line=at, number=number, times=f.times, steps=f.steps)
            case "block" | "unblock":
                src = self._node(table["from"], "from", line("from"), servers=True)
                dst = self._node(table["to"], "to", line("to"), servers=True)
                if src == dst:
                    raise self.error(f"{kind}: from and to must be different nodes",
                                     line("to"))
                if kind == "block":
                    return Block(line=at, number=number, src=src, dst=dst)
                return Unblock(line=at, number=number, src=src, dst=dst)
            case "link":
                return self._link(table, line, at, number)
            case "hostile":
                return self._hostile(table, line, f, at, number)
            case "converged":
                return Converged(line=at, number=number, channel=ch, nodes=who,
                                 all_nodes=f.all_nodes)
            case "history_equal":
                return HistoryEqual(line=at, number=number, channel=ch, nodes=who,
                                    all_nodes=f.all_nodes, texts=f.texts)
            case "visible_to":
                return VisibleTo(line=at, number=number, channel=ch, nodes=who,
                                 all_nodes=f.all_nodes, msg=f.msg, text=f.text)
            case "hidden_from":
                return HiddenFrom(line=at, number=number, channel=ch, nodes=who,
                                  all_nodes=f.all_nodes, msg=f.msg)
            case "cannot_decrypt":
                return CannotDecrypt(line=at, number=number, channel=ch, nodes=who,
                                     all_nodes=f.all_nodes, msg=f.msg)
            case "rank_is":
                return RankIs(line=at, number=number, channel=ch, nodes=who,
                              all_nodes=f.all_nodes, target=f.target, rank=f.rank)
            case "deleted":
                return Deleted(line=at, number=number, channel=ch, nodes=who,
                               all_nodes=f.all_nodes, msg=f.msg)
            case "edited":
                return Edited(line=at, number=number, channel=ch, nodes=who,
                              all_nodes=f.all_nodes, msg=f.msg, text=f.text)
            case "reactions":
                by, _ = self._node_list(table["by"], "by", line("by"), empty=True)
                return Reactions(line=at, number=number, channel=ch, nodes=who,
                                 all_nodes=f.all_nodes, msg=f.msg, emoji=f.emoji,
                                 by=tuple(sorted(by)))
            case "message_count":
                messages = self._int(table["messages"], "messages", line("messages"), 0,
                                     MAX_MESSAGES)
                return MessageCount(line=at, number=number, channel=ch, nodes=who,
                                    all_nodes=f.all_nodes, messages=messages)
            case "order":
                return Order(line=at, number=number, channel=ch, nodes=who,
                             all_nodes=f.all_nodes, msgs=self._order(table, line, ch))
            case "key_status":
                status = self._choice(table["status"], "status", line("status"), KEY_STATUSES)
                return KeyStatus(line=at, number=number, channel=ch, nodes=who,
                                 all_nodes=f.all_nodes, status=status)
            case "fired":
                fault = self._choice(table["fault"], "fault", line("fault"), FAULTS)
                pair = self._pair(table["between"], "between", line("between")) \
                    if "between" in table else None
                at_least = self._count(table, "at_least", line, 1)
                at_most = self._count(table, "at_most", line, -1)
                if 0 <= at_most < at_least:
                    raise self.error("fired: at_most must not be below at_least",
                                     line("at_most"))
                return Fired(line=at, number=number, fault=fault, between=pair,
                             at_least=at_least, at_most=None if at_most < 0 else at_most)
            case "server_holds":
                server = table["server"]
                if not isinstance(server, str) or server not in self.servers:
                    raise self.error(f"unknown server {server!r} (declared: "
                                     f"{', '.join(self.servers) or 'none'})", line("server"))
                return ServerHolds(line=at, number=number, channel=ch, nodes=who,
                                   all_nodes=f.all_nodes, server=server,
                                   at_least=self._count(table, "at_least", line, 1))
        raise AssertionError(f"no step variant for {kind!r}")  # _STEP_KEYS knows every kind

    def _link(self, table: dict[str, Any], line: Callable[[str], int | None], at: int,
              number: int) -> Link:
        between = self._pair(table["between"], "between", line("between"))
        latency: tuple[float, float] | None = None
        if "latency_ms" in table:
            value = table["latency_ms"]
            if not isinstance(value, list) or len(value) != 2:
                raise self.error("latency_ms must be [low, high] in milliseconds",
                                 line("latency_ms"))
            low, high = (self._float(v, "latency_ms", line("latency_ms"), 0.0,
                                     MAX_LATENCY_MS) for v in value)
            if low > high:
                raise self.error("latency_ms: low must not exceed high", line("latency_ms"))
            latency = (low, high)
        loss = self._float(table["loss"], "loss", line("loss"), 0.0, 1.0) \
            if "loss" in table else 0.0
        one_way = self._bool(table["one_way"], "one_way", line("one_way")) \
            if "one_way" in table else False
        return Link(line=at, number=number, between=between, latency_ms=latency, loss=loss,
                    one_way=one_way)

    def _hostile(self, table: dict[str, Any], line: Callable[[str], int | None], f: _Fields,
                 at: int, number: int) -> Hostile:
        what = self._choice(table["kind"], "kind", line("kind"), HOSTILE)
        to = None
        if "to" in table:
            to, _ = self._node_list(table["to"], "to", line("to"))
            if f.node in to:
                raise self.error("hostile: a node cannot send to itself", line("to"))
        days = DEFAULT_BACKDATE_DAYS
        if "age_days" in table:
            if what != "backdated":
                raise self.error("hostile: age_days is for kind = \"backdated\"",
                                 line("age_days"))
            days = self._float(table["age_days"], "age_days", line("age_days"), 0.0,
                               MAX_BACKDATE_DAYS)
        if f.label and what not in HOSTILE_WITH_ID:
            raise self.error(f"hostile: a {what} envelope is never a message; it "
                             "cannot have an id", line("id"))
        return Hostile(line=at, number=number, channel=f.channel, node=f.node, what=what,
                       to=to, text=f.text, label=f.label, age_ms=round(days * 86_400_000))

    def _order(self, table: dict[str, Any], line: Callable[[str], int | None],
               channel: str) -> tuple[str, ...]:
        value = table["msgs"]
        if not isinstance(value, list) or len(value) < 2:
            raise self.error("msgs must be a list of at least two message ids", line("msgs"))
        msgs = tuple(self._label_ref(v, line("msgs")) for v in value)
        if len(set(msgs)) != len(msgs):
            raise self.error("msgs names a message twice", line("msgs"))
        for m in msgs:
            label = self.labels[m]
            if not label.single:
                raise self.error(f"order: {m!r} names several messages; give one post's "
                                 "id", line("msgs"))
            if label.channel != channel:
                raise self.error(f"order: {m!r} is in channel {label.channel!r}",
                                 line("msgs"))
        return msgs

    def _step_channel(self, table: dict[str, Any], kind: str,
                      line: Callable[[str], int | None]) -> str:
        """The channel a step acts on: named, else the message label's, else the only one."""
        uses = "channel" in _STEP_KEYS[kind][0]
        if not uses:
            return ""
        named = ""
        if "channel" in table:
            value = table["channel"]
            if not isinstance(value, str) or value not in self.channels:
                raise self.error(f"unknown channel {value!r}", line("channel"))
            named = value
        msg = table.get("msg")
        if isinstance(msg, str) and msg in self.labels:
            of_label = self.labels[msg].channel
            if named and named != of_label:
                raise self.error(f"message {msg!r} is in channel {of_label!r}, not {named!r}",
                                 line("channel"))
            return of_label
        if named:
            return named
        if len(self.channels) > 1:
            raise self.error(f"{kind}: several channels; say which (channel = ...)",
                             self.loc.step(self.number))
        return next(iter(self.channels))

    def _new_label(self, value: Value, line: int | None, nested: bool) -> str:
        if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
            raise self.error(f"bad id {value!r}: letters, digits, '_', '.', '-' (up to 64)",
                             line)
        if value in self.labels:
            raise self.error(f"id {value!r} is used twice", line)
        if nested:
            raise self.error("a post inside a repeat cannot have an id (it would name "
                             "several posts)", line)
        return value

    def _label_ref(self, value: Value, line: int | None) -> str:
        if not isinstance(value, str) or value not in self.labels:
            raise self.error(f"unknown message id {value!r} (an earlier post's id)", line)
        return value

    def _groups(self, value: Value, line: int | None) -> tuple[tuple[str, ...], ...]:
        if not isinstance(value, list) or not value:
            raise self.error("groups must be a non-empty list of lists of node names", line)
        groups = tuple(self._node_list(g, "a partition group", line, servers=True)[0]
                       for g in value)
        seen: list[str] = []
        for group in groups:
            for name in group:
                if name in seen:
                    raise self.error(f"node {name!r} is in two partition groups", line)
                seen.append(name)
        return groups

    def _check_step(self, step: Step, f: _Fields, start: int | None) -> None:
        """Rules across fields, and labels a post defines."""
        match step:
            case Hostile() if step.label:
                self.labels[step.label] = _Label(step.channel, True, step.node)
            case Post():
                if step.label:  # written by ``node``; by "" when ``nodes`` may be several
                    self.labels[step.label] = _Label(step.channel, step.count == 1, f.node)
                if step.burst > step.count:
                    raise self.error("post: burst must not exceed count",
                                     self.loc.key(start, "burst"))
            case Edit() | Delete() | React():
                label = self.labels[step.msg]
                if not label.single:
                    raise self.error(f"{step.kind}: {step.msg!r} names several messages; "
                                     "give one post's id", self.loc.key(start, "msg"))
                if not isinstance(step, React) and label.author and label.author != step.node:
                    raise self.error(f"{step.kind}: {step.msg!r} was written by "
                                     f"{label.author!r}; only its author may change it",
                                     self.loc.key(start, "node"))
            case Moderate() if step.node == step.target:
                raise self.error(f"{step.kind}: a node cannot act on itself",
                                 self.loc.key(start, "target"))
            case _:
                pass
