"""Group keys inside one channel: epochs, shares, joins, and which epoch to write with.

Theory of operation
-------------------
A channel's content is encrypted under *epochs*. An epoch is defined by a **bundle**
(:mod:`p2pchat.channel.keys`): a random secret sealed to each recipient's prekey,
signed by its distributor; the epoch id is the bundle's hash. Bundles, **history
shares** (secrets of existing epochs sealed to some members), **joins** (an invitee's
capability proof) and **key requests** are operations in the *clear epoch*, so a
replica without any group key can read them.

Two different questions, answered at two different times:

* **Can this replica decrypt?** Any bundle or share sealed to one of our prekeys is
  opened as soon as its envelope decrypts (:meth:`GroupKeys.harvest`), before the
  envelope is applied and whatever its causal position: the signatures and the key
  commitment authenticate the secret. A secret from a share is kept only once the
  commitment of the epoch's bundle confirms it.
* **Which epochs count?** Decided over the folded DAG, like moderation, and recomputed
  when it changes (:meth:`GroupKeys.view`). An epoch is *valid* if its distributor is
  the founder or held a valid parent epoch, was not removed (banned, or kicked and not
  rejoined) in the bundle's causal past, and no recipient was removed in that past.
  *Holders* of an epoch are its distributor, its recipients and the recipients of valid
  shares of it. *Heads* are valid epochs that no valid epoch names as a parent.

A sender writes with the smallest-id head epoch that it holds, whose holders include
nobody removed now, and that is not due for routine rotation (ROTATE_EVERY envelopes,
ROTATE_AGE_MS). If there is none it **rotates**: a new secret sealed to every current
member (their freshest prekey; the identity key only for a member that never published
one), parents = all heads. Every replica that sees the same DAG computes the same heads,
so concurrent rotations converge on the smallest id without coordination, and a member
rotates at most once per set of heads (storm suppression).

Group keys read the replica they belong to through :class:`Replica` (a narrow view:
this module does not know the replica's class). Nothing here does I/O: secrets learnt
go to the current call's :class:`~p2pchat.channel.records.Outcome`, which the replica
returns to the hub to persist; the hub acts on ``admissions`` and ``requests``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from p2pchat.channel import moderation as mod
from p2pchat.channel.keys import (
    KeyError_,
    Prekey,
    identity_prekey,
    identity_prekey_id,
    key_commitment,
    open_bundle,
    open_share,
    read_bundle,
    read_share,
)
from p2pchat.channel.moderation import ModEvent, ModState
from p2pchat.channel.records import Outcome
from p2pchat.identity import Identity

#: Routine rotation: after this many messages in an epoch (a multi-post envelope
#: counts each of its posts; a burst is cut at the boundary)…
ROTATE_EVERY = 100
#: …or when the epoch is this old.
ROTATE_AGE_MS = 7 * 24 * 3600 * 1000
#: Channel history policies (chosen at creation, in the genesis operation).
POLICIES = ("history", "ephemeral")
#: In ``ephemeral`` channels, secrets of epochs superseded this long ago are deleted.
EPHEMERAL_WINDOW_MS = 24 * 3600 * 1000
#: Most epochs one key request may name.
MAX_REQUEST_EPOCHS = 512

PrivateLookup = Callable[[bytes], "bytes | None"]


class Replica(Protocol):
    """What group keys read of the channel replica they belong to."""

    @property
    def channel_id(self) -> bytes: ...

    @property
    def identity(self) -> Identity: ...

    @property
    def founder(self) -> str: ...

    @property
    def policy(self) -> str: ...

    @property
    def prekeys(self) -> Mapping[str, Mapping[bytes, Prekey]]: ...

    @property
    def vector(self) -> Mapping[tuple[str, bytes], int]: ...

    @property
    def mod_events(self) -> Sequence[ModEvent]: ...

    @property
    def sealed(self) -> Collection[bytes]: ...

    def moderation(self) -> ModState: ...

    def in_past(self, ancestor: bytes, env_id: bytes) -> bool: ...

    def order_of(self, env_id: bytes) -> int: ...

    def prekey_of(self, did: str, now_ms: int) -> Prekey | None: ...

    def forget_message_keys(self, epoch: bytes) -> None: ...


@dataclass(slots=True)
class EpochInfo:
    epoch: bytes
    env: bytes  # the envelope that carried the bundle
    distributor: str
    parents: tuple[bytes, ...]
    recipients: tuple[bytes, ...]  # prekey ids
    created_ms: int
    commitment: bytes


@dataclass(slots=True)
class ShareInfo:
    env: bytes
    distributor: str
    epochs: tuple[bytes, ...]
    recipients: tuple[bytes, ...]


@dataclass(slots=True)
class JoinInfo:
    env: bytes
    did: str
    inviter: str
    expires_ms: int
    ts: int


@dataclass(slots=True)
class RequestInfo:
    env: bytes
    did: str
    epochs: tuple[bytes, ...]


@dataclass(slots=True)
class View:
    valid: dict[bytes, bool] = field(default_factory=dict)
    why: dict[bytes, str] = field(default_factory=dict)
    holders: dict[bytes, set[str]] = field(default_factory=dict)
    heads: list[bytes] = field(default_factory=list)
    removed: set[str] = field(default_factory=set)
    members: set[str] = field(default_factory=set)


class GroupKeys:
    def __init__(self, replica: Replica, private_for: PrivateLookup, out: Outcome) -> None:
        self.replica = replica
        self.private_for = private_for
        #: where secrets learnt go (the replica returns them from the current call)
        self._out = out
        #: epoch id -> group secret, for every epoch this replica can read
        self.secrets: dict[bytes, bytes] = {}
        #: every bundle's commitment seen (applied or not): confirms shared secrets
        self.commitments: dict[bytes, bytes] = {}
        #: shared secrets waiting for their bundle's commitment
        self.unconfirmed: dict[bytes, bytes] = {}
        self.epochs: dict[bytes, EpochInfo] = {}
        self.shares: list[ShareInfo] = []
        self.joins: dict[str, list[JoinInfo]] = {}
        self.requests: list[RequestInfo] = []
        #: applied envelopes per epoch (routine rotation)
        self.count: dict[bytes, int] = {}
        #: new secrets arrived: sealed envelopes may open now
        self.unseal_due = False
        #: something key work looks at changed (folded key operations, moderation, new
        #: secrets, sealed envelopes): the hub's key work runs only then
        self.work_due = True
        #: head sets this member already rotated for (storm suppression)
        self.rotated_for: set[frozenset[bytes]] = set()
        self._view: View | None = None

    # --- secrets ------------------------------------------------------------------

    def add_secret(self, epoch: bytes, secret: bytes) -> None:
        if epoch not in self.secrets:
            self.secrets[epoch] = secret
            self._out.new_secrets.append((epoch, secret))
            self.unseal_due = bool(self.replica.sealed)
            self.work_due = True
            self._view = None

    def forget(self, epoch: bytes) -> None:
        """Delete an epoch's secret (and the message keys derived from it)."""
        self.secrets.pop(epoch, None)
        self.replica.forget_message_keys(epoch)

    def harvest(self, author: str, op: dict[str, object]) -> None:
        """Open a bundle or share sealed to us (called for every clear-epoch envelope
        that decrypts, before and whatever its application)."""
        me = self.replica.identity.did
        kind = op.get("op")
        try:
            if kind == "bundle" and type(op.get("bundle")) is bytes:
                raw = op["bundle"]
                assert isinstance(raw, bytes)
                header = read_bundle(raw)
                if header.channel != self.replica.channel_id or header.distributor != author:
                    return
                self.commitments[header.epoch] = header.commitment
                waiting = self.unconfirmed.pop(header.epoch, None)
                if waiting is not None and key_commitment(waiting) == header.commitment:
                    self.add_secret(header.epoch, waiting)
                if header.epoch not in self.secrets and author != me:
                    _, secret = open_bundle(raw, me, self.private_for)
                    self.add_secret(header.epoch, secret)
            elif kind == "share" and type(op.get("share")) is bytes and author != me:
                raw = op["share"]
                assert isinstance(raw, bytes)
                header = read_share(raw)
                if header.channel != self.replica.channel_id or header.distributor != author:
                    return
                if all(e in self.secrets for e in header.parents):
                    return
                _, secrets = open_share(raw, me, self.private_for)
                for epoch, secret in secrets.items():
                    known = self.commitments.get(epoch)
                    if known is None:
                        self.unconfirmed.setdefault(epoch, secret)
                    elif key_commitment(secret) == known:
                        self.add_secret(epoch, secret)
        except KeyError_:
            return  # not for us, or not openable: the fold decides what it means

    # --- the fold ---------------------------------------------------------------------

    def changed(self) -> None:
        self._view = None
        self.work_due = True

    def view(self) -> View:
        if self._view is None:
            self._view = self._compute()
        return self._view

    def owners(self) -> dict[bytes, str]:
        """prekey id -> DID, for every published prekey and known member's identity key."""
        st = self.replica
        out = {pid: did for did, keys in st.prekeys.items() for pid in keys}
        known = {author for author, _ in st.vector} | set(self.joins) | {st.founder}
        known |= {e.target for e in st.mod_events if e.target}
        for did in known:
            if did:
                out.setdefault(identity_prekey_id(did), did)
        return out

    def removed_in_past(self, did: str, env: bytes) -> bool:
        """``did`` was banned, or kicked and had not joined again, in ``env``'s causal
        past (``env`` included)."""
        st = self.replica
        if did == st.founder or not st.mod_events:
            return False
        events = st.moderation().by_target.get(did, [])
        past = [e for e in events if e.env == env or st.in_past(e.env, env)]
        if not past:
            return False
        bans = [e for e in past if e.action in ("ban", "unban")]
        if mod.resolve_flag(bans, "ban", "unban", st.in_past):
            return True
        kicks = [e for e in past if e.action in ("kick", "add")]
        if not mod.resolve_flag(kicks, "kick", "add", st.in_past):
            return False
        last_kicks = [e.env for e in kicks if e.action == "kick"]
        return not any(all(st.in_past(k, j.env) for k in last_kicks)
                       and (j.env == env or st.in_past(j.env, env))
                       for j in self.joins.get(did, []))

    def removed_now(self) -> set[str]:
        st = self.replica
        if not st.mod_events:
            return set()
        state = st.moderation()
        out = set(state.banned)
        for did in state.kicked:
            kicks = [e.env for e in state.by_target.get(did, []) if e.action == "kick"]
            if not any(all(st.in_past(k, j.env) for k in kicks)
                       for j in self.joins.get(did, [])):
                out.add(did)
        return out

    def _compute(self) -> View:
        """Validity and holders, in this replica's log order (a causal order). Whether a
        distributor or sharer *held* an epoch counts only shares in its causal past, so
        every replica reaches the same verdicts whatever order it saw things in."""
        st = self.replica
        view = View()
        owners = self.owners()
        view.removed = self.removed_now()
        base: dict[bytes, set[str]] = {}
        granted: dict[bytes, list[tuple[str, bytes]]] = {}

        def held(did: str, epoch: bytes, at: bytes) -> bool:
            return did in base.get(epoch, ()) or any(
                d == did and (s == at or st.in_past(s, at)) for d, s in granted.get(epoch, ()))

        items: list[tuple[int, EpochInfo | ShareInfo]] = [
            (st.order_of(i.env), i) for i in self.epochs.values()]
        items += [(st.order_of(x.env), x) for x in self.shares]
        for _, item in sorted(items, key=lambda t: t[0]):
            if isinstance(item, ShareInfo):
                if all(view.valid.get(e) and held(item.distributor, e, item.env)
                       for e in item.epochs) \
                        and not self.removed_in_past(item.distributor, item.env):
                    for pid in item.recipients:
                        did = owners.get(pid)
                        if did is not None and not self.removed_in_past(did, item.env):
                            for e in item.epochs:
                                granted.setdefault(e, []).append((did, item.env))
                continue
            info = item
            why = ""
            if info.distributor != st.founder and not any(
                    view.valid.get(p) and held(info.distributor, p, info.env)
                    for p in info.parents):
                why = "distributor held none of the parent epochs"
            elif self.removed_in_past(info.distributor, info.env):
                why = "distributor was removed in the bundle's causal past"
            else:
                for pid in info.recipients:
                    did = owners.get(pid)
                    if did is not None and self.removed_in_past(did, info.env):
                        why = "bundle names a member removed in its causal past"
                        break
            view.valid[info.epoch] = not why
            view.why[info.epoch] = why
            base[info.epoch] = {info.distributor} | {owners[p] for p in info.recipients
                                                     if p in owners}
        for epoch in self.epochs:
            view.holders[epoch] = base.get(epoch, set()) | {d for d, _ in granted.get(epoch, ())}
        parents = {p for e, info in self.epochs.items() if view.valid[e] for p in info.parents}
        view.heads = sorted(e for e in self.epochs if view.valid[e] and e not in parents)
        members = {st.founder} if st.founder else set()
        for e, ok in view.valid.items():
            if ok:
                members |= view.holders[e]
        view.members = members - view.removed
        return view

    # --- writing --------------------------------------------------------------------

    def send_epoch(self, now_ms: int) -> bytes | None:
        """The epoch to encrypt a new envelope with, or None: rotate first."""
        view = self.view()
        for epoch in view.heads:
            if epoch in self.secrets and not view.holders[epoch] & view.removed \
                    and not self.rotation_due(epoch, now_ms):
                return epoch
        return None

    def rotation_due(self, epoch: bytes, now_ms: int) -> bool:
        info = self.epochs[epoch]
        return self.count.get(epoch, 0) >= ROTATE_EVERY \
            or now_ms - info.created_ms >= ROTATE_AGE_MS

    def needs_rotation(self) -> bool:
        """Some head epoch includes a removed member, and no head is clean."""
        view = self.view()
        return bool(view.heads) and all(view.holders[e] & view.removed for e in view.heads)

    def rotation_recipients(self, now_ms: int) -> list[Prekey]:
        """Every current member but us: its freshest prekey, else (if it never published
        one) its identity key. Members whose prekeys all expired are left out: they ask
        for a history share when they return."""
        st = self.replica
        me = st.identity.did
        out = []
        for did in sorted(self.view().members - {me}):
            prekey = st.prekey_of(did, now_ms)
            if prekey is None and not st.prekeys.get(did):
                try:
                    prekey = identity_prekey(did)
                except KeyError_:
                    continue
            if prekey is not None:
                out.append(prekey)
        return out

    def holds(self, did: str, epoch: bytes) -> bool:
        view = self.view()
        return bool(view.valid.get(epoch)) and did in view.holders.get(epoch, set())

    def entitled(self, did: str, epoch: bytes) -> bool:
        """May ``did`` be given ``epoch``'s secret? It is a valid epoch and ``did`` is a
        member now (not removed); in an ``ephemeral`` channel it must also have held that
        epoch or an ancestor of it (joiners do not get the past)."""
        view = self.view()
        info = self.epochs.get(epoch)
        if info is None or not view.valid.get(epoch) or did not in view.members:
            return False  # not a member now: removed, or never admitted
        if self.replica.policy == "history" or did in view.holders[epoch] \
                or did == self.replica.founder:
            return True
        todo, seen = list(info.parents), set(info.parents)
        while todo:
            e = todo.pop()
            if view.valid.get(e) and did in view.holders.get(e, set()):
                return True
            for p in self.epochs[e].parents if e in self.epochs else ():
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return False

    def unserved(self) -> list[str]:
        """Members (not removed) who hold none of the head epochs: unbanned or re-added
        members, and members skipped by a rotation because their prekeys had expired."""
        view = self.view()
        return sorted(did for did in view.members
                      if not any(did in view.holders[h] for h in view.heads))

    def admissions(self) -> list[JoinInfo]:
        """Joins to admit: of DIDs that are not removed and hold none of the head epochs
        (a first join, or a join after a kick: the rejoiner still holds the epochs from
        before its kick, never the ones after). The newest join of each counts: its
        invite is the one that brought the joiner back."""
        view = self.view()
        out = []
        for did, joins in sorted(self.joins.items()):
            if did in view.removed or any(did in view.holders.get(h, set())
                                          for h in view.heads):
                continue
            if not self.was_kicked(did) and any(
                    did in h for e, h in view.holders.items() if view.valid.get(e)):
                continue  # a member a rotation skipped: served, not admitted (_serve)
            out.append(joins[-1])
        return out

    def was_kicked(self, did: str) -> bool:
        st = self.replica
        return bool(st.mod_events) and any(
            e.action == "kick" for e in st.moderation().by_target.get(did, []))

    def may_admit(self, did: str, join: JoinInfo, now_ms: int = 0) -> bool:
        """May member ``did`` admit this join? It holds a valid epoch, the inviter is a
        member who was not removed, the invite has not expired (the join's time is the
        joiner's word, so the admitter's clock ``now_ms`` counts too), and in
        ``invite-only`` channels both are moderators."""
        st = self.replica
        view = self.view()
        if did not in view.members or join.inviter not in view.members:
            return False
        if join.expires_ms < max(join.ts, now_ms):
            return False  # expired, by the join's own time or by this admitter's clock
        if st.mod_events and st.moderation().modes.get("invite-only"):
            state = st.moderation()
            return state.rank(did) >= mod.MODERATOR and state.rank(join.inviter) >= mod.MODERATOR
        return True
