"""The scenario model: what a validated scenario file says, and what its run decided.

This module owns the data every other part of the scenario engine shares and imports
none of them (:mod:`.parser` builds a :class:`Scenario`, :mod:`.runner` executes it,
:mod:`.report` renders the :class:`Verdict` s): the limits a file must respect,
:class:`ScenarioError`, the top-level tables (:class:`ChannelSpec`,
:class:`NetworkSpec`, :class:`ServerSpec`), one frozen dataclass per step kind, and
:class:`Scenario` itself.

A step is a :class:`Repeat` or one of the closed unions :data:`Action` and
:data:`Assertion` (together :data:`Step`): code that handles steps matches on the
variant and ends in ``typing.assert_never``, so a new step kind is a type error
wherever it is not handled.
Several ``do`` kinds with the same fields share a variant (:class:`Moderate` for the
eight moderation actions, :class:`SetRate` for ``drop``/``duplicate``/``reorder``);
``kind`` is always the ``do`` text of the file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, assert_never

from p2pchat.testing.sim import FAULT_COUNTERS, HOSTILE_KINDS

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
#: Distinct envelope verdicts the runner's shared verifier keeps before starting over.
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
#: Most bootstrap servers a scenario may declare (a node uses at most 8, as ``run``).
MAX_SERVERS = 8
#: Longest a ``hostile`` ``backdated`` post may be back-dated, days.
MAX_BACKDATE_DAYS = 3650.0
#: Default back-dating of a ``backdated`` post, days.
DEFAULT_BACKDATE_DAYS = 30.0
#: Largest count ``fired`` / ``server_holds`` may ask for.
MAX_COUNT = 10**9

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RANKS = ("owner", "moderator", "member", "muted", "banned", "absent")
MOD_STEPS = ("ban", "unban", "op", "deop", "kick", "mute", "unmute", "add")
ASSERTIONS = ("converged", "history_equal", "visible_to", "hidden_from", "cannot_decrypt",
              "rank_is", "deleted", "edited", "reactions", "message_count", "order",
              "key_status", "fired", "server_holds")
#: What ``key_status`` can expect (``ChannelState.key_status()``).
KEY_STATUSES = ("member", "waiting", "removed")
#: What a ``hostile`` step can send, and the faults ``fired`` can count (the simulator's).
HOSTILE = HOSTILE_KINDS
FAULTS = tuple(FAULT_COUNTERS)
#: Hostile kinds whose message has an id (so the step may label it).
HOSTILE_WITH_ID = ("forged", "backdated", "equivocate")

RateFault = Literal["drop", "duplicate", "reorder"]


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


# --- the top-level tables -----------------------------------------------------------------


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


# --- steps --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _StepBase:
    """What every step has: where it is in the file."""

    KIND: ClassVar[str] = ""
    line: int
    number: int  # position in the file (1-based, inner steps of a repeat included)

    @property
    def kind(self) -> str:
        """The step's ``do`` text."""
        return self.KIND

    def where(self) -> str:
        return f"step {self.number} (line {self.line})"


def _all(*groups: Sequence[str]) -> tuple[str, ...]:
    return tuple(name for group in groups for name in group)


# actions


@dataclass(frozen=True, kw_only=True)
class Post(_StepBase):
    """``post``: ``count`` messages, ``burst`` at a time, spread over ``nodes``."""

    KIND: ClassVar[str] = "post"
    channel: str
    nodes: tuple[str, ...] = ()
    all_nodes: bool = False  # ``nodes = "all"``: the live members that may write
    text: str = ""
    label: str = ""  # ``id``: names what the post wrote
    count: int = 1
    burst: int = 1
    interval: float = 0.0
    pick: str = "cycle"
    fails: str = ""

    def names(self) -> tuple[str, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True)
class Edit(_StepBase):
    """``edit``: the author of a labelled message changes its text."""

    KIND: ClassVar[str] = "edit"
    channel: str
    node: str
    msg: str
    text: str
    fails: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.node,)


@dataclass(frozen=True, kw_only=True)
class Delete(_StepBase):
    """``delete``: the author of a labelled message deletes it."""

    KIND: ClassVar[str] = "delete"
    channel: str
    node: str
    msg: str
    fails: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.node,)


@dataclass(frozen=True, kw_only=True)
class React(_StepBase):
    """``react``: ``node`` adds (``on``) or removes a reaction to a labelled message."""

    KIND: ClassVar[str] = "react"
    channel: str
    node: str
    msg: str
    emoji: str = DEFAULT_EMOJI
    on: bool = True
    fails: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.node,)


@dataclass(frozen=True, kw_only=True)
class Moderate(_StepBase):
    """A moderation action (``ban``, ``unban``, ``op``, …) by ``node`` on ``target``."""

    action: str  # one of MOD_STEPS
    channel: str
    node: str
    target: str
    reason: str = ""
    fails: str = ""

    @property
    def kind(self) -> str:
        return self.action

    def names(self) -> tuple[str, ...]:
        return (self.node, self.target)


@dataclass(frozen=True, kw_only=True)
class Rotate(_StepBase):
    """``rotate``: a key rotation by ``node``."""

    KIND: ClassVar[str] = "rotate"
    channel: str
    node: str
    fails: str = ""

    def names(self) -> tuple[str, ...]:
        return (self.node,)


@dataclass(frozen=True, kw_only=True)
class Partition(_StepBase):
    """``partition``: split the network into ``groups`` (or ``random_groups`` of them)."""

    KIND: ClassVar[str] = "partition"
    groups: tuple[tuple[str, ...], ...] = ()
    random_groups: int = 0
    mode: str = "reset"  # or "stall"

    def names(self) -> tuple[str, ...]:
        return _all(*self.groups)


@dataclass(frozen=True, kw_only=True)
class Heal(_StepBase):
    """``heal``: end every partition and one-way block."""

    KIND: ClassVar[str] = "heal"

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class Offline(_StepBase):
    """``offline``: crash ``nodes``, each losing its own newest ``lose_own_last`` writes."""

    KIND: ClassVar[str] = "offline"
    nodes: tuple[str, ...]
    lose_own_last: int = 0

    def names(self) -> tuple[str, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True)
class Online(_StepBase):
    """``online``: restart ``nodes`` from their stores, which lost ``lose_last`` writes."""

    KIND: ClassVar[str] = "online"
    nodes: tuple[str, ...]
    lose_last: int = 0

    def names(self) -> tuple[str, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True)
class Isolate(_StepBase):
    """``isolate``: cut ``nodes`` off from everyone while they keep running."""

    KIND: ClassVar[str] = "isolate"
    nodes: tuple[str, ...]
    mode: str = "reset"  # or "stall"

    def names(self) -> tuple[str, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True)
class Reconnect(_StepBase):
    """``reconnect``: end the isolation of ``nodes``."""

    KIND: ClassVar[str] = "reconnect"
    nodes: tuple[str, ...]

    def names(self) -> tuple[str, ...]:
        return self.nodes


@dataclass(frozen=True, kw_only=True)
class Block(_StepBase):
    """``block``: bytes from ``src`` no longer reach ``dst`` (a one-way partition)."""

    KIND: ClassVar[str] = "block"
    src: str
    dst: str

    def names(self) -> tuple[str, ...]:
        return (self.src, self.dst)


@dataclass(frozen=True, kw_only=True)
class Unblock(_StepBase):
    """``unblock``: end a ``block`` from ``src`` to ``dst``."""

    KIND: ClassVar[str] = "unblock"
    src: str
    dst: str

    def names(self) -> tuple[str, ...]:
        return (self.src, self.dst)


@dataclass(frozen=True, kw_only=True)
class Link(_StepBase):
    """``link``: per-link latency (ms, uniform) and loss; ``one_way``: first to second only."""

    KIND: ClassVar[str] = "link"
    between: tuple[str, str]
    latency_ms: tuple[float, float] | None = None
    loss: float = 0.0
    one_way: bool = False

    def names(self) -> tuple[str, ...]:
        return self.between


@dataclass(frozen=True, kw_only=True)
class Hostile(_StepBase):
    """``hostile``: what a misbehaving member sends (see ``SimNetwork.hostile``)."""

    KIND: ClassVar[str] = "hostile"
    channel: str
    node: str
    what: str  # the file's ``kind``: one of :data:`HOSTILE`
    to: tuple[str, ...] | None = None
    text: str = ""
    label: str = ""
    age_ms: int = round(DEFAULT_BACKDATE_DAYS * 86_400_000)

    def names(self) -> tuple[str, ...]:
        return (self.node, *(self.to or ()))


@dataclass(frozen=True, kw_only=True)
class Advance(_StepBase):
    """``advance``: let ``seconds`` of simulated time pass."""

    KIND: ClassVar[str] = "advance"
    seconds: float

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class Settle(_StepBase):
    """``settle``: run until the network is quiet (within ``timeout`` simulated seconds)."""

    KIND: ClassVar[str] = "settle"
    timeout: float = SETTLE_TIMEOUT

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class SetRate(_StepBase):
    """``drop``, ``duplicate`` or ``reorder``: that fault's rate for envelope frames."""

    fault: RateFault
    rate: float

    @property
    def kind(self) -> str:
        return self.fault

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class FaultPreset(_StepBase):
    """``faults``: every fault rate at once (``calm`` or ``chaos``)."""

    KIND: ClassVar[str] = "faults"
    preset: str

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class Break(_StepBase):
    """``break``: break the link ``between`` two nodes (a reset, or a silent black hole)."""

    KIND: ClassVar[str] = "break"
    between: tuple[str, str]
    silent: bool = False

    def names(self) -> tuple[str, ...]:
        return self.between


@dataclass(frozen=True, kw_only=True)
class Repeat(_StepBase):
    """``repeat``: run ``steps`` ``times`` times."""

    KIND: ClassVar[str] = "repeat"
    times: int
    steps: tuple[Step, ...]

    def names(self) -> tuple[str, ...]:
        return ()


# assertions: ``nodes`` are the observers (empty: see ``all_nodes``, else every live member
# in good standing); ``names()`` are the other nodes an assertion is about


@dataclass(frozen=True, kw_only=True)
class _AssertionBase(_StepBase):
    channel: str
    nodes: tuple[str, ...] = ()
    all_nodes: bool = False  # ``nodes = "all"``: every live holder of the channel

    def names(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True, kw_only=True)
class Converged(_AssertionBase):
    """``converged``: the replicas hold the same envelopes, heads, document and views."""

    KIND: ClassVar[str] = "converged"


@dataclass(frozen=True, kw_only=True)
class HistoryEqual(_AssertionBase):
    """``history_equal``: the histories are equal (and equal to ``texts``, if given)."""

    KIND: ClassVar[str] = "history_equal"
    texts: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class VisibleTo(_AssertionBase):
    """``visible_to``: the labelled message is in each history (with ``text``, if given)."""

    KIND: ClassVar[str] = "visible_to"
    msg: str
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class HiddenFrom(_AssertionBase):
    """``hidden_from``: the labelled message is shown to none of them."""

    KIND: ClassVar[str] = "hidden_from"
    msg: str


@dataclass(frozen=True, kw_only=True)
class CannotDecrypt(_AssertionBase):
    """``cannot_decrypt``: none shows it or holds the secret of the epoch that carried it."""

    KIND: ClassVar[str] = "cannot_decrypt"
    msg: str


@dataclass(frozen=True, kw_only=True)
class RankIs(_AssertionBase):
    """``rank_is``: every observer sees ``target`` (the file's ``of``) at ``rank``."""

    KIND: ClassVar[str] = "rank_is"
    target: str
    rank: str

    def names(self) -> tuple[str, ...]:
        return (self.target,)


@dataclass(frozen=True, kw_only=True)
class Deleted(_AssertionBase):
    """``deleted``: each shows the labelled message as deleted."""

    KIND: ClassVar[str] = "deleted"
    msg: str


@dataclass(frozen=True, kw_only=True)
class Edited(_AssertionBase):
    """``edited``: each shows it edited and not deleted (with ``text``, if given)."""

    KIND: ClassVar[str] = "edited"
    msg: str
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Reactions(_AssertionBase):
    """``reactions``: exactly the nodes ``by`` react to it with ``emoji``, at each."""

    KIND: ClassVar[str] = "reactions"
    msg: str
    by: tuple[str, ...]  # sorted
    emoji: str = DEFAULT_EMOJI

    def names(self) -> tuple[str, ...]:
        return self.by


@dataclass(frozen=True, kw_only=True)
class MessageCount(_AssertionBase):
    """``message_count``: every observer shows exactly ``messages`` messages."""

    KIND: ClassVar[str] = "message_count"
    messages: int


@dataclass(frozen=True, kw_only=True)
class Order(_AssertionBase):
    """``order``: the labelled messages appear in this order at every observer."""

    KIND: ClassVar[str] = "order"
    msgs: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class KeyStatus(_AssertionBase):
    """``key_status``: every observer's ``key_status()`` of the channel is ``status``."""

    KIND: ClassVar[str] = "key_status"
    status: str


@dataclass(frozen=True, kw_only=True)
class Fired(_StepBase):
    """``fired``: a fault happened between ``at_least`` and ``at_most`` times (on a link).

    About the network, not a channel: it has no observers."""

    KIND: ClassVar[str] = "fired"
    fault: str
    between: tuple[str, str] | None = None
    at_least: int = 1
    at_most: int | None = None

    def names(self) -> tuple[str, ...]:
        return self.between or ()


@dataclass(frozen=True, kw_only=True)
class ServerHolds(_AssertionBase):
    """``server_holds``: the server stores at least ``at_least`` envelopes of the channel."""

    KIND: ClassVar[str] = "server_holds"
    server: str
    at_least: int = 1

    def names(self) -> tuple[str, ...]:
        return (self.server,)


Action = (Post | Edit | Delete | React | Moderate | Rotate | Partition | Heal | Offline
          | Online | Isolate | Reconnect | Block | Unblock | Link | Hostile | Advance | Settle
          | SetRate | FaultPreset | Break)
#: The assertions that read messages by their label.
MessageAssertion = VisibleTo | HiddenFrom | CannotDecrypt | Deleted | Edited | Reactions
Assertion = (Converged | HistoryEqual | MessageAssertion | RankIs | MessageCount | Order
             | KeyStatus | Fired | ServerHolds)
#: A ``repeat`` is neither: it runs other steps (never another repeat).
Step = Action | Assertion | Repeat


def describe(step: Step) -> str:
    """A short account of a step, for the trace's ``== step`` lines."""
    match step:
        case Post():
            who = "all" if step.all_nodes else ",".join(step.nodes)
            return (f"post {step.count} by {who}" + (f" as {step.label}" if step.label else "")
                    + (f" burst {step.burst}" if step.burst > 1 else "")
                    + (f" every {step.interval:g}s" if step.interval else ""))
        case Edit() | Delete() | React():
            return f"{step.kind} {step.msg} by {step.node}"
        case Moderate():
            return f"{step.node} {step.kind}s {step.target}"
        case Partition():
            if step.random_groups:
                return f"partition into {step.random_groups} random groups ({step.mode})"
            return f"partition {' | '.join(','.join(g) for g in step.groups)} ({step.mode})"
        case Offline():
            lost = f" losing its own last {step.lose_own_last}" if step.lose_own_last else ""
            return f"offline {','.join(step.nodes)}{lost}"
        case Online():
            lost = f" losing the last {step.lose_last}" if step.lose_last else ""
            return f"online {','.join(step.nodes)}{lost}"
        case Rotate():
            return f"rotate {step.node}"
        case Advance():
            return f"advance {step.seconds:g}s"
        case SetRate():
            return f"{step.kind} rate {step.rate:g}"
        case FaultPreset():
            return f"faults {step.preset}"
        case Break():
            return f"break {'-'.join(step.between)}{' (silent)' if step.silent else ''}"
        case Repeat():
            return f"repeat {step.times} times"
        case Isolate() | Reconnect():
            return f"{step.kind} {','.join(step.nodes)}"
        case Block() | Unblock():
            return f"{step.kind} {step.src}->{step.dst}"
        case Link():
            lat = step.latency_ms
            a, b = step.between
            arrow = "->" if step.one_way else "<->"
            return f"link {a}{arrow}{b} loss {step.loss:g}" + \
                (f" latency {lat[0]:g}-{lat[1]:g}ms" if lat else "")
        case Hostile():
            return f"hostile {step.what} from {step.node}" + \
                (f" as {step.label}" if step.label else "")
        case Fired():
            return f"fired {step.fault}"
        case ServerHolds():
            return f"server_holds {step.server}"
        case VisibleTo() | HiddenFrom() | CannotDecrypt() | Deleted() | Edited() | Reactions():
            return f"{step.kind} {step.msg}"
        case RankIs():
            return f"rank_is {step.target} {step.rank}"
        case (Heal() | Settle() | Converged() | HistoryEqual() | MessageCount() | Order()
              | KeyStatus()):
            return step.kind
        case _:
            assert_never(step)


# --- the scenario -------------------------------------------------------------------------


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
        return planned_messages(self.steps)

    def with_messages(self, total: int) -> Scenario:
        """The same scenario with every post step's ``count`` scaled so that about ``total``
        messages are posted (each post step keeps at least one; labels keep their kind)."""
        planned = self.planned_messages()
        if total < 1 or planned == 0:
            raise ValueError("messages must be at least 1, and the scenario must post some")

        def scale(steps: tuple[Step, ...]) -> tuple[Step, ...]:
            out: list[Step] = []
            for s in steps:
                if isinstance(s, Post) and not (s.label and s.count == 1):
                    s = dataclasses.replace(s, count=max(1, round(s.count * total / planned)))
                elif isinstance(s, Repeat):
                    s = dataclasses.replace(s, steps=scale(s.steps))
                out.append(s)
            return tuple(out)

        return dataclasses.replace(self, steps=scale(self.steps))


def planned_messages(steps: Sequence[Step]) -> int:
    """How many messages ``steps`` post in all (repeats expanded)."""
    total = 0
    for s in steps:
        if isinstance(s, Post):
            total += s.count
        elif isinstance(s, Repeat):
            total += s.times * planned_messages(s.steps)
    return total


def executed_steps(steps: Sequence[Step]) -> int:
    """How many steps a run of ``steps`` executes (repeats expanded)."""
    return sum(1 + (s.times * executed_steps(s.steps) if isinstance(s, Repeat) else 0)
               for s in steps)


# --- what a run decided -------------------------------------------------------------------


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

    def to_json(self) -> dict[str, object]:
        return {"step": self.step, "line": self.line, "kind": self.kind,
                "passed": self.passed, "detail": self.detail}

    def where_text(self) -> str:
        return f"step {self.step}, line {self.line}"
