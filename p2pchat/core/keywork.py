"""Group-key work of the channel hub (design.md §10.15): admissions after a join, history
shares, key requests and their answers, rotations, the sweep of ephemeral channels'
old secrets, and this node's prekeys. The hub's third layer. Sans-IO."""

from __future__ import annotations

from p2pchat.channel import moderation as mod
from p2pchat.channel.group import EPHEMERAL_WINDOW_MS
from p2pchat.channel.keys import (
    MAX_SHARE_EPOCHS,
    make_prekey,
    open_prekey,
)
from p2pchat.channel.state import (
    ChannelState,
)
from p2pchat.core.events import (
    Effect,
    ForgetEpochKey,
    PersistPrekey,
)
from p2pchat.core.hub_state import (
    ADMIT_GRACE_MS,
    PREKEY_RENEW_MS,
)
from p2pchat.core.replication import Replication
from p2pchat.errors import RemoteProtocolError


class KeyWork(Replication):
    """Key work per channel, timed by ``key_deadline`` (see the module docstring)."""

    def key_work(self, state: ChannelState, now_ms: int) -> list[Effect]:
        """What this member does for the channel's keys after the DAG changed: admit
        joiners, answer key requests, rotate away from removed members, ask for the
        secrets it lacks. Every step is idempotent against the DAG, so running it
        again (or on several members at once) adds nothing or converges."""
        if not state.e2ee or state.genesis_id is None or not state.group.work_due:
            return []
        state.group.work_due = False
        me = self.identity.did
        if state.dm_peer in self._dm_offers and any(a == state.dm_peer for a, _ in state.vector):
            del self._dm_offers[state.dm_peer]  # the peer has joined: no more offers
        group = state.group
        before = len(state.log)
        effects: list[Effect] = []
        try:
            view = group.view()
            if me in view.members:
                rank = state.moderation().rank(me) if state.mod_events else \
                    (mod.OWNER if me == state.founder else mod.MEMBER)
                self._admit(state, now_ms)
                if rank >= mod.MODERATOR:
                    self._serve(state, now_ms)
                self._answer_requests(state, now_ms)
                heads = frozenset(group.view().heads)
                if group.needs_rotation() and heads not in group.rotated_for \
                        and rank >= mod.MODERATOR:
                    self._took(state, state.rotate(now_ms, self._randbytes))
                self._request_missing(state, now_ms)
        except (ValueError, RuntimeError, RemoteProtocolError):
            pass  # e.g. we were just banned here, or a member's key is unusable
        if len(state.log) > before:
            effects += self._after_local(state, before)
        return effects + self._key_effects(state)

    def key_timer(self, now_ms: int) -> list[Effect]:
        effects: list[Effect] = []
        for channel, due in sorted(self._key_due.items()):
            if due <= now_ms:
                del self._key_due[channel]
                state = self.channels.get(channel)
                if state is not None:
                    state.group.work_due = True
                    effects += self.key_work(state, now_ms)
        return effects

    def _admit(self, state: ChannelState, now_ms: int) -> None:
        group, me = state.group, self.identity.did
        for join in group.admissions():
            if not group.may_admit(me, join, now_ms):
                continue
            if join.inviter != me:
                seen = self._join_seen.setdefault(join.env, now_ms)
                if now_ms - seen < ADMIT_GRACE_MS:
                    due = seen + ADMIT_GRACE_MS
                    self._key_due[state.channel_id] = min(
                        due, self._key_due.get(state.channel_id, due))
                    continue
            prekey = self._prekey_for(state, join.did, now_ms)
            if prekey is None:
                continue
            heads = group.view().heads
            if heads and not any(group.holds(me, h) for h in heads):
                continue  # we hold no current epoch to give: a member who does admits it
            if state.mod_events and state.moderation().modes.get("invite-only") \
                    and join.did not in state.moderation().by_target:
                self._took(state, state.moderate("add", now_ms, self._randbytes,
                                                 target=join.did, reason="joined with an invite"))
            held = self._held_epochs(state)
            for start in range(0, len(held), MAX_SHARE_EPOCHS):
                self._took(state, state.share([prekey], held[start:start + MAX_SHARE_EPOCHS],
                                              now_ms, self._randbytes))

    def _serve(self, state: ChannelState, now_ms: int) -> None:
        """Share what they are entitled to with members who hold no head epoch (after an
        unban or a re-add, or a fresh prekey after an expired one)."""
        group, me = state.group, self.identity.did
        for did in group.unserved():
            if did == me:
                continue
            prekey = self._prekey_for(state, did, now_ms)
            if prekey is None:
                continue  # its prekeys expired: served once it publishes a fresh one
            give = [e for e in self._held_epochs(state) if group.entitled(did, e)]
            for start in range(0, len(give), MAX_SHARE_EPOCHS):
                self._took(state, state.share([prekey], give[start:start + MAX_SHARE_EPOCHS],
                                              now_ms, self._randbytes))

    def _answer_requests(self, state: ChannelState, now_ms: int) -> None:
        group, me = state.group, self.identity.did
        for req in group.requests:
            if req.env in self._answered or req.did == me:
                continue
            self._answered.add(req.env)
            prekey = self._prekey_for(state, req.did, now_ms)
            if prekey is None or req.did in group.view().removed:
                continue  # refused: removed members get nothing
            if any(req.env == s.env or state.in_past(req.env, s.env) for s in group.shares
                   if prekey.prekey_id in s.recipients):
                continue  # somebody answered already
            give = [e for e in req.epochs if e in group.secrets and group.holds(me, e)
                    and group.entitled(req.did, e)]
            if give:
                self._took(state, state.share([prekey], give[:MAX_SHARE_EPOCHS], now_ms,
                                              self._randbytes))

    def _request_missing(self, state: ChannelState, now_ms: int) -> None:
        """Epochs we were entitled to but could not open (our prekey had expired when
        they were made, say): ask once per set, with our current prekey."""
        group = state.group
        missing = frozenset(e for e in state.sealed_epochs() if e in group.commitments)
        if not missing or self._requested.get(state.channel_id) == missing:
            return
        if self.own_prekey is None:
            return
        self._requested[state.channel_id] = missing
        self._took(state, state.request_keys(sorted(missing), self.own_prekey[0], now_ms,
                                             self._randbytes))

    def sweep_epochs(self, now_ms: int) -> list[Effect]:
        """``ephemeral`` channels: forget secrets of epochs superseded longer than
        EPHEMERAL_WINDOW_MS ago (after a snapshot, so what they decrypted stays)."""
        if now_ms < self._next_sweep:
            return []
        self._next_sweep = now_ms + 3600 * 1000
        effects: list[Effect] = []
        for channel, state in sorted(self.channels.items()):
            if not state.e2ee or state.policy != "ephemeral":
                continue
            group = state.group
            heads = set(group.view().heads)
            old = []
            for epoch in list(group.secrets):
                children = [i.created_ms for i in group.epochs.values() if epoch in i.parents]
                if epoch not in heads and children and now_ms - min(children) \
                        >= EPHEMERAL_WINDOW_MS:
                    old.append(epoch)
            if old:
                effects += self.snapshots(force=True)
                for epoch in old:
                    group.forget(epoch)
                    effects.append(ForgetEpochKey(channel, epoch))
        return effects

    def maintain_prekeys(self, now_ms: int) -> list[Effect]:
        """Make a fresh prekey when due, and publish the current one where it is missing."""
        effects: list[Effect] = []
        if self.own_prekey is None or self.own_prekey[1].expires_ms - now_ms < PREKEY_RENEW_MS:
            record, private = make_prekey(self.identity, self._randbytes, now_ms)
            prekey = open_prekey(record, now_ms)
            self.own_prekey = (record, prekey)
            self.prekey_privates[prekey.prekey_id] = (private, prekey.expires_ms)
            self.prekey_privates = {i: v for i, v in self.prekey_privates.items()
                                    if v[1] > now_ms}
            effects.append(PersistPrekey(prekey.prekey_id, record, private, prekey.expires_ms))
            self._prekey_missing = set(self.channels)
        record, prekey = self.own_prekey
        for channel in sorted(self._prekey_missing):
            state = self.channels.get(channel)
            if state is None:
                self._prekey_missing.discard(channel)
                continue
            if state.genesis_id is None:
                continue  # after the history arrives
            if prekey.prekey_id not in state.prekeys.get(self.identity.did, {}):
                try:
                    env = self._took(state, state.publish_prekey(record, now_ms,
                                                                 self._randbytes)).envelope
                except (ValueError, RuntimeError):
                    pass  # e.g. banned here: nothing to publish into
                else:
                    effects += self._after_apply(state, [(env.id, state.raw[env.id])],
                                                 source=None, own=True)
            self._prekey_missing.discard(channel)
        return effects
