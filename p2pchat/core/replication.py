"""Channel replication over links (DESIGN §7): the hub's second layer. Sans-IO.

Theory of operation
-------------------
* On every open link each side sends ``Subscribe`` with its channels as
  *blinded topics*: ``BLAKE2b(session id, key=channel id)``, 16 bytes. Only a
  peer that knows the channel id recognises the topic, and topics differ per
  link, so an eavesdropper or a non-member learns nothing from them.
* For every channel both sides hold, each side sends ``Summary``: per device,
  the highest contiguous seq it holds and a prefix of that envelope's id. The
  receiver answers with ``Envelopes`` holding what the summary lacks, in its
  local (causal) log order, in batches. One round trip reconciles a channel;
  a device whose ``last`` prefix differs at the same seq has forked
  (equivocation), and the receiver sends all of that device's envelopes so both
  sides hold the evidence.
* A verified, applied envelope is pushed at once to every other link sharing the
  channel, so members who never met still converge through the ones in between.
  There is no fan-out cap below the link limit (``NodeConfig.max_links``): a cap
  that skips links drops work, and nothing would serve it later (design.md §10.8).
* A peer that sends an envelope which fails verification is closed: honest
  nodes forward only what they verified. Envelopes left waiting for deps make
  us send our own ``Summary`` back, so the peer fills the gap.
"""

from __future__ import annotations

from p2pchat.channel.state import (
    ChannelState,
)
from p2pchat.core.events import (
    ChannelAnswer,
    Effect,
    IndexMessages,
    PersistEnvelopes,
)
from p2pchat.core.hub_state import (
    MAX_BATCH_BYTES,
    MAX_HELD_PUSH,
    SYNC_WINDOW_BYTES,
    HubState,
    _LinkChannels,
    cut_batches,
    topic_for,
)
from p2pchat.wire import Envelopes, Subscribe, Summary, VectorEntry
from p2pchat.wire.frames import MAX_BATCH_ITEMS, MAX_TOPICS, MAX_VECTOR_ENTRIES


class Replication(HubState):
    """Subscriptions, summaries, sync windows, pushes and held writes."""

    def _seal_queued(self, channel: bytes) -> list[Effect]:
        """Seal the channel's queued posts into one envelope (its push held) and answer
        them; if the channel refuses it now (a ban arrived meanwhile, say), every queued
        post gets that refusal."""
        queue = self._queued.pop(channel, [])
        if not queue:
            return []
        state = self.channels.get(channel)
        if state is None:
            return [ChannelAnswer(r, None, "unknown channel") for r, *_ in queue]
        effects: list[Effect] = []
        now_ms = max(w for *_, w in queue)
        while queue:  # cut where the epoch's routine rotation falls
            room = state.post_room(now_ms, [(t, rt) for _, _, t, rt, _ in queue])
            part, queue = queue[:room], queue[room:]
            before = len(state.log)
            try:
                self._took(state, state.post_many([(m, t, rt) for _, m, t, rt, _ in part],
                                                  now_ms, self._randbytes))
            except ValueError as exc:
                effects += [ChannelAnswer(r, None, str(exc)) for r, *_ in part]
                continue
            effects += self._after_local(state, before, hold=True)
            effects += [ChannelAnswer(r, {"id": m, "channel": channel}, None)
                        for r, m, *_ in part]
        return effects

    def _after_local(self, state: ChannelState, before: int, hold: bool = False
                     ) -> list[Effect]:
        """Store and push what a local write added to the log (the write itself, and a
        rotation that had to go first), with the secrets it made."""
        own = [(i, state.raw[i]) for i in state.log[before:]]
        return self._key_effects(state) + self._after_apply(state, own, source=None, own=True,
                                                            hold=hold)

    def _readmit_unbanned(self, channel: bytes) -> list[Effect]:
        """Resume syncing ``channel`` with peers that may sync it again (before a push, so
        an unban or an add reaches the peer it concerns)."""
        state = self.channels[channel]
        effects: list[Effect] = []
        for lc in self._links.values():
            if channel in lc.refused and state.may_sync(lc.link.peer_did or ""):
                lc.refused.discard(channel)
                lc.shared.add(channel)
                effects.append(self._summary(lc, channel))
                stashed = lc.ignored.pop(channel, None)
                if stashed is not None:  # what it asked for while refused
                    effects += self._on_summary(lc, stashed)
        return effects

    def _drop_banned(self, channel: bytes) -> None:
        """Stop syncing ``channel`` with peers that may not sync it (after a push, so a
        ban reaches the peer it concerns and its node knows why it is cut off)."""
        state = self.channels[channel]
        for lc in self._links.values():
            if channel in lc.shared and not state.may_sync(lc.link.peer_did or ""):
                lc.shared.discard(channel)
                lc.refused.add(channel)
                if lc.ahead.pop(channel, None) is not None:
                    self._track_sync(channel)

    def seal_held(self) -> list[Effect]:
        """Seal every channel's queued posts (their pushes stay held) and answer them."""
        effects: list[Effect] = []
        for channel in list(self._queued):
            effects += self._seal_queued(channel)
        return effects

    def flush_held(self) -> list[Effect]:
        """Seal queued posts, then push the envelopes of held writes: one frame per link
        and channel, not one each."""
        effects = self.seal_held()
        held, self._held, self._held_count = self._held, {}, 0
        for channel, raws in held.items():
            if channel in self.channels:
                effects += self._push(channel, raws, source=None, own=True)
        drop, self._drop_after_flush = self._drop_after_flush, set()
        for channel in drop:
            self._drop_banned(channel)
        return effects

    def on_link_closed(self, link_id: int) -> None:
        self.dm_relay.on_link_closed(link_id)
        lc = self._links.pop(link_id, None)
        for channel in lc.ahead if lc is not None else ():
            self._track_sync(channel)  # what only this peer announced is not coming

    def _subscribe(self, lc: _LinkChannels) -> list[Effect]:
        session = lc.link.session_id
        lc.topics = {topic_for(c, session): c for c in sorted(self.channels)[:MAX_TOPICS]}
        lc.by_channel = {c: t for t, c in lc.topics.items()}
        effects = [lc.link.send(Subscribe(topics=tuple(sorted(lc.topics))))]
        if lc.theirs:  # channels the peer announced before we held them
            effects += self._share_newly(lc)
        return effects

    def _resubscribe_all(self) -> list[Effect]:
        effects: list[Effect] = []
        for lc in self._links.values():
            effects += self._subscribe(lc)
        return effects

    def _on_subscribe(self, lc: _LinkChannels, frame: Subscribe) -> list[Effect]:
        lc.theirs = set(frame.topics)
        return self._share_newly(lc)

    def _share_newly(self, lc: _LinkChannels) -> list[Effect]:
        newly = {c for t, c in lc.topics.items() if t in lc.theirs} - lc.shared - lc.refused
        # a peer banned from a channel gets nothing of it, and what it sends is ignored
        refused = {c for c in newly if not self.channels[c].may_sync(lc.link.peer_did or "")}
        lc.refused |= refused
        lc.shared |= newly - refused
        return [self._summary(lc, c) for c in sorted(newly - refused)]

    def _summary(self, lc: _LinkChannels, channel: bytes) -> Effect:
        state = self.channels[channel]
        entries = []
        for (author, device), seq in sorted(state.vector.items())[:MAX_VECTOR_ENTRIES]:
            if seq == 0:
                continue
            last = state.slots[(author, device, seq)]
            entries.append(VectorEntry(author=author, device=device, seq=seq, last=last[:8]))
        return lc.link.send(Summary(topic=self._topic(lc, channel), entries=tuple(entries)))

    def _on_summary(self, lc: _LinkChannels, frame: Summary) -> list[Effect]:
        channel = self._channel_of(lc, frame.topic)
        state = self.channels[channel]
        theirs = {(e.author, e.device): e.seq for e in frame.entries}
        if state.head_unsure:  # what this peer holds of our own chain (design.md §10.5)
            state.head_seen(theirs.get((state.identity.did, state.identity.device_salt), 0))
        lc.ahead[channel] = {d: s for d, s in theirs.items() if s > state.vector.get(d, 0)}
        self._track_sync(channel)
        ids = state.missing_for(theirs)
        forked = {(e.author, e.device) for e in frame.entries
                  if (slot := state.slots.get((e.author, e.device, e.seq))) is not None
                  and slot[:8] != e.last}
        if forked:
            have = set(ids)
            ids += [i for i in state.log if i not in have
                    and (state.envs[i].author, state.envs[i].device) in forked]
        # The window answered last is still on its way (the peer asks for the next one
        # as soon as it has applied that window's first frame): do not send it twice.
        # The stream is ordered, so anything older reached the peer before this summary
        # was written, and what it still lacks of that is sent again.
        in_flight = lc.in_flight.get(channel, set())
        window: list[bytes] = []
        size = 0
        more = False
        for env_id in ids:
            if env_id in in_flight:
                continue
            raw = state.raw[env_id]
            if window and size + len(raw) > SYNC_WINDOW_BYTES:
                more = True
                break
            window.append(env_id)
            size += len(raw)
        lc.in_flight[channel] = set(window)
        if more:
            lc.syncing.add(channel)
        else:
            lc.syncing.discard(channel)
        return self._batches(lc, channel, [state.raw[i] for i in window], more=more)

    def _send_envelopes(self, lc: _LinkChannels, channel: bytes, ids: list[bytes]
                        ) -> list[Effect]:
        state = self.channels[channel]
        return self._batches(lc, channel, [state.raw[i] for i in ids])

    def _batches(self, lc: _LinkChannels, channel: bytes, raws: list[bytes],
                 more: bool = False, after_store: bool = False) -> list[Effect]:
        """``Envelopes`` frames for ``raws``, in order, within the item and byte limits."""
        topic = self._topic(lc, channel)
        frames = cut_batches(raws, MAX_BATCH_ITEMS, MAX_BATCH_BYTES)
        # ``more`` rides on the first frame: the receiver asks for the next window once it
        # has applied that one, so windows overlap in flight instead of waiting a round trip
        return [lc.link.send(Envelopes(topic=topic, items=items, more=more and i == 0),
                             after_store)
                for i, items in enumerate(frames)]

    def _after_apply(self, state: ChannelState, stored: list[tuple[bytes, bytes]],
                     source: int | None, own: bool = False, hold: bool = False
                     ) -> list[Effect]:
        out = self._outcomes.get(state.channel_id)
        changed = out.changed if out is not None else []
        if not stored and not changed:
            return []
        channel = state.channel_id
        if own:
            self.own_written += [(channel, raw) for _, raw in stored]
        effects: list[Effect] = [PersistEnvelopes(channel, tuple(stored))] if stored else []
        if changed and not self.index_messages:
            changed.clear()
        if changed:
            rows = []
            for msg_id in dict.fromkeys(changed):
                for r in state.claims(msg_id):
                    text, deleted, _ = state.visible(r)
                    rows.append((r.id, r.author, text, deleted or state.hidden(r)))
            changed.clear()
            effects.append(IndexMessages(channel, tuple(rows)))
        if self.snapshot_every and \
                len(state.log) - self._snapshot_at.get(channel, 0) >= self.snapshot_every:
            effects += self.snapshots()
        raws = [raw for _, raw in stored]
        if not raws:
            return effects
        if not hold:
            return effects + self._push(channel, raws, source, own)
        self._held.setdefault(channel, []).extend(raws)
        self._held_count += len(raws)
        if self._held_count >= MAX_HELD_PUSH:
            effects += self.flush_held()
        return effects

    def _push(self, channel: bytes, raws: list[bytes], source: int | None, own: bool
              ) -> list[Effect]:
        """Live push of applied envelopes to every other link that shares the channel.

        Every one: the number of links is bounded (``NodeConfig.max_links``), and a link
        skipped here would never be served (a star of joiners around one inviter stalled
        when only the first 16 got the shares that admit them). A link still syncing
        the channel gets them with its next window."""
        effects: list[Effect] = []
        targets = [lc for lid, lc in sorted(self._links.items())
                   if lid != source and channel in lc.shared
                   and channel not in lc.syncing]
        for lc in targets:
            # ours and new: out only after the store has it (see Transmit)
            effects += self._batches(lc, channel, raws, after_store=own)
        return effects
