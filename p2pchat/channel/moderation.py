"""The moderation fold: ranks, bans, mutes, modes and topic from the modlog (DESIGN §4).

Theory of operation
-------------------
Every moderation action is an envelope (operation ``mod``) and a ``modlog``
entry. :func:`fold` is a pure function of those events and the envelope DAG's
"happened before" relation; it never looks at timestamps or arrival order, so
every replica holding the same envelopes computes the same result.

*Ranks.* owner (the founder; nobody outranks it) > moderator > member. Only an
author who, **in the action's own causal past**, strictly outranks the target
may act on it; granting moderator needs a rank strictly above moderator, so
only the owner grants or revokes it. ``topic`` and ``mode`` need moderator.

*Strata.* Because only the owner can make or unmake moderators, validity is
decided in three strata without any cycle:

1. the owner's actions: valid whenever well formed (no one can remove the owner);
2. moderators' actions: the author's rank in the action's past follows from
   valid owner actions alone; the action is **strongly removed** (invalid) if a
   valid owner action that revokes the author (``deop``, ``ban``, ``kick``) is
   concurrent with it -- which also defeats back-dating, since a back-dated
   action is concurrent with the revocation it tries to slip under;
3. members' actions: a member outranks no one, so every moderation action by a
   plain member is invalid.

*Resolving a flag* (banned, muted, moderator, a mode, the topic) over a set of
valid events: take the *frontier*, the events that are not in the causal past
of another event of the set. A revocation in the frontier wins (ban beats a
concurrent unban, deop beats a concurrent op, mute beats unmute); an unban
that causally follows the ban is itself the frontier, so it restores. Values
without a "stronger" side (topic, mode on/off) take the frontier event with
the greatest envelope id.

*Membership.* In an open channel (the default) the channel key is the
capability: anyone who writes is a member, and ``kick`` lists them as gone
until they write again (IRC semantics). In ``invite-only`` mode a moderator
``add``s each new member; a post whose author was kicked, or neither added
nor a writer before the channel became invite-only, in the post's causal
past is hidden, unless the author is a moderator or the owner there.

*Hiding posts.* A post by X is hidden if X is banned or muted in the post's own
causal past, or if a valid ban or mute of X is concurrent with the post (the
post did not see it: strong removal again, so back-dated posts are hidden),
or if the channel was ``moderated`` in its past and X was not a moderator, or
``invite-only`` and X was not a member. Posts in the ban's causal past stay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: Actions and what they take: a target DID, or a value.
TARGET_ACTIONS = ("add", "kick", "ban", "unban", "mute", "unmute", "op", "deop")
VALUE_ACTIONS = ("topic", "mode")
ACTIONS = TARGET_ACTIONS + VALUE_ACTIONS
MODES = ("invite-only", "moderated")
MAX_REASON_LENGTH = 500
MAX_TOPIC_LENGTH = 500

OWNER, MODERATOR, MEMBER = 3, 2, 1
RANK_NAMES = {OWNER: "owner", MODERATOR: "moderator", MEMBER: "member"}
#: actions that take a moderator's rank away (strong removal of its concurrent actions)
REVOKES = ("deop", "ban", "kick")

#: ``in_past(a, b)``: envelope ``a`` is in the causal past of envelope ``b`` (a != b)
InPast = Callable[[bytes, bytes], bool]
#: ``wrote_before(did, b)``: some envelope by ``did`` is in the causal past of envelope ``b``
WroteBefore = Callable[[str, bytes], bool]


def _never(did: str, env: bytes) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class ModEvent:
    """One well-formed modlog entry (structure already checked; authority not yet)."""

    env: bytes  # envelope id: the attribution, and the tie-breaker
    ulid: str
    author: str
    action: str
    target: str = ""  # DID, for TARGET_ACTIONS
    value: str = ""  # topic text or mode name
    on: bool = True  # mode set or cleared
    reason: str = ""
    ts: int = 0  # author's clock: shown, never used to decide anything
    #: the author's device and the envelope's seq on it, if known: a device's envelopes
    #: form a chain, so of one device's events only the highest seq can be in a frontier
    device: bytes = b""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    applied: bool
    why: str = ""


@dataclass
class ModState:
    """The fold's result over the whole known DAG."""

    owner: str
    moderators: set[str] = field(default_factory=set)
    banned: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)
    kicked: set[str] = field(default_factory=set)
    modes: dict[str, bool] = field(default_factory=dict)
    topic: str = ""
    verdicts: dict[bytes, Verdict] = field(default_factory=dict)
    #: valid events, by envelope id (the input to post hiding)
    valid: list[ModEvent] = field(default_factory=list)
    #: valid events by their target DID
    by_target: dict[str, list[ModEvent]] = field(default_factory=dict)

    def rank(self, did: str) -> int:
        if did == self.owner:
            return OWNER
        return MODERATOR if did in self.moderators else MEMBER


def _frontier(events: list[ModEvent], in_past: InPast) -> list[ModEvent]:
    """The events not in the causal past of another one."""
    latest: dict[tuple[str, bytes], ModEvent] = {}
    rest: list[ModEvent] = []
    for e in events:  # a device's chain is linear: only its highest seq can be maximal
        if e.seq:
            key = (e.author, e.device)
            if key not in latest or latest[key].seq < e.seq:
                latest[key] = e
        else:
            rest.append(e)
    candidates = list(latest.values()) + rest
    return [e for e in candidates
            if not any(o is not e and in_past(e.env, o.env) for o in candidates)]


def resolve_flag(events: list[ModEvent], strong: str, weak: str, in_past: InPast) -> bool | None:
    """Resolve ``strong``/``weak`` events (e.g. ban/unban): True, False, or None if none."""
    relevant = [e for e in events if e.action in (strong, weak)]
    if not relevant:
        return None
    return any(e.action == strong for e in _frontier(relevant, in_past))


def latest(events: list[ModEvent], in_past: InPast) -> ModEvent | None:
    """The frontier event with the greatest envelope id (for values with no strong side)."""
    front = _frontier(events, in_past)
    return max(front, key=lambda e: e.env) if front else None


def _is_moderator(did: str, owner_events: list[ModEvent], in_past: InPast) -> bool:
    """Moderator rank from valid owner events: op, unless a revocation is in the frontier."""
    relevant = [e for e in owner_events if e.target == did and e.action in ("op", *REVOKES)]
    if not relevant:
        return False
    return all(e.action == "op" for e in _frontier(relevant, in_past))


def check_authority(event: ModEvent, author_rank: int, target_rank: int) -> str:
    """Why ``event`` may not count given the ranks in its past ('' if it may)."""
    if event.action in VALUE_ACTIONS:
        return "" if author_rank >= MODERATOR else f"{event.action} needs moderator rank"
    if event.target == event.author:
        return "acting on oneself"
    if author_rank <= target_rank:
        return (f"author ({RANK_NAMES[author_rank]}) does not outrank the target "
                f"({RANK_NAMES[target_rank]})")
    if event.action in ("op", "deop") and author_rank <= MODERATOR:
        return "granting or revoking moderator needs a rank above moderator"
    if author_rank < MODERATOR:
        return "needs moderator rank"
    return ""


def _decide(e: ModEvent, owner: str, owner_valid: list[ModEvent], in_past: InPast) -> str:
    """Why a non-owner action does not count, from owner actions alone ('' if it may)."""
    past_owner = [o for o in owner_valid if in_past(o.env, e.env)]
    author_rank = MODERATOR if _is_moderator(e.author, past_owner, in_past) else MEMBER
    if author_rank < MODERATOR:
        return "needs moderator rank"
    target_rank = MEMBER
    if e.action in TARGET_ACTIONS:
        target_rank = (OWNER if e.target == owner else
                       MODERATOR if _is_moderator(e.target, past_owner, in_past) else MEMBER)
    why = check_authority(e, author_rank, target_rank)
    if why:
        return why
    revoked = _revoked_concurrently(e.author, e.env, owner_valid, in_past)
    if revoked is not None:
        return f"author's rank was revoked ({revoked.action}) concurrently (strong removal)"
    return ""


def _revoked_concurrently(did: str, env: bytes, owner_valid: list[ModEvent], in_past: InPast
                          ) -> ModEvent | None:
    """A valid owner revocation of ``did`` concurrent with envelope ``env``, if any."""
    for r in owner_valid:
        if r.target == did and r.action in REVOKES and not in_past(r.env, env) \
                and not in_past(env, r.env):
            return r
    return None


def fold(owner: str, events: Iterable[ModEvent], in_past: InPast) -> ModState:
    """Validate every event against its causal past and resolve the state of the channel."""
    todo = sorted(events, key=lambda e: e.env)
    state = ModState(owner)
    owner_valid: list[ModEvent] = []
    rest: list[ModEvent] = []
    # stratum 1: the owner outranks everyone, so only acting on itself is refused
    for e in todo:
        if e.author != owner:
            rest.append(e)
            continue
        why = check_authority(e, OWNER, OWNER if e.target == owner else MEMBER) \
            if e.action in TARGET_ACTIONS else ""
        state.verdicts[e.env] = Verdict(not why, why)
        if not why:
            owner_valid.append(e)
    # stratum 2 and 3: everyone else; ranks in an event's past come from owner events,
    # and an author banned in the event's past (by anyone's valid ban) holds no rank.
    # Deciding a ban only looks at bans in *its* past, so the recursion ends.
    bans_of: dict[str, list[ModEvent]] = {}
    for e in todo:
        if e.action in ("ban", "unban"):
            bans_of.setdefault(e.target, []).append(e)
    owner_set = {e.env for e in owner_valid}
    why_of: dict[bytes, str] = {e.env: "" for e in owner_valid}
    base: dict[bytes, str] = {}  # verdicts from owner actions alone

    def decide(root: ModEvent) -> str:
        # depth-first over "bans of my author in my past" (acyclic: always further back),
        # with an explicit stack, so a long history of bans cannot exhaust the recursion
        stack = [root]
        while stack:
            e = stack[-1]
            if e.env in why_of:
                stack.pop()
                continue
            if e.env not in base:
                base[e.env] = _decide(e, owner, owner_valid, in_past)
            why = base[e.env]
            if not why:
                past_bans = [b for b in bans_of.get(e.author, []) if in_past(b.env, e.env)]
                undecided = [b for b in past_bans if b.author != owner and b.env not in why_of]
                if undecided:
                    stack.extend(undecided)
                    continue
                valid_bans = [b for b in past_bans if b.env in owner_set
                              or (b.author != owner and why_of[b.env] == "")]
                if resolve_flag(valid_bans, "ban", "unban", in_past):
                    why = "author was banned in the action's causal past"
            why_of[e.env] = why
            stack.pop()
        return why_of[root.env]

    others_valid: list[ModEvent] = []
    for e in rest:
        why = decide(e)
        state.verdicts[e.env] = Verdict(not why, why)
        if not why:
            others_valid.append(e)
    valid = sorted(owner_valid + others_valid, key=lambda e: e.env)
    state.valid = valid
    for e in valid:
        if e.target:
            state.by_target.setdefault(e.target, []).append(e)
    for did, mine in state.by_target.items():
        banned = bool(resolve_flag(mine, "ban", "unban", in_past))
        if banned:
            state.banned.add(did)
        elif _is_moderator(did, owner_valid, in_past) and did != owner:
            state.moderators.add(did)  # a banned member holds no rank
        if resolve_flag(mine, "mute", "unmute", in_past):
            state.muted.add(did)
        if resolve_flag(mine, "kick", "add", in_past):
            state.kicked.add(did)  # open channels: until they write again (ChannelState)
    for mode in MODES:
        last = latest([e for e in valid if e.action == "mode" and e.value == mode], in_past)
        state.modes[mode] = bool(last and last.on)
    topic = latest([e for e in valid if e.action == "topic"], in_past)
    state.topic = topic.value if topic else ""
    return state


def hidden_by(author: str, post: bytes, state: ModState, in_past: InPast,
              wrote_before: WroteBefore = _never) -> str:
    """Why moderation hides the post ``post`` by ``author`` ('' if it does not)."""
    if author == state.owner:
        return ""
    mine = state.by_target.get(author, [])
    for strong, weak in (("ban", "unban"), ("mute", "unmute")):
        relevant = [e for e in mine if e.action in (strong, weak)]
        if not relevant:
            continue
        past = [e for e in relevant if in_past(e.env, post)]
        done = {"ban": "banned", "mute": "muted"}[strong]
        if resolve_flag(past, strong, weak, in_past):
            return f"author {done} before posting"
        if any(e.action == strong and not in_past(post, e.env) and not in_past(e.env, post)
               for e in relevant):
            return f"author {done} concurrently (strong removal)"
    modes = {mode: latest([e for e in state.valid if e.action == "mode" and e.value == mode
                            and in_past(e.env, post)], in_past) for mode in MODES}
    if not any(last is not None and last.on for last in modes.values()):
        return ""
    owner_events = [e for e in state.valid if e.author == state.owner]
    past_owner = [e for e in owner_events if in_past(e.env, post)]
    if _is_moderator(author, past_owner, in_past) \
            and _revoked_concurrently(author, post, owner_events, in_past) is None:
        return ""  # a moderator whose rank was not revoked behind the post's back
    last = modes["moderated"]
    if last is not None and last.on:
        return "channel was moderated and the author is not a moderator"
    last = modes["invite-only"]
    if last is not None and last.on:
        # a kick beats a concurrent add; None: never added, but someone who wrote before
        # the channel became invite-only stays a member (IRC's +i: no new joins)
        kicked = resolve_flag([e for e in mine if in_past(e.env, post)], "kick", "add", in_past)
        if kicked or (kicked is None and not wrote_before(author, last.env)):
            return "channel was invite-only and the author was not added"
        if any(e.action == "kick" and not in_past(e.env, post) and not in_past(post, e.env)
               for e in mine):
            return "author kicked concurrently (strong removal)"
    return ""
    owner_events = [e for e in state.valid if e.author == state.owner and in_past(e.env, post)]
    if _is_moderator(author, owner_events, in_past):
        return ""
    last = modes["moderated"]
    if last is not None and last.on:
        return "channel was moderated and the author is not a moderator"
    last = modes["invite-only"]
    if last is not None and last.on:
        # a kick beats a concurrent add; None: never added, but someone who wrote before
        # the channel became invite-only stays a member (IRC's +i: no new joins)
        kicked = resolve_flag([e for e in mine if in_past(e.env, post)], "kick", "add", in_past)
        if kicked or (kicked is None and not wrote_before(author, last.env)):
            return "channel was invite-only and the author was not added"
    return ""
