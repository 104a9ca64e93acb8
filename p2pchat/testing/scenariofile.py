"""Scenario files: a simulated run written down as TOML, replayed by ``p2pchat sim``.

Theory of operation
-------------------
A scenario file names the nodes, the bootstrap servers they use, the channels
they join and a list of steps: actions (post, edit, react, partition, heal,
offline/online (crashes, also losing a node's own last writes), isolate/
reconnect (offline authoring), block/unblock (one-way partitions), per-link
faults, hostile members, moderation, key rotation, time, fault rates) and
assertions (converged, history_equal, visible_to, hidden_from, cannot_decrypt,
rank_is, deleted, edited, reactions, message_count, order, key_status, fired,
server_holds). Step kinds added for issue 16 keep their own fields in a typed
``Step.spec`` (``BlockSpec``, ``LinkSpec``, ``HostileSpec``, …) instead of more
fields on :class:`Step`. :func:`load_scenario` reads
and validates it completely before anything runs: every error names the line
it is on (``tomllib`` reports syntax errors with a line and column; for a
semantic error such as an unknown step or node this module finds the offending
table or key in the source text, see :class:`_Locator`).

:func:`run_scenario` drives a :class:`~p2pchat.testing.sim.SimNetwork` (real
``NodeCore`` s, simulated network and clock) through the steps. One seed
decides everything: the network's faults and the script's own choices (which
node posts next with ``pick = "random"``, random partitions and links) come
from :func:`~p2pchat.testing.sim.derive_rng`, and nothing iterates over a set
or depends on ``hash()``, so the same file and seed give the same run, the same
verdicts and byte-identical ``--json`` output in any process.

Every assertion gets a verdict; a failing one does not stop the run (the later
ones are still evaluated). An action that fails (a core error, a refused
request that was not expected with ``fails``, a network that never goes
quiet) stops it. On a failure :meth:`RunResult.failure_trace` gives the
*shortest trace that shows it*: the simulator's event trace cut at the first
failing assertion (nothing after it can matter), restricted to the nodes that
assertion is about (network-wide events -- partitions, heals, crashes, link
resets involving them -- stay), without keepalive pings/pongs and timer
firings, with the scenario's steps interleaved as ``== step`` lines, and at
most :data:`MAX_TRACE_LINES` lines (the last ones). ``--trace FILE`` writes the
whole trace.

The run configures every simulated core as the runtime does when nothing stores
search rows or snapshots (the simulator keeps neither): ``index_messages`` and
periodic snapshots are off. Envelope signature checks are memoized across the
simulated nodes (:class:`SharedVerifier`): a verdict is a pure function of the
envelope, so each node gets exactly the answer it would compute, but each
distinct envelope is checked once per run instead of once per node.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import MessageView
from p2pchat.core import NodeCore
from p2pchat.core.channels import verify_in_order
from p2pchat.testing.shared import SharedWork
from p2pchat.testing.sim import (
    FAULT_COUNTERS,
    HOSTILE_KINDS,
    Faults,
    SimError,
    SimNetwork,
    Uniform,
    derive_rng,
)

# --- limits -----------------------------------------------------------------------------

#: Most nodes a scenario may declare.
MAX_NODES = 200
#: Most channels a scenario may declare.
MAX_CHANNELS = 16
#: Most step tables in a file (a repeat's inner steps count once each).
MAX_STEPS = 2_000
#: Most steps a run may execute (inner steps counted once per repetition).
MAX_EXECUTED_STEPS = 100_000
#: Most messages a scenario may post in all (``count`` summed over repetitions).
MAX_MESSAGES = 100_000
#: Most repetitions of one ``repeat`` step.
MAX_REPEAT = 1_000
#: Most posts one node writes at once in a ``burst``.
MAX_BURST = 100
#: Longest ``advance``, ``interval`` or ``settle`` timeout, simulated seconds (one day).
MAX_SECONDS = 86_400.0
#: Longest text template (message texts are checked again by the core).
MAX_TEXT_LENGTH = 1_000
#: Longest channel name, moderation reason, label or emoji.
MAX_NAME_LENGTH = 64
MAX_REASON_LENGTH = 500
MAX_EMOJI_LENGTH = 32
#: Most extra links a ``[network]`` table may ask for.
MAX_LINKS = 5_000
#: Largest one-way latency and clock skew a file may set.
MAX_LATENCY_MS = 10_000.0
MAX_CLOCK_SKEW_MS = 3_600_000
#: Most envelopes crashed writes may lose per channel (``lose_last``, ``lose_own_last``).
MAX_LOSE_LAST = 1_000
#: Lines of the failure trace printed with a verdict (the whole one: ``--trace``).
MAX_TRACE_LINES = 150
#: Distinct envelope verdicts :class:`SharedVerifier` keeps before starting over.
MAX_VERIFY_CACHE = 500_000
#: Simulated seconds a channel's members get to receive its history at setup.
SETUP_TIMEOUT = 3_600.0
#: Default ``settle`` timeout, simulated seconds.
SETTLE_TIMEOUT = 3_600.0
#: Largest seed (the CLI's ``--seed`` too).
MAX_SEED = 2**63 - 1
DEFAULT_SEED = 1
DEFAULT_LATENCY_MS = (2.0, 20.0)
DEFAULT_TEXT = "{node}-{n}"
DEFAULT_EMOJI = "+1"
TEXT_PLACEHOLDERS = ("node", "i", "n")

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RANKS = ("owner", "moderator", "member", "muted", "banned", "absent")
MOD_STEPS = ("ban", "unban", "op", "deop", "kick", "mute", "unmute", "add")
ASSERTIONS = ("converged", "history_equal", "visible_to", "hidden_from", "cannot_decrypt",
              "rank_is", "deleted", "edited", "reactions", "message_count", "order",
              "key_status", "fired", "server_holds")
#: What ``key_status`` can expect (``ChannelState.key_status()``).
KEY_STATUSES = ("member", "waiting", "removed")
#: Most bootstrap servers a scenario may declare (a node uses at most 8, as ``run``).
MAX_SERVERS = 8
#: Longest a ``hostile`` ``backdated`` post may be back-dated, days.
MAX_BACKDATE_DAYS = 3650.0
#: Default back-dating of a ``backdated`` post, days.
DEFAULT_BACKDATE_DAYS = 30.0
#: Largest count ``fired`` / ``server_holds`` may ask for.
MAX_COUNT = 10**9
#: Hostile kinds whose message has an id (so the step may label it).
HOSTILE_WITH_ID = ("forged", "backdated", "equivocate")


class ScenarioError(ValueError):
    """An invalid scenario file; ``str()`` is one line: ``FILE:LINE: message``."""

    def __init__(self, message: str, line: int | None = None, source: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.source = source

    def __str__(self) -> str:
        where = self.source or "<scenario>"
        return f"{where}:{self.line}: {self.message}" if self.line else f"{where}: {self.message}"


# --- the model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    founder: str
    members: tuple[str, ...]
    via: str  # "founder", "random", "chain" or a node name
    line: int


@dataclass(frozen=True)
class NetworkSpec:
    latency_ms: tuple[float, float] = DEFAULT_LATENCY_MS
    links: tuple[tuple[str, str], ...] = ()
    random_links: int = 0
    clock_skew_ms: int = 0


@dataclass(frozen=True)
class ServerSpec:
    """A bootstrap server (``[[server]]``) and the nodes that use it."""

    name: str
    users: tuple[str, ...]
    line: int


# Step kinds added for issue 16 keep their own fields in a typed spec (``Step.spec``)
# instead of more fields on Step; issue 17 moves the older kinds the same way.


@dataclass(frozen=True)
class BlockSpec:
    """``block`` / ``unblock``: bytes from ``src`` do not reach ``dst``."""

    src: str
    dst: str

    def names(self) -> tuple[str, ...]:
        return (self.src, self.dst)


@dataclass(frozen=True)
class LinkSpec:
    """``link``: per-link latency (ms, uniform) and loss; ``one_way``: first to second only."""

    between: tuple[str, str]
    latency_ms: tuple[float, float] | None
    loss: float
    one_way: bool

    def names(self) -> tuple[str, ...]:
        return self.between


@dataclass(frozen=True)
class HostileSpec:
    """``hostile``: what a misbehaving member sends (see ``SimNetwork.hostile``)."""

    kind: str
    to: tuple[str, ...] | None
    age_ms: int

    def names(self) -> tuple[str, ...]:
        return self.to or ()


@dataclass(frozen=True)
class ReactionsSpec:
    """``reactions``: exactly these nodes react with ``emoji``."""

    by: tuple[str, ...]

    def names(self) -> tuple[str, ...]:
        return self.by


@dataclass(frozen=True)
class CountSpec:
    """``message_count``: every node shows exactly ``messages`` messages."""

    messages: int

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class OrderSpec:
    """``order``: the labelled messages appear in this order at every node."""

    msgs: tuple[str, ...]

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class KeyStatusSpec:
    """``key_status``: every node's ``key_status()`` of the channel is ``status``."""

    status: str

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class FiredSpec:
    """``fired``: a fault happened between ``at_least`` and ``at_most`` times (on a link)."""

    fault: str
    between: tuple[str, str] | None
    at_least: int
    at_most: int | None

    def names(self) -> tuple[str, ...]:
        return self.between or ()


@dataclass(frozen=True)
class ServerHoldsSpec:
    """``server_holds``: the server stores at least ``at_least`` envelopes of the channel."""

    server: str
    at_least: int

    def names(self) -> tuple[str, ...]:
        return (self.server,)


StepSpec = (BlockSpec | LinkSpec | HostileSpec | ReactionsSpec | CountSpec | OrderSpec
            | KeyStatusSpec | FiredSpec | ServerHoldsSpec)


@dataclass(frozen=True)
class Step:
    """One validated step. Which fields mean something depends on ``kind``; the kinds
    added for issue 16 keep theirs in ``spec``."""

    kind: str
    line: int
    number: int  # position in the file (1-based, inner steps of a repeat included)
    node: str = ""
    nodes: tuple[str, ...] = ()
    all_nodes: bool = False
    channel: str = ""
    text: str = ""
    label: str = ""  # ``id``: names what a post wrote
    msg: str = ""  # a label, for edit/react/delete and message assertions
    count: int = 1
    burst: int = 1
    interval: float = 0.0
    pick: str = "cycle"
    target: str = ""
    reason: str = ""
    emoji: str = DEFAULT_EMOJI
    on: bool = True
    groups: tuple[tuple[str, ...], ...] = ()
    random_groups: int = 0
    mode: str = "reset"
    seconds: float = 0.0
    rate: float = 0.0
    preset: str = ""
    times: int = 0
    steps: tuple[Step, ...] = ()
    rank: str = ""
    texts: tuple[str, ...] | None = None
    fails: str = ""
    silent: bool = False
    lose_last: int = 0
    lose_own_last: int = 0
    timeout: float = SETTLE_TIMEOUT
    spec: StepSpec | None = None

    @property
    def is_assertion(self) -> bool:
        return self.kind in ASSERTIONS

    def where(self) -> str:
        return f"step {self.number} (line {self.line})"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seed: int
    nodes: tuple[str, ...]
    network: NetworkSpec
    channels: tuple[ChannelSpec, ...]
    steps: tuple[Step, ...]
    source: str = ""
    servers: tuple[ServerSpec, ...] = ()

    def planned_messages(self) -> int:
        """How many messages the steps post in all."""
        return _messages(self.steps)

    def with_messages(self, total: int) -> Scenario:
        """The same scenario with every post step's ``count`` scaled so that about ``total``
        messages are posted (each post step keeps at least one; labels keep their kind)."""
        planned = self.planned_messages()
        if total < 1 or planned == 0:
            raise ValueError("messages must be at least 1, and the scenario must post some")

        def scale(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            out = []
            for s in steps:
                if s.kind == "post" and not (s.label and s.count == 1):
                    s = dataclasses.replace(s, count=max(1, round(s.count * total / planned)))
                elif s.kind == "repeat":
                    s = dataclasses.replace(s, steps=scale(s.steps))
                out.append(s)
            return tuple(out)

        return dataclasses.replace(self, steps=scale(self.steps))


def _messages(steps: Sequence[Step]) -> int:
    total = 0
    for s in steps:
        if s.kind == "post":
            total += s.count
        elif s.kind == "repeat":
            total += s.times * _messages(s.steps)
    return total


def _executed(steps: Sequence[Step]) -> int:
    return sum(1 + (s.times * _executed(s.steps) if s.kind == "repeat" else 0) for s in steps)


# --- finding lines in the source ------------------------------------------------------------

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\s\"'-]+?)\s*\]\]?\s*(?:#.*)?$")
_DO_RE = re.compile(r"(?:^\s*|[{,]\s*)do\s*=")


class _Locator:
    """Lines of tables and keys in the TOML text (``tomllib`` keeps no positions).

    Steps are found by their ``do =`` keys, in file order (a repeat's inner steps come
    after it), which works for ``[[step]]`` tables and inline tables alike; a key of a
    table by searching from the table's first line to the next table header.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []  # (line, dotted name)
        self.do_lines: list[int] = []
        for number, raw in enumerate(self.lines, 1):
            if raw.lstrip().startswith("#"):
                continue
            m = _HEADER_RE.match(raw)
            if m:
                self.headers.append((number, re.sub(r"[\s\"']", "", m.group(1))))
                continue
            self.do_lines += [number] * len(_DO_RE.findall(raw))

    def header(self, name: str, index: int = 0) -> int | None:
        """The line of the ``index``-th ``[name]`` / ``[[name]]`` header."""
        found = [line for line, n in self.headers if n == name]
        return found[index] if index < len(found) else None

    def top_key(self, key: str) -> int | None:
        """The line of a top-level ``key =`` (before the first table header)."""
        end = self.headers[0][0] if self.headers else len(self.lines) + 1
        return self._key_between(key, 1, end)

    def step(self, number: int) -> int | None:
        return self.do_lines[number - 1] if 0 < number <= len(self.do_lines) else None

    def key(self, start: int | None, key: str) -> int | None:
        """The line of ``key =`` in the table starting at line ``start`` (or ``start``)."""
        if start is None:
            return None
        ends = [line for line, _ in self.headers if line > start] + \
            [line for line in self.do_lines if line > start]
        end = min(ends, default=len(self.lines) + 1)
        found = self._key_between(key, start, end)
        return found if found is not None else start

    def _key_between(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"(?:^\s*|[{{,]\s*){re.escape(key)}\s*=")
        for number in range(start, min(end, len(self.lines) + 1)):
            if pattern.search(self.lines[number - 1]):
                return number
        return None


# --- parsing ----------------------------------------------------------------------------------

_Value = Any  # a value straight out of tomllib, checked before use

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
#: keys a typed step kind parses itself (into ``Step.spec``)
_SPEC_KEYS: dict[str, tuple[str, ...]] = {
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
_TOP_KEYS = ("name", "description", "seed", "nodes", "server", "network", "channel", "step")
_SERVER_KEYS = ("name", "users")
_NETWORK_KEYS = ("latency_ms", "links", "random_links", "clock_skew_ms")
_CHANNEL_KEYS = ("name", "founder", "members", "via")


@dataclass
class _Label:
    channel: str
    single: bool
    author: str  # "" when several nodes may have written it


@dataclass
class _Parser:
    loc: _Locator
    source: str
    nodes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()
    channels: dict[str, ChannelSpec] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)
    number: int = 0  # steps seen so far (pre-order)

    def error(self, message: str, line: int | None) -> ScenarioError:
        return ScenarioError(message, line, self.source)

    # --- scalars ---

    def _str(self, value: _Value, what: str, line: int | None, max_len: int) -> str:
        if not isinstance(value, str):
            raise self.error(f"{what} must be a string, not {_toml_type(value)}", line)
        if not value or len(value) > max_len:
            raise self.error(f"{what} must be 1..{max_len} characters", line)
        return value

    def _int(self, value: _Value, what: str, line: int | None, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"{what} must be an integer, not {_toml_type(value)}", line)
        if not low <= value <= high:
            raise self.error(f"{what} must be in {low}..{high}, not {value}", line)
        return value

    def _float(self, value: _Value, what: str, line: int | None, low: float,
               high: float) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(f"{what} must be a number, not {_toml_type(value)}", line)
        if not low <= value <= high:  # also refuses nan
            raise self.error(f"{what} must be in {low:g}..{high:g}, not {value}", line)
        return float(value)

    def _bool(self, value: _Value, what: str, line: int | None) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"{what} must be true or false, not {_toml_type(value)}", line)
        return value

    def _choice(self, value: _Value, what: str, line: int | None, options: Sequence[str]
                ) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.error(f"{what} must be one of {', '.join(options)}, not {value!r}", line)
        return value

    def _node(self, value: _Value, what: str, line: int | None, *, servers: bool = False
              ) -> str:
        if not isinstance(value, str):
            raise self.error(f"{what} must be a node name, not {_toml_type(value)}", line)
        if value not in self.nodes:
            if value in self.servers and not servers:
                raise self.error(f"{value!r} in {what} is a bootstrap server, not a member",
                                 line)
            if value not in self.servers:
                raise self.error(f"unknown node {value!r} in {what}", line)
        return value

    def _node_list(self, value: _Value, what: str, line: int | None, *, allow_all: bool = False,
                   servers: bool = False, empty: bool = False) -> tuple[tuple[str, ...], bool]:
        if allow_all and value == "all":
            return (), True
        if not isinstance(value, list) or (not value and not empty):
            extra = ' or "all"' if allow_all else ""
            kind = "list" if empty else "non-empty list"
            raise self.error(f"{what} must be a {kind} of node names{extra}", line)
        names = tuple(self._node(v, what, line, servers=servers) for v in value)
        if len(set(names)) != len(names):
            raise self.error(f"{what} names a node twice", line)
        return names, False

    def _text(self, value: _Value, what: str, line: int | None) -> str:
        text = self._str(value, what, line, MAX_TEXT_LENGTH)
        for name in re.findall(r"\{(\w*)\}", text):
            if name not in TEXT_PLACEHOLDERS:
                raise self.error(f"{what}: unknown placeholder {{{name}}} (known: "
                                 f"{', '.join('{' + p + '}' for p in TEXT_PLACEHOLDERS)})", line)
        return text

    # --- the file ---

    def scenario(self, data: dict[str, Any], default_name: str) -> Scenario:
        for key in data:
            if key not in _TOP_KEYS:
                line = self.loc.top_key(key) or self.loc.header(key)
                raise self.error(f"unknown top-level key {key!r} (known: "
                                 f"{', '.join(_TOP_KEYS)})", line)
        name = default_name
        if "name" in data:
            name = self._str(data["name"], "name", self.loc.top_key("name"), MAX_NAME_LENGTH)
        description = ""
        if "description" in data:
            description = self._str(data["description"], "description",
                                    self.loc.top_key("description"), 10_000)
        seed = DEFAULT_SEED
        if "seed" in data:
            seed = self._int(data["seed"], "seed", self.loc.top_key("seed"), 0, MAX_SEED)
        self.nodes = self._nodes(data.get("nodes"))
        servers = self._servers(data.get("server", []))
        network = self._network(data.get("network", {}))
        channels = data.get("channel")
        if not isinstance(channels, list) or not channels:
            raise self.error("a scenario needs at least one [[channel]] table",
                             self.loc.top_key("channel"))
        if len(channels) > MAX_CHANNELS:
            raise self.error(f"at most {MAX_CHANNELS} channels", self.loc.header("channel",
                                                                                MAX_CHANNELS))
        for index, table in enumerate(channels):
            spec = self._channel(table, index)
            self.channels[spec.name] = spec
        steps = data.get("step", [])
        if not isinstance(steps, list):
            raise self.error("step must be an array of tables ([[step]])", self.loc.top_key("step"))
        parsed = self._steps(steps, nested=False)
        if self.number > MAX_STEPS:
            raise self.error(f"at most {MAX_STEPS} steps in a file", self.loc.step(MAX_STEPS + 1))
        if _executed(parsed) > MAX_EXECUTED_STEPS:
            raise self.error(f"the repeats expand to more than {MAX_EXECUTED_STEPS} steps", None)
        if _messages(parsed) > MAX_MESSAGES:
            raise self.error(f"the steps post {_messages(parsed)} messages; at most "
                             f"{MAX_MESSAGES}", None)
        return Scenario(name, description, seed, self.nodes, network,
                        tuple(self.channels.values()), parsed, self.source, servers)

    def _servers(self, tables: _Value) -> tuple[ServerSpec, ...]:
        if not isinstance(tables, list):
            raise self.error("server must be an array of tables ([[server]])",
                             self.loc.top_key("server"))
        if len(tables) > MAX_SERVERS:
            raise self.error(f"at most {MAX_SERVERS} servers", self.loc.header("server",
                                                                              MAX_SERVERS))
        specs: list[ServerSpec] = []
        for index, table in enumerate(tables):
            start = self.loc.header("server", index)
            if not isinstance(table, dict):
                raise self.error("each server must be a table ([[server]])", start)
            for key in table:
                if key not in _SERVER_KEYS:
                    raise self.error(f"unknown key {key!r} in [[server]] (known: "
                                     f"{', '.join(_SERVER_KEYS)})", self.loc.key(start, key))
            if "name" not in table:
                raise self.error("a server needs a name", start)
            line = self.loc.key(start, "name")
            name = table["name"]
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise self.error(f"bad server name {name!r}: a letter, then up to 31 letters, "
                                 "digits, '_' or '-'", line)
            if name in self.nodes or any(s.name == name for s in specs):
                raise self.error(f"{name!r} is declared twice (as a node or server)", line)
            users = self.nodes
            if "users" in table:
                users, _ = self._node_list(table["users"], "users", self.loc.key(start, "users"))
            specs.append(ServerSpec(name, users, start or 0))
        self.servers = tuple(s.name for s in specs)
        return tuple(specs)

    def _nodes(self, value: _Value) -> tuple[str, ...]:
        line = self.loc.top_key("nodes")
        if value is None:
            raise self.error('a scenario needs nodes = ["a", "b", ...] or nodes = N', None)
        if isinstance(value, int) and not isinstance(value, bool):
            count = self._int(value, "nodes", line, 2, MAX_NODES)
            width = len(str(count))
            return tuple(f"n{i:0{width}d}" for i in range(1, count + 1))
        if not isinstance(value, list) or len(value) < 2:
            raise self.error("nodes must be a list of at least two names, or a count", line)
        if len(value) > MAX_NODES:
            raise self.error(f"at most {MAX_NODES} nodes", line)
        names = []
        for v in value:
            if not isinstance(v, str) or not NAME_RE.fullmatch(v):
                raise self.error(f"bad node name {v!r}: a letter, then up to 31 letters, "
                                 "digits, '_' or '-'", line)
            if v in names:
                raise self.error(f"node {v!r} is declared twice", line)
            names.append(v)
        return tuple(names)

    def _network(self, table: _Value) -> NetworkSpec:
        start = self.loc.header("network") or self.loc.top_key("network")
        if not isinstance(table, dict):
            raise self.error("network must be a table ([network])", start)
        for key in table:
            if key not in _NETWORK_KEYS:
                raise self.error(f"unknown key {key!r} in [network] (known: "
                                 f"{', '.join(_NETWORK_KEYS)})", self.loc.key(start, key))
        spec = NetworkSpec()
        if "latency_ms" in table:
            line = self.loc.key(start, "latency_ms")
            value = table["latency_ms"]
            if not isinstance(value, list) or len(value) != 2:
                raise self.error("latency_ms must be [low, high] in milliseconds", line)
            low, high = (self._float(v, "latency_ms", line, 0.0, MAX_LATENCY_MS) for v in value)
            if low > high:
                raise self.error("latency_ms: low must not exceed high", line)
            spec = dataclasses.replace(spec, latency_ms=(low, high))
        if "links" in table:
            line = self.loc.key(start, "links")
            value = table["links"]
            if not isinstance(value, list) or len(value) > MAX_LINKS:
                raise self.error(f"links must be a list of at most {MAX_LINKS} [a, b] pairs",
                                 line)
            pairs = []
            for pair in value:
                names, _ = self._node_list(pair, "a link", line)
                if len(names) != 2:
                    raise self.error("a link is a pair of two different nodes", line)
                pairs.append((names[0], names[1]))
            spec = dataclasses.replace(spec, links=tuple(pairs))
        if "random_links" in table:
            spec = dataclasses.replace(spec, random_links=self._int(
                table["random_links"], "random_links", self.loc.key(start, "random_links"), 0,
                MAX_LINKS))
        if "clock_skew_ms" in table:
            spec = dataclasses.replace(spec, clock_skew_ms=self._int(
                table["clock_skew_ms"], "clock_skew_ms", self.loc.key(start, "clock_skew_ms"),
                0, MAX_CLOCK_SKEW_MS))
        return spec

    def _channel(self, table: _Value, index: int) -> ChannelSpec:
        start = self.loc.header("channel", index)
        if not isinstance(table, dict):
            raise self.error("each channel must be a table ([[channel]])", start)
        for key in table:
            if key not in _CHANNEL_KEYS:
                raise self.error(f"unknown key {key!r} in [[channel]] (known: "
                                 f"{', '.join(_CHANNEL_KEYS)})", self.loc.key(start, key))
        if "name" not in table:
            raise self.error("a channel needs a name", start)
        name = self._str(table["name"], "channel name", self.loc.key(start, "name"),
                         MAX_NAME_LENGTH)
        if name in self.channels:
            raise self.error(f"channel {name!r} is declared twice", self.loc.key(start, "name"))
        founder = self.nodes[0]
        if "founder" in table:
            founder = self._node(table["founder"], "founder", self.loc.key(start, "founder"))
        members = tuple(n for n in self.nodes if n != founder)
        if "members" in table:
            line = self.loc.key(start, "members")
            listed, everyone = self._node_list(table["members"], "members", line, allow_all=True)
            if not everyone:
                if founder in listed:
                    raise self.error(f"the founder {founder!r} is not listed in members", line)
                members = listed
        via = "founder"
        if "via" in table:
            line = self.loc.key(start, "via")
            value = table["via"]
            if value not in ("founder", "random", "chain"):
                value = self._node(value, "via (founder, random, chain or a node)", line)
                if value != founder and value not in members:
                    raise self.error(f"via {value!r} is not a member of the channel", line)
            via = str(value)
        return ChannelSpec(name, founder, members, via, start or 0)

    # --- steps ---

    def _steps(self, tables: list[_Value], *, nested: bool) -> tuple[Step, ...]:
        return tuple(self._step(table, nested) for table in tables)

    def _step(self, table: _Value, nested: bool) -> Step:
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

        values: dict[str, Any] = {}
        channel = self._step_channel(table, kind, line)
        if channel:
            values["channel"] = channel
        net_step = kind in _NETWORK_STEPS
        for key in table:
            if key in ("do", "channel") or key in _SPEC_KEYS.get(kind, ()):
                continue
            value = table[key]
            if key in ("node",):
                values["node"] = self._node(value, "node", line(key), servers=net_step)
            elif key == "target":
                values["target"] = self._node(value, "target", line(key))
            elif key == "of":
                values["target"] = self._node(value, "of", line(key))
            elif key == "nodes":
                nodes, everyone = self._node_list(value, "nodes", line(key),
                                                  allow_all=kind in ("post", *ASSERTIONS),
                                                  servers=net_step)
                values["nodes"], values["all_nodes"] = nodes, everyone
            elif key == "text":
                values["text"] = self._text(value, "text", line(key))
            elif key == "id":
                values["label"] = self._new_label(value, line(key), nested)
            elif key == "count":
                values["count"] = self._int(value, "count", line(key), 1, MAX_MESSAGES)
            elif key == "burst":
                values["burst"] = self._int(value, "burst", line(key), 1, MAX_BURST)
            elif key == "interval":
                values["interval"] = self._float(value, "interval", line(key), 0.0, MAX_SECONDS)
            elif key == "pick":
                values["pick"] = self._choice(value, "pick", line(key), ("cycle", "random"))
            elif key == "msg":
                values["msg"] = self._label_ref(value, line(key))
            elif key == "emoji":
                values["emoji"] = self._str(value, "emoji", line(key), MAX_EMOJI_LENGTH)
            elif key in ("on", "silent"):
                values[key] = self._bool(value, key, line(key))
            elif key == "reason":
                values["reason"] = self._str(value, "reason", line(key), MAX_REASON_LENGTH)
            elif key == "fails":
                values["fails"] = self._str(value, "fails", line(key), MAX_REASON_LENGTH)
            elif key == "groups":
                values["groups"] = self._groups(value, line(key))
            elif key == "random_groups":
                values["random_groups"] = self._int(value, "random_groups", line(key), 2,
                                                    len(self.nodes))
            elif key == "mode":
                values["mode"] = self._choice(value, "mode", line(key), ("reset", "stall"))
            elif key == "seconds":
                values["seconds"] = self._float(value, "seconds", line(key), 0.0, MAX_SECONDS)
            elif key == "timeout":
                values["timeout"] = self._float(value, "timeout", line(key), 1.0, MAX_SECONDS)
            elif key == "rate":
                values["rate"] = self._float(value, "rate", line(key), 0.0, 1.0)
            elif key == "preset":
                values["preset"] = self._choice(value, "preset", line(key), ("calm", "chaos"))
            elif key == "between":
                nodes, _ = self._node_list(value, "between", line(key), servers=True)
                if len(nodes) != 2:
                    raise self.error("between must name two different nodes", line(key))
                values["nodes"] = nodes
            elif key in ("lose_last", "lose_own_last"):
                values[key] = self._int(value, key, line(key), 0, MAX_LOSE_LAST)
            elif key == "times":
                values["times"] = self._int(value, "times", line(key), 1, MAX_REPEAT)
            elif key == "rank":
                values["rank"] = self._choice(value, "rank", line(key), RANKS)
            elif key == "texts":
                if not isinstance(value, list):
                    raise self.error("texts must be a list of strings", line(key))
                values["texts"] = tuple(self._str(v, "texts", line(key), MAX_TEXT_LENGTH)
                                        for v in value)
            elif key == "steps":
                if not isinstance(value, list) or not value:
                    raise self.error("repeat: steps must be a non-empty array of tables",
                                     line(key))
                values["steps"] = self._steps(value, nested=True)
        if kind in _SPEC_KEYS:
            values["spec"] = self._spec(kind, table, line, values)
        step = Step(kind, start or 0, number, **values)
        self._check_step(step, start)
        return step

    def _pair(self, value: _Value, what: str, line: int | None) -> tuple[str, str]:
        names, _ = self._node_list(value, what, line, servers=True)
        if len(names) != 2:
            raise self.error(f"{what} must name two different nodes", line)
        return names[0], names[1]

    def _count(self, table: dict[str, Any], key: str, line: Callable[[str], int | None],
               default: int) -> int:
        if key not in table:
            return default
        return self._int(table[key], key, line(key), 0, MAX_COUNT)

    def _spec(self, kind: str, table: dict[str, Any], line: Callable[[str], int | None],
              values: dict[str, Any]) -> StepSpec:
        """The typed fields of a step kind added for issue 16 (keys of ``_SPEC_KEYS``)."""
        if kind in ("block", "unblock"):
            src = self._node(table["from"], "from", line("from"), servers=True)
            dst = self._node(table["to"], "to", line("to"), servers=True)
            if src == dst:
                raise self.error(f"{kind}: from and to must be different nodes", line("to"))
            return BlockSpec(src, dst)
        if kind == "link":
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
            return LinkSpec(between, latency, loss, one_way)
        if kind == "hostile":
            what = self._choice(table["kind"], "kind", line("kind"), HOSTILE_KINDS)
            to = None
            if "to" in table:
                to, _ = self._node_list(table["to"], "to", line("to"))
                if values.get("node") in to:
                    raise self.error("hostile: a node cannot send to itself", line("to"))
            days = DEFAULT_BACKDATE_DAYS
            if "age_days" in table:
                if what != "backdated":
                    raise self.error("hostile: age_days is for kind = \"backdated\"",
                                     line("age_days"))
                days = self._float(table["age_days"], "age_days", line("age_days"), 0.0,
                                   MAX_BACKDATE_DAYS)
            if values.get("label") and what not in HOSTILE_WITH_ID:
                raise self.error(f"hostile: a {what} envelope is never a message; it "
                                 "cannot have an id", line("id"))
            return HostileSpec(what, to, round(days * 86_400_000))
        if kind == "reactions":
            by, _ = self._node_list(table["by"], "by", line("by"), empty=True)
            return ReactionsSpec(tuple(sorted(by)))
        if kind == "message_count":
            return CountSpec(self._int(table["messages"], "messages", line("messages"), 0,
                                       MAX_MESSAGES))
        if kind == "order":
            value = table["msgs"]
            if not isinstance(value, list) or len(value) < 2:
                raise self.error("msgs must be a list of at least two message ids",
                                 line("msgs"))
            msgs = tuple(self._label_ref(v, line("msgs")) for v in value)
            if len(set(msgs)) != len(msgs):
                raise self.error("msgs names a message twice", line("msgs"))
            for m in msgs:
                label = self.labels[m]
                if not label.single:
                    raise self.error(f"order: {m!r} names several messages; give one post's "
                                     "id", line("msgs"))
                if label.channel != values.get("channel"):
                    raise self.error(f"order: {m!r} is in channel {label.channel!r}",
                                     line("msgs"))
            return OrderSpec(msgs)
        if kind == "key_status":
            return KeyStatusSpec(self._choice(table["status"], "status", line("status"),
                                              KEY_STATUSES))
        if kind == "fired":
            fault = self._choice(table["fault"], "fault", line("fault"), tuple(FAULT_COUNTERS))
            pair = self._pair(table["between"], "between", line("between")) \
                if "between" in table else None
            at_least = self._count(table, "at_least", line, 1)
            at_most = self._count(table, "at_most", line, -1)
            if 0 <= at_most < at_least:
                raise self.error("fired: at_most must not be below at_least", line("at_most"))
            return FiredSpec(fault, pair, at_least, None if at_most < 0 else at_most)
        # server_holds
        server = table["server"]
        if not isinstance(server, str) or server not in self.servers:
            raise self.error(f"unknown server {server!r} (declared: "
                             f"{', '.join(self.servers) or 'none'})", line("server"))
        return ServerHoldsSpec(server, self._count(table, "at_least", line, 1))

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

    def _new_label(self, value: _Value, line: int | None, nested: bool) -> str:
        if not isinstance(value, str) or not LABEL_RE.fullmatch(value):
            raise self.error(f"bad id {value!r}: letters, digits, '_', '.', '-' (up to 64)",
                             line)
        if value in self.labels:
            raise self.error(f"id {value!r} is used twice", line)
        if nested:
            raise self.error("a post inside a repeat cannot have an id (it would name "
                             "several posts)", line)
        return value

    def _label_ref(self, value: _Value, line: int | None) -> str:
        if not isinstance(value, str) or value not in self.labels:
            raise self.error(f"unknown message id {value!r} (an earlier post's id)", line)
        return value

    def _groups(self, value: _Value, line: int | None) -> tuple[tuple[str, ...], ...]:
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

    def _check_step(self, step: Step, start: int | None) -> None:
        """Rules across fields, and labels a post defines."""
        if step.kind == "hostile" and step.label:
            self.labels[step.label] = _Label(step.channel, True, step.node)
        if step.kind == "post":
            if step.label:
                author = step.node if step.node else ""
                self.labels[step.label] = _Label(step.channel, step.count == 1, author)
            if step.burst > step.count:
                raise self.error("post: burst must not exceed count",
                                 self.loc.key(start, "burst"))
        if step.kind in ("edit", "delete", "react"):
            label = self.labels[step.msg]
            if not label.single:
                raise self.error(f"{step.kind}: {step.msg!r} names several messages; "
                                 "give one post's id", self.loc.key(start, "msg"))
            if step.kind != "react" and label.author and label.author != step.node:
                raise self.error(f"{step.kind}: {step.msg!r} was written by {label.author!r}; "
                                 "only its author may change it", self.loc.key(start, "node"))
        if step.kind in MOD_STEPS and step.node == step.target:
            raise self.error(f"{step.kind}: a node cannot act on itself",
                             self.loc.key(start, "target"))


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_scenario(text: str, source: str = "<scenario>", name: str = "scenario") -> Scenario:
    """Validate the TOML ``text`` of a scenario; :class:`ScenarioError` names the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POS_RE.search(message)
        if m:
            line, column = int(m.group(1)), int(m.group(2))
            raise ScenarioError(f"invalid TOML: {message[:m.start()]} (column {column})", line,
                                source) from None
        if message.endswith("(at end of document)"):
            raise ScenarioError(f"invalid TOML: {message.removesuffix(' (at end of document)')}"
                                " (at the end of the file)", max(1, len(text.splitlines())),
                                source) from None
        raise ScenarioError(f"invalid TOML: {message}", None, source) from None
    return _Parser(_Locator(text), source).scenario(data, name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (see :func:`parse_scenario`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the file: {exc}", None, str(path)) from None
    return parse_scenario(text, str(path), path.stem)


# --- running ----------------------------------------------------------------------------------


class SharedVerifier:
    """Envelope signature checks memoized across every simulated node (a ``BatchVerifier``).

    A verdict is a pure function of the envelope (its fields are the memo key), so each
    node gets the answer it would compute itself; each distinct envelope is checked once
    per run instead of once per node that receives it.
    """

    def __init__(self) -> None:
        self._verdicts: dict[Envelope, bool] = {}

    def __call__(self, envelopes: list[Envelope]) -> list[bool]:
        missing = [env for env in envelopes if env not in self._verdicts]
        if missing:
            if len(self._verdicts) + len(missing) > MAX_VERIFY_CACHE:
                self._verdicts.clear()
            for env, ok in zip(missing, verify_in_order(missing), strict=True):
                self._verdicts[env] = ok
        return [self._verdicts[env] for env in envelopes]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one assertion (or of a failed action, ``kind`` "step: …")."""

    step: int
    line: int
    kind: str
    passed: bool
    detail: str
    nodes: tuple[str, ...] = ()  # the nodes it is about (for the failure trace)
    trace_at: int = 0  # length of the network trace when it was decided
    markers_at: int = 0  # steps started by then (their ``== step`` lines)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "line": self.line, "kind": self.kind,
                "passed": self.passed, "detail": self.detail}

    def where_text(self) -> str:
        return f"step {self.step}, line {self.line}"


@dataclass(frozen=True)
class _Posted:
    msg_id: str
    node: str
    channel: bytes


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    net: SimNetwork
    verdicts: list[Verdict]
    #: the action that stopped the run, if one failed
    error: Verdict | None
    #: (trace length when the step started, what it was): the script in the trace
    markers: list[tuple[int, str]]
    messages: int

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)

    @property
    def first_failure(self) -> Verdict | None:
        failed = [v for v in self.verdicts if not v.passed]
        if self.error is not None:
            failed.append(self.error)
        return min(failed, key=lambda v: v.trace_at, default=None)

    def full_trace(self) -> list[str]:
        """Every trace event, with the script's steps interleaved (``--trace``)."""
        return self._render(self.net.trace, lambda _: True, len(self.net.trace),
                            len(self.markers))

    def failure_trace(self) -> list[str]:
        """The shortest trace that shows the first failure (see the module docstring)."""
        failure = self.first_failure
        if failure is None:
            return []
        relevant = set(failure.nodes) if failure.nodes else set(self.scenario.nodes)

        def keep(entry: tuple[str, ...]) -> bool:
            return _relevant(entry, relevant)

        lines = self._render(self.net.trace, keep, failure.trace_at, failure.markers_at)
        lines.append(f"== {failure.kind} FAILED: {failure.detail.splitlines()[0]}"
                     if failure.detail else f"== {failure.kind} FAILED")
        if len(lines) > MAX_TRACE_LINES:
            dropped = len(lines) - MAX_TRACE_LINES
            lines = [f"... {dropped} earlier lines left out (--trace FILE writes the whole "
                     "trace)", *lines[-MAX_TRACE_LINES:]]
        return lines

    def _render(self, trace: list[tuple[str, ...]], keep: Callable[[tuple[str, ...]], bool],
                end: int, markers_end: int) -> list[str]:
        out: list[str] = []
        markers = iter(self.markers[:markers_end])
        marker = next(markers, None)
        for index in range(end):
            while marker is not None and marker[0] <= index:
                out.append(marker[1])
                marker = next(markers, None)
            entry = trace[index]
            if keep(entry):
                out.append(" ".join(entry))
        while marker is not None and marker[0] <= end:
            out.append(marker[1])
            marker = next(markers, None)
        return out

    def to_json(self) -> dict[str, Any]:
        failure = self.first_failure
        net = self.net
        return {
            "scenario": self.scenario.name,
            "file": Path(self.scenario.source).name if self.scenario.source else "",
            "seed": self.seed,
            "replay": f"p2pchat sim {self.scenario.source or 'FILE'} --seed {self.seed}",
            "passed": self.passed,
            "assertions": [v.to_json() for v in self.verdicts],
            "error": self.error.to_json() if self.error is not None else None,
            "failure": None if failure is None else {
                **failure.to_json(), "nodes": list(failure.nodes),
                "trace": self.failure_trace()},
            "nodes": len(self.scenario.nodes),
            "messages": self.messages,
            "sim_time": round(net.now, 6),
            "events": net.stats.events,
            "trace_events": len(net.trace),
            "trace_digest": net.trace_digest(),
            "stats": dataclasses.asdict(net.stats),
        }

    def report(self) -> str:
        """Human-readable verdicts; on failure the seed and the failure trace."""
        s = self.scenario
        lines = [f"scenario {s.name!r} ({s.source or 'text'}), seed {self.seed}: "
                 f"{len(s.nodes)} nodes, {self.messages} messages"]
        for v in self.verdicts:
            first, *rest = (v.detail or "").splitlines() or [""]
            lines.append(f"  {'PASS' if v.passed else 'FAIL'}  {v.kind:<15} line {v.line:<4} "
                         f"{first}")
            lines += [f"        {r}" for r in rest[:40]]
        if self.error is not None:
            lines.append(f"  STOP  {self.error.kind} at line {self.error.line}: "
                         f"{self.error.detail}")
        passed = sum(v.passed for v in self.verdicts)
        lines.append(f"{passed} of {len(self.verdicts)} assertions passed; simulated "
                     f"{self.net.now:.1f} s, {self.net.stats.events} events")
        if not self.passed:
            failure = self.first_failure
            assert failure is not None
            lines.append(f"FAILED with seed {self.seed} (replay: p2pchat sim "
                         f"{s.source or 'FILE'} --seed {self.seed})")
            about = ", ".join(failure.nodes) if failure.nodes else "all nodes"
            lines.append(f"shortest trace showing it (up to {failure.where_text()}, "
                         f"events at {about}; no keepalives or timers):")
            lines += [f"  {line}" for line in self.failure_trace()]
        return "\n".join(lines)


_KEEPALIVE_ONLY = frozenset({"ping", "pong"})


def _relevant(entry: tuple[str, ...], nodes: set[str]) -> bool:
    """Whether a trace entry belongs in the failure trace for ``nodes``."""
    who, kind = entry[1], entry[2]
    if who == "*":
        if kind in ("partition", "heal"):
            return True
        names = re.split(r"[-#\s,|]+", " ".join(entry[3:]))
        return any(n in nodes for n in names)
    if who not in nodes or kind == "timer":
        return False
    if kind == "data":
        words = set(re.findall(r"[a-z]+", entry[3].split(" ", 3)[-1])) if len(entry) > 3 \
            else set()
        return not words or not words <= _KEEPALIVE_ONLY
    return True


class _StepFailed(Exception):
    """An action could not be carried out; the run stops."""


class _Runner:
    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.script = derive_rng(seed, "scenario-script")
        low, high = scenario.network.latency_ms
        self.latency = Uniform(low / 1000.0, high / 1000.0)
        self.net = SimNetwork(seed, faults=Faults.calm(self.latency),
                              clock_skew_ms=scenario.network.clock_skew_ms,
                              max_events=50_000_000)
        self.verifier = SharedVerifier()
        self.shared = SharedWork()
        self.net.on_new_core = self._configure
        self.net.server_verify = self.verifier
        for server in scenario.servers:  # first: their users dial them at start
            self.net.add_server(server.name)
        for name in scenario.nodes:
            self.net.add_node(name, servers=[s.name for s in scenario.servers
                                             if name in s.users])
        self.channels: dict[str, bytes] = {}
        self.labels: dict[str, list[_Posted]] = {}
        self.posted = 0
        self.verdicts: list[Verdict] = []
        self.markers: list[tuple[int, str]] = []

    def _configure(self, name: str, core: NodeCore) -> None:
        # as the runtime does when nothing stores search rows or snapshots (the simulator
        # keeps neither); signature checks and the pure steps of receiving an envelope
        # shared across nodes (see SharedVerifier and p2pchat.testing.shared)
        core.hub.index_messages = False
        core.hub.snapshot_every = 0
        core.hub.verify_batch = self.verifier
        core.hub.shared = self.shared

    def mark(self, text: str) -> None:
        self.markers.append((len(self.net.trace), f"== {text}"))

    # --- setup ---

    def setup(self) -> None:
        net = self.net
        joined: list[tuple[str, str]] = []
        for spec in self.scenario.channels:
            self.mark(f"setup: channel {spec.name!r} by {spec.founder}, "
                      f"{len(spec.members)} members join via {spec.via}")
            cid = net.create_channel(spec.founder, spec.name)
            self.channels[spec.name] = cid
            earlier = [spec.founder]
            for member in spec.members:
                if spec.via == "founder":
                    via = spec.founder
                elif spec.via == "chain":
                    via = earlier[-1]
                elif spec.via == "random":
                    via = earlier[self.script.randrange(len(earlier))]
                else:
                    via = spec.via if spec.via != member else spec.founder
                net.join(member, cid, via=via)
                joined.append((min(member, via), max(member, via)))
                earlier.append(member)
            everyone = [spec.founder, *spec.members]
            net.wait_for(functools.partial(self._all_synced, everyone, cid),
                         timeout=SETUP_TIMEOUT,
                         what=f"every member of {spec.name!r} to be admitted")
        linked = set(joined)
        for a, b in self.scenario.network.links:
            pair = (min(a, b), max(a, b))
            if pair not in linked:
                linked.add(pair)
                net.connect(a, b)
        names = list(self.scenario.nodes)
        wanted = self.scenario.network.random_links
        possible = len(names) * (len(names) - 1) // 2 - len(linked)
        for _ in range(min(wanted, possible)):
            while True:
                a, b = sorted(self.script.sample(names, 2))
                if (a, b) not in linked:
                    break
            linked.add((a, b))
            net.connect(a, b)
        net.run_until_quiet()
        self.mark(f"setup done at t={net.now:.3f}: {len(net.links())} links")

    def _all_synced(self, names: list[str], cid: bytes) -> bool:
        return all(self.net.synced(n, cid) for n in names)

    # --- steps ---

    def run(self) -> Verdict | None:
        try:
            self.setup()
        except SimError as exc:
            return Verdict(0, 0, "setup", False, str(exc), (), len(self.net.trace),
                           len(self.markers))
        return self.steps(self.scenario.steps, "")

    def steps(self, steps: Sequence[Step], prefix: str) -> Verdict | None:
        for step in steps:
            self.mark(f"{prefix}step {step.number} (line {step.line}) {_describe(step)} "
                      f"t={self.net.now:.3f}")
            if step.is_assertion:
                self.verdicts.append(self.check(step))
                continue
            if step.kind == "repeat":
                for i in range(step.times):
                    failed = self.steps(step.steps, f"{prefix}[{i + 1}/{step.times}] ")
                    if failed is not None:
                        return failed
                continue
            try:
                self.act(step)
            except (_StepFailed, SimError) as exc:
                return Verdict(step.number, step.line, f"step {step.kind}", False, str(exc),
                               self._nodes_of(step), len(self.net.trace), len(self.markers))
        return None

    def _nodes_of(self, step: Step) -> tuple[str, ...]:
        names = [*([step.node] if step.node else []), *step.nodes,
                 *([step.target] if step.target else []), *(n for g in step.groups for n in g),
                 *(step.spec.names() if step.spec is not None else ())]
        return tuple(sorted(set(names)))

    def act(self, step: Step) -> None:
        net, kind = self.net, step.kind
        cid = self.channels.get(step.channel, b"")
        if kind == "post":
            self.post(step, cid)
        elif kind in ("edit", "delete", "react"):
            (msg,) = self.labels[step.msg]
            self._expect(step, lambda: net.message_op(step.node, cid, kind, msg.msg_id,
                                                      text=step.text, emoji=step.emoji,
                                                      on=step.on))
        elif kind in MOD_STEPS:
            self._alive(step.node)
            self._expect(step, lambda: net.moderate(step.node, cid, kind, step.target,
                                                    reason=step.reason))
        elif kind == "rotate":
            self._alive(step.node)
            self._expect(step, lambda: net.rotate(step.node, cid))
        elif kind == "partition":
            groups: Sequence[Sequence[str]] = step.groups
            if step.random_groups:
                names = list(self.scenario.nodes)
                self.script.shuffle(names)
                groups = [names[i::step.random_groups] for i in range(step.random_groups)]
            # a server no group names stays reachable from every side ("on the Internet")
            net.partition(*groups, mode=step.mode,
                          everywhere=[s.name for s in self.scenario.servers])
        elif kind == "heal":
            net.heal()
        elif kind == "isolate":
            for name in step.nodes or (step.node,):
                net.isolate(name, step.mode)
        elif kind == "reconnect":
            for name in step.nodes or (step.node,):
                net.reconnect(name)
        elif isinstance(step.spec, BlockSpec):
            if kind == "block":
                net.block(step.spec.src, step.spec.dst)
            else:
                net.unblock(step.spec.src, step.spec.dst)
        elif isinstance(step.spec, LinkSpec):
            lat = step.spec.latency_ms
            net.set_link(*step.spec.between, loss=step.spec.loss,
                         latency=None if lat is None else Uniform(lat[0] / 1000, lat[1] / 1000),
                         both_ways=not step.spec.one_way)
        elif isinstance(step.spec, HostileSpec):
            self._alive(step.node)
            self.posted += 1
            text = _render(step.text or "hostile {node}-{n}", step.node, 1, self.posted)
            msg_id = net.hostile(step.node, cid, step.spec.kind, text=text, to=step.spec.to,
                                 age_ms=step.spec.age_ms)
            if step.label:
                self.labels[step.label] = [_Posted(msg_id, step.node, cid)]
        elif kind == "offline":
            for name in step.nodes or (step.node,):
                self._alive(name)
                net.crash(name, lose_own_last=step.lose_own_last)
        elif kind == "online":
            for name in step.nodes or (step.node,):
                if net.node(name).alive:
                    raise _StepFailed(f"{name} is not offline")
                net.restart(name, lose_last=step.lose_last)
        elif kind == "advance":
            net.run_for(step.seconds)
        elif kind == "settle":
            net.run_until_quiet(timeout=step.timeout)
        elif kind == "drop":  # on a QUIC link a lost packet is a retransmission: a stall
            net.faults = dataclasses.replace(net.faults, stall_prob=step.rate)
        elif kind == "duplicate":
            net.faults = dataclasses.replace(net.faults, frame_duplicate=step.rate)
        elif kind == "reorder":
            net.faults = dataclasses.replace(net.faults, frame_reorder=step.rate)
        elif kind == "faults":
            net.faults = Faults.chaos() if step.preset == "chaos" else Faults.calm(self.latency)
        elif kind == "break":
            a, b = step.nodes
            net.break_link(a, b, silent=step.silent)
        else:  # pragma: no cover - the parser knows every kind
            raise _StepFailed(f"no action for {kind!r}")

    def _alive(self, name: str) -> None:
        if not self.net.node(name).alive:
            raise _StepFailed(f"{name} is offline")

    def _expect(self, step: Step, action: Callable[[], object]) -> None:
        """Run a request; with ``fails`` it must be refused with that text in the error."""
        try:
            action()
        except SimError as exc:
            message = str(exc).split("\n[sim seed=")[0]
            if step.fails and "failed:" in message and step.fails in message:
                return
            raise _StepFailed(message + (f" (expected an error with {step.fails!r})"
                                         if step.fails else "")) from None
        if step.fails:
            raise _StepFailed(f"{step.kind} succeeded, but it should fail with {step.fails!r}")

    def post(self, step: Step, cid: bytes) -> None:
        net = self.net
        done = 0
        turn = 0
        written: list[_Posted] = []
        while done < step.count:
            if step.all_nodes:
                candidates = self.writers(step.channel)
                if not candidates:
                    raise _StepFailed("no live member may write")
            else:
                candidates = list(step.nodes or (step.node,))
            name = candidates[turn % len(candidates)] if step.pick == "cycle" \
                else candidates[self.script.randrange(len(candidates))]
            turn += 1
            self._alive(name)
            burst = min(step.burst, step.count - done)
            texts = []
            for _ in range(burst):
                done += 1
                self.posted += 1
                texts.append(_render(step.text or DEFAULT_TEXT, name, done, self.posted))
            if step.fails:
                for text in texts:
                    self._expect(step, functools.partial(net.post, name, cid, text))
            else:
                try:  # a burst goes out as the runtime sends it: sealed together
                    ids = net.post_burst(name, cid, texts) if burst > 1 \
                        else [net.post(name, cid, texts[0])]
                except SimError as exc:
                    raise _StepFailed(str(exc).split("\n[sim seed=")[0]) from None
                if step.label:
                    written += [_Posted(msg_id, name, cid) for msg_id in ids]
            if step.interval and done < step.count:
                net.run_for(step.interval)
        if step.label:
            self.labels[step.label] = written

    def writers(self, channel: str) -> list[str]:
        """Live members that may write: not banned or removed in their own view."""
        cid = self.channels[channel]
        out = []
        for name in self.net.members(cid):
            state = self.net.core(name).hub.get(cid)
            me = self.net.did(name)
            if state.key_status() == "removed" or (state.mod_events
                                                    and me in state.moderation().banned):
                continue
            out.append(name)
        return out

    # --- assertions ---

    def good_standing(self, channel: str) -> list[str]:
        """Live holders of the channel, except those it banned or removed: they no longer
        get its content (the founder's replica decides, or the first live holder's)."""
        cid = self.channels[channel]
        holders = self.net.members(cid)
        if not holders:
            return []
        spec = next(c for c in self.scenario.channels if c.name == channel)
        reference = spec.founder if spec.founder in holders else holders[0]
        ref = self.net.core(reference).hub.get(cid)
        banned = ref.moderation().banned if ref.mod_events else set()
        return [n for n in holders if self.net.did(n) not in banned
                and self.net.core(n).hub.get(cid).key_status() != "removed"]

    def observers(self, step: Step) -> list[str]:
        if not step.channel:  # fired: about the network, not a channel
            return []
        if step.node:
            return [step.node]
        if step.all_nodes:
            return self.net.members(self.channels[step.channel])
        if step.nodes:
            return list(step.nodes)
        return self.good_standing(step.channel)

    def check(self, step: Step) -> Verdict:
        nodes = self.observers(step)
        about = list(nodes)
        if step.msg:
            about += [p.node for p in self.labels.get(step.msg, [])]
        if step.target:
            about.append(step.target)
        if step.spec is not None:
            about += step.spec.names()
        try:
            passed, detail = self._check(step, nodes)
        except SimError as exc:
            passed, detail = False, str(exc)
        return Verdict(step.number, step.line, step.kind, passed, detail,
                       tuple(sorted(set(about))), len(self.net.trace), len(self.markers))

    def _check(self, step: Step, nodes: list[str]) -> tuple[bool, str]:
        net = self.net
        if isinstance(step.spec, FiredSpec):
            return self._fired(step.spec)
        cid = self.channels[step.channel]
        if isinstance(step.spec, ServerHoldsSpec):
            held = net.server_holds(step.spec.server, cid)
            return held >= step.spec.at_least, \
                f"{step.spec.server} stores {held} envelopes of {step.channel!r} " \
                f"(at least {step.spec.at_least} expected)"
        offline = [n for n in nodes if not net.node(n).alive]
        if offline:
            return False, f"offline, cannot be asked: {', '.join(offline)}"
        if not nodes:
            return False, "no node to check"
        if step.kind == "converged":
            net.assert_converged(cid, nodes)
            count = len(net.history(nodes[0], cid))
            return True, f"{len(nodes)} nodes, {count} messages"
        missing = [n for n in nodes if cid not in net.core(n).hub.channels]
        if step.kind == "history_equal":
            if missing:
                return False, f"{', '.join(missing)} do not hold the channel"
            return self._history_equal(step, cid, nodes)
        if isinstance(step.spec, CountSpec | OrderSpec | KeyStatusSpec):
            if missing:
                return False, f"{', '.join(missing)} do not hold the channel"
            return self._per_node(step, cid, nodes)
        if step.kind == "rank_is":
            wrong = []
            for n in nodes:
                ranks = dict(net.core(n).hub.get(cid).member_ranks()) \
                    if n not in missing else {}
                rank = ranks.get(net.did(step.target), "absent")
                if rank != step.rank:
                    wrong.append(f"{n} sees {rank}")
            if wrong:
                return False, f"{step.target} is not {step.rank}: {'; '.join(wrong)}"
            return True, f"{step.target} is {step.rank} at {len(nodes)} nodes"
        posts = self.labels.get(step.msg, [])
        if not posts:
            return False, f"{step.msg!r} was never posted (its step failed or was skipped)"
        ids = {p.msg_id for p in posts}
        problems: list[str] = []
        for n in nodes:
            shown = {m.id: m for m in net.history(n, cid)} if n not in missing else {}
            if step.kind == "visible_to":
                absent = [p.msg_id for p in posts if p.msg_id not in shown]
                if absent:
                    problems.append(f"{n} does not show {len(absent)} of {len(posts)}: "
                                    f"{', '.join(absent[:3])}")
                elif step.text and any(shown[i].text != step.text for i in ids):
                    texts = sorted({shown[i].text for i in ids})
                    problems.append(f"{n} shows {texts[:3]}, not {step.text!r}")
            elif step.kind == "hidden_from":
                seen = sorted(ids & set(shown))
                if seen:
                    problems.append(f"{n} shows {len(seen)} of {len(posts)}: "
                                    f"{', '.join(seen[:3])}")
            elif step.kind in ("deleted", "edited", "reactions"):
                problems += self._message_state(step, n, posts, shown)
            else:  # cannot_decrypt
                readable = self._readable(n, cid, posts)
                if readable:
                    problems.append(f"{n} holds the key of {len(readable)} of {len(posts)}: "
                                    f"{', '.join(readable[:3])}")
        if problems:
            return False, "; ".join(problems)
        what = {"visible_to": "shown at", "hidden_from": "hidden from",
                "cannot_decrypt": "unreadable at", "deleted": "deleted at",
                "edited": "edited at", "reactions": "with those reactions at"}[step.kind]
        return True, f"{len(posts)} message(s) {what} {len(nodes)} nodes"

    def _message_state(self, step: Step, n: str, posts: list[_Posted],
                       shown: dict[str, MessageView]) -> list[str]:
        """What is wrong with a labelled message at ``n`` for deleted/edited/reactions."""
        problems = []
        for post in posts:
            m = shown.get(post.msg_id)
            if m is None:
                problems.append(f"{n} does not show {post.msg_id}")
            elif step.kind == "deleted" and not m.deleted:
                problems.append(f"{n} shows {post.msg_id} not deleted: {m.text!r}")
            elif step.kind == "edited" and (m.edited is None or m.deleted):
                problems.append(f"{n} shows {post.msg_id} "
                                f"{'deleted' if m.deleted else 'never edited'}: {m.text!r}")
            elif step.kind == "edited" and step.text and m.text != step.text:
                problems.append(f"{n} shows {post.msg_id} edited to {m.text!r}, not "
                                f"{step.text!r}")
            elif isinstance(step.spec, ReactionsSpec):
                who = sorted(self._who(d) for d in m.reactions.get(step.emoji, ()))
                if who != list(step.spec.by):
                    problems.append(f"{n} shows {step.emoji!r} on {post.msg_id} by "
                                    f"{who or 'nobody'}, not {list(step.spec.by) or 'nobody'}")
        return problems

    def _per_node(self, step: Step, cid: bytes, nodes: list[str]) -> tuple[bool, str]:
        """message_count, order and key_status: one reading per node."""
        spec = step.spec
        problems = []
        for n in nodes:
            if isinstance(spec, KeyStatusSpec):
                status = self.net.core(n).hub.get(cid).key_status()
                if status != spec.status:
                    problems.append(f"{n} is {status}")
                continue
            history = self.net.history(n, cid)
            if isinstance(spec, CountSpec):
                if len(history) != spec.messages:
                    problems.append(f"{n} shows {len(history)}")
                continue
            assert isinstance(spec, OrderSpec)
            position = {m.id: i for i, m in enumerate(history)}
            ids = [self.labels[label][0].msg_id if self.labels.get(label) else ""
                   for label in spec.msgs]
            absent = [label for label, i in zip(spec.msgs, ids, strict=True)
                      if i not in position]
            if absent:
                problems.append(f"{n} does not show {', '.join(absent)}")
                continue
            actual = sorted(spec.msgs, key=lambda label: position[ids[spec.msgs.index(label)]])
            if actual != list(spec.msgs):
                problems.append(f"{n} shows them as {', '.join(actual)}")
        if isinstance(spec, KeyStatusSpec):
            expect = f"key status {spec.status}"
        elif isinstance(spec, CountSpec):
            expect = f"{spec.messages} messages"
        else:
            assert isinstance(spec, OrderSpec)
            expect = f"order {', '.join(spec.msgs)}"
        if problems:
            return False, f"expected {expect}: {'; '.join(problems)}"
        return True, f"{expect} at {len(nodes)} nodes"

    def _fired(self, spec: FiredSpec) -> tuple[bool, str]:
        count = self.net.fired(spec.fault, spec.between)
        where = f" between {spec.between[0]} and {spec.between[1]}" if spec.between else ""
        bound = f"at least {spec.at_least}" + (f" and at most {spec.at_most}"
                                                if spec.at_most is not None else "")
        passed = count >= spec.at_least and (spec.at_most is None or count <= spec.at_most)
        return passed, f"{spec.fault} fired {count} times{where} ({bound} expected)"

    def _readable(self, name: str, cid: bytes, posts: list[_Posted]) -> list[str]:
        """Messages of ``posts`` whose epoch secret ``name`` holds (or shows in clear)."""
        state = self.net.core(name).hub.channels.get(cid)
        if state is None:
            return []
        out = []
        shown = {m.id for m in state.history()}
        for post in posts:
            epoch = self._epoch(post)
            if post.msg_id in shown or epoch is None or epoch in state.group.secrets:
                out.append(post.msg_id)
        return out

    def _epoch(self, post: _Posted) -> bytes | None:
        """The epoch ``post`` was written under, from a live replica that holds it."""
        names = [post.node, *self.net.members(post.channel)]
        for name in names:
            node = self.net.node(name)
            if not node.alive or post.channel not in node.core.hub.channels:
                continue
            state = node.core.hub.get(post.channel)
            for record in state.claims(post.msg_id):
                if record.author == node.did or name != post.node:
                    return state.epoch_of(record.env)
        return None

    def _history_equal(self, step: Step, cid: bytes, nodes: list[str]) -> tuple[bool, str]:
        net = self.net

        def rows(name: str) -> list[str]:
            out = []
            for m in net.history(name, cid):
                reactions = {e: sorted(self._who(d) for d in dids)
                             for e, dids in sorted(m.reactions.items())}
                out.append(f"{self._who(m.author)}: {m.text!r} edited={m.edited is not None} "
                           f"deleted={m.deleted} reactions={reactions} [{m.id}]")
            return out

        reference = rows(nodes[0])
        for name in nodes[1:]:
            other = rows(name)
            if other != reference:
                diff = _first_difference(reference, other)
                return False, (f"{nodes[0]} ({len(reference)} messages) and {name} "
                               f"({len(other)}) differ: {diff}")
        if step.texts is not None:
            texts = [m.text for m in net.history(nodes[0], cid)]
            if texts != list(step.texts):
                return False, (f"{nodes[0]} shows {texts[:10]}{' …' if len(texts) > 10 else ''}"
                               f", expected {list(step.texts)[:10]}")
        return True, f"{len(nodes)} nodes show the same {len(reference)} messages"

    def _who(self, did: str) -> str:
        try:
            return self.net.name_of(did)
        except KeyError:
            return did[:20]


def _first_difference(a: list[str], b: list[str]) -> str:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"at message {index + 1}: {x} / {y}"
    longer, which = (a, "first") if len(a) > len(b) else (b, "second")
    common = min(len(a), len(b))
    return f"the {which} has {len(longer) - common} more, from {longer[common]}"


def _render(template: str, node: str, index: int, number: int) -> str:
    values = {"node": node, "i": str(index), "n": str(number)}
    return re.sub(r"\{(\w*)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _describe(step: Step) -> str:
    """A short account of a step for the trace."""
    k = step.kind
    if k == "post":
        who = "all" if step.all_nodes else ",".join(step.nodes or (step.node,))
        return (f"post {step.count} by {who}" + (f" as {step.label}" if step.label else "")
                + (f" burst {step.burst}" if step.burst > 1 else "")
                + (f" every {step.interval:g}s" if step.interval else ""))
    if k in ("edit", "delete", "react"):
        return f"{k} {step.msg} by {step.node}"
    if k in MOD_STEPS:
        return f"{step.node} {k}s {step.target}"
    if k == "partition":
        if step.random_groups:
            return f"partition into {step.random_groups} random groups ({step.mode})"
        return f"partition {' | '.join(','.join(g) for g in step.groups)} ({step.mode})"
    if k in ("offline", "online", "rotate"):
        lost = f" losing its own last {step.lose_own_last}" if step.lose_own_last else \
            f" losing the last {step.lose_last}" if step.lose_last else ""
        return f"{k} {','.join(step.nodes or (step.node,))}{lost}"
    if k == "advance":
        return f"advance {step.seconds:g}s"
    if k in ("drop", "duplicate", "reorder"):
        return f"{k} rate {step.rate:g}"
    if k == "faults":
        return f"faults {step.preset}"
    if k == "break":
        return f"break {'-'.join(step.nodes)}{' (silent)' if step.silent else ''}"
    if k == "repeat":
        return f"repeat {step.times} times"
    if k in ("isolate", "reconnect"):
        return f"{k} {','.join(step.nodes or (step.node,))}"
    if isinstance(step.spec, BlockSpec):
        return f"{k} {step.spec.src}->{step.spec.dst}"
    if isinstance(step.spec, LinkSpec):
        lat = step.spec.latency_ms
        a, b = step.spec.between
        arrow = "->" if step.spec.one_way else "<->"
        return f"link {a}{arrow}{b} loss {step.spec.loss:g}" + \
            (f" latency {lat[0]:g}-{lat[1]:g}ms" if lat else "")
    if isinstance(step.spec, HostileSpec):
        return f"hostile {step.spec.kind} from {step.node}" + \
            (f" as {step.label}" if step.label else "")
    if isinstance(step.spec, FiredSpec):
        return f"fired {step.spec.fault}"
    if isinstance(step.spec, ServerHoldsSpec):
        return f"server_holds {step.spec.server}"
    if step.msg:
        return f"{k} {step.msg}"
    if k == "rank_is":
        return f"rank_is {step.target} {step.rank}"
    return k


def run_scenario(scenario: Scenario, seed: int | None = None,
                 messages: int | None = None) -> RunResult:
    """Run ``scenario`` with ``seed`` (default: the file's), optionally scaled to about
    ``messages`` posts (:meth:`Scenario.with_messages`)."""
    if messages is not None:
        scenario = scenario.with_messages(messages)
    used = scenario.seed if seed is None else seed
    if not 0 <= used <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}")
    runner = _Runner(scenario, used)
    error = runner.run()
    return RunResult(scenario, used, runner.net, runner.verdicts, error, runner.markers,
                     runner.posted)


def run_scenario_file(path: str | Path, seed: int | None = None,
                      messages: int | None = None) -> RunResult:
    """:func:`load_scenario` then :func:`run_scenario`."""
    return run_scenario(load_scenario(path), seed, messages)


__all__ = [
    "MAX_MESSAGES",
    "MAX_NODES",
    "MAX_STEPS",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SharedVerifier",
    "Step",
    "Verdict",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "run_scenario_file",
]
