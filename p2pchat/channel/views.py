"""What a replica shows: message history and pages, members and ranks, the modlog.

Views read the fold's index and never change it (beyond caching the display order).
A post is *hidden* when its device forked before it (equivocation), when the group
keys say it was written under an epoch nobody distributed or that its author was not
given, or when moderation hides it (:func:`p2pchat.channel.moderation.hidden_by`).
Its visible text, edits and reactions count only operations before any fork of their
device. Display order is each post's ``(eff, depth, ulid)`` key, then envelope id.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from p2pchat.channel import moderation as mod
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.fold import Fold
from p2pchat.channel.group import GroupKeys
from p2pchat.channel.keyring import Keyring
from p2pchat.channel.moderation import ModState
from p2pchat.channel.records import MessageRecord, MessageView, Status, position

#: How far in the future a message time is shown before it is clamped to "now".
MAX_DISPLAY_SKEW_MS = 5 * 60 * 1000


class Views:
    def __init__(self, fold: Fold, dag: Dag, clocks: CausalClocks, group: GroupKeys,
                 keyring: Keyring) -> None:
        self._fold = fold
        self._dag = dag
        self._clocks = clocks
        self._group = group
        self._keyring = keyring

    def _fork(self, author: str, device: bytes) -> int | None:
        return self._dag.equivocators.get((author, device))

    def hidden(self, record: MessageRecord) -> bool:
        start = self._fork(record.author, record.device)
        return (start is not None and record.seq >= start) or bool(self.hidden_why(record))

    def hidden_why(self, record: MessageRecord) -> str:
        """Why moderation (or the group keys) hides this post ('' if it does not)."""
        if self._keyring.e2ee:
            epoch = self._dag.envs[record.env].epoch
            view = self._group.view()
            if not view.valid.get(epoch, False):
                return "written under an epoch no member distributed"
            if record.author not in view.holders[epoch]:
                return "written with a key its author was not given"
        fold = self._fold
        if not fold.mod_events or record.author == fold.founder:
            return ""
        return mod.hidden_by(record.author, record.env, fold.moderation(),
                             self._clocks.in_past, self._clocks.wrote_before)

    def may_sync(self, did: str) -> bool:
        """May peer ``did`` sync this channel? Not if banned; in an ``invite-only``
        channel only the owner, moderators and added members may."""
        fold, in_past = self._fold, self._clocks.in_past
        if not fold.mod_events or did == fold.founder:
            return True
        state = fold.moderation()
        if did in state.banned:
            return False
        if not state.modes.get("invite-only") or did in state.moderators:
            return True
        kicked = mod.resolve_flag(state.by_target.get(did, []), "kick", "add", in_past)
        if kicked is None:  # never added: a member if it wrote before invite-only
            modes = [e for e in state.valid if e.action == "mode" and e.value == "invite-only"]
            last = mod.latest(modes, in_past)
            return last is not None and self._clocks.wrote_before(did, last.env)
        return not kicked

    def member_ranks(self) -> list[tuple[str, str]]:
        """(did, rank) of every author and moderation target: owner, moderator, member,
        muted or banned; kicked members are left out until they write again."""
        state = self._fold.moderation()
        dids = set(self.members()) | {e.target for e in self._fold.mod_events if e.target}
        out = []
        for did in sorted(dids):
            if did in state.banned:
                out.append((did, "banned"))
            elif did in state.kicked and not self._wrote_after_kick(did, state):
                continue
            elif did in state.muted:
                out.append((did, "muted"))
            else:
                out.append((did, mod.RANK_NAMES[state.rank(did)]))
        return out

    def _wrote_after_kick(self, did: str, state: ModState) -> bool:
        kicks = [e.env for e in state.valid if e.action == "kick" and e.target == did]
        in_past = self._clocks.in_past
        return any(m.author == did and all(in_past(k, i) for k in kicks)
                   for i, m in self._dag.envs.items() if m.status is Status.APPLIED)

    def modlog(self) -> list[dict[str, Any]]:
        """Every moderation entry in causal order, with whether it counts and why not."""
        state = self._fold.moderation()
        envs = self._dag.envs
        rows = []
        for e in sorted(self._fold.mod_events, key=lambda e: (envs[e.env].depth, e.ulid)):
            verdict = state.verdicts[e.env]
            rows.append({"id": e.ulid, "envelope": e.env.hex(), "action": e.action,
                         "target": e.target, "value": e.value, "on": e.on, "by": e.author,
                         "reason": e.reason, "ts": e.ts, "applied": verdict.applied,
                         "why": verdict.why})
        return rows

    def visible(self, record: MessageRecord) -> tuple[str, bool, int | None]:
        """(text, deleted, edited) counting only operations before any fork of the device."""
        start = self._fork(record.author, record.device)
        text, deleted, edited = record.text, False, None
        for seq, kind, new_text, ts in record.ops:
            if start is not None and seq >= start:
                break
            if kind == "edit":
                text, edited = new_text, ts
            else:
                text, deleted = "", True
        return text, deleted, edited

    def _ordered(self) -> list[MessageRecord]:
        """Every post, hidden ones included, in display order (key, then envelope id)."""
        fold = self._fold
        if fold.order is None:
            fold.order = sorted(fold.posts.values(), key=position)
        return fold.order

    def message_count(self) -> int:
        """How many messages :meth:`history` shows (without building their views)."""
        return sum(1 for r in self._fold.posts.values() if not self.hidden(r))

    def history(self, limit: int | None = None, now_ms: int | None = None,
                with_hidden: bool = False) -> list[MessageView]:
        records = [r for r in self._ordered() if with_hidden or not self.hidden(r)]
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return self._views(records, now_ms, with_hidden)

    def history_page(self, limit: int, *, before: str | None = None, after: str | None = None,
                     now_ms: int | None = None, with_hidden: bool = False) -> list[MessageView]:
        """One page of :meth:`history`, in display order: the newest ``limit`` messages
        before the message ``before`` (the newest of all without a cursor), or the oldest
        ``limit`` after the message ``after``. Cursors are message ids, exclusive.

        A cursor stands for its message's position in display order, which never changes,
        so a walk that passes each page's oldest id as the next ``before`` (or its newest
        as the next ``after``) neither skips nor repeats a message however many arrive
        meanwhile (a late one lands where it sorts). An id that several concurrent posts
        share (§10.4) stands for the oldest of them as ``before`` and the newest as
        ``after``; so that a walk steps over the others too, a page is widened past
        ``limit`` until its edge message is the oldest (newest) post with its id.
        Raises ``ValueError`` for an id that is not a message of this channel, or for
        both cursors at once.
        """
        if before is not None and after is not None:
            raise ValueError("give before or after, not both")
        if limit < 1:
            return []
        order = self._ordered()
        claims = self._fold.claims

        def shown(r: MessageRecord) -> bool:
            return with_hidden or not self.hidden(r)

        page: list[MessageRecord] = []
        if after is None:
            i = len(order) if before is None else bisect_left(
                order, min(map(position, self._claims_of(before))), key=position)
            while i > 0 and len(page) < limit:
                i -= 1
                if shown(order[i]):
                    page.append(order[i])
            # widen until no older post shares the id of the page's oldest message
            while page:
                start = bisect_left(order, min(map(position, claims(page[-1].id))),
                                    key=position)
                if start >= i:
                    break
                while i > start:
                    i -= 1
                    if shown(order[i]):
                        page.append(order[i])
            page.reverse()
        else:
            i = bisect_left(order, max(map(position, self._claims_of(after))),
                            key=position)
            while i + 1 < len(order) and len(page) < limit:
                i += 1
                if shown(order[i]):
                    page.append(order[i])
            while page:
                end = bisect_left(order, max(map(position, claims(page[-1].id))),
                                  key=position)
                if end <= i:
                    break
                while i < end:
                    i += 1
                    if shown(order[i]):
                        page.append(order[i])
        return self._views(page, now_ms, with_hidden)

    def _claims_of(self, msg_id: str) -> list[MessageRecord]:
        claims = self._fold.claims(msg_id)
        if not claims:
            raise ValueError(f"no message {msg_id[:40]} in this channel")
        return claims

    def views_of(self, ids: set[str], now_ms: int | None = None) -> list[MessageView]:
        """The shown messages with these ids, in display order (search results)."""
        records = [r for i in ids for r in self._fold.claims(i) if not self.hidden(r)]
        return self._views(sorted(records, key=position), now_ms, False)

    def _views(self, records: list[MessageRecord], now_ms: int | None,
               with_hidden: bool) -> list[MessageView]:
        wanted = {r.id for r in records}
        reactions: dict[str, dict[str, set[str]]] = {}
        for (target, emoji, author, device), states in self._fold.reactions.items():
            if target not in wanted:
                continue
            start = self._fork(author, device)
            on = False
            for seq, value in states:
                if start is not None and seq >= start:
                    break
                on = value
            if on:
                reactions.setdefault(target, {}).setdefault(emoji, set()).add(author)
        clamp = None if now_ms is None else now_ms + MAX_DISPLAY_SKEW_MS
        views = []
        for r in records:
            why = ""
            if with_hidden and self.hidden(r):
                why = self.hidden_why(r) or "its author's device forked its history"
            text, deleted, edited = ("", False, None) if why else self.visible(r)
            views.append(MessageView(
                r.id, r.author, text, r.reply_to, r.ts if clamp is None else min(r.ts, clamp),
                edited, deleted,
                {} if why else {e: sorted(w) for e, w in sorted(reactions.get(r.id, {}).items())},
                why))
        return views

    def members(self) -> list[str]:
        authors = {m.author for m in self._dag.envs.values()
                   if m.status is not Status.QUARANTINED}
        return sorted(authors)
