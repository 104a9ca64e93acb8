"""ChannelHub: this node's channels, owned by NodeCore. Sans-IO.

The top of the hub's four layers (:mod:`p2pchat.core.hub_state`, then
:mod:`~p2pchat.core.replication`, :mod:`~p2pchat.core.keywork`, then this module):
the requests (create, join, send, edit, delete, react, moderate), direct messages,
restore at start, and the frames of a link, received envelopes included. The names
other layers import from here (``SyncProgress``, ``verify_in_order``, limits) are
re-exported.
"""

from __future__ import annotations

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.invite import make_proof, parse_invite
from p2pchat.channel.keys import (
    KeyError_,
)
from p2pchat.channel.state import (
    MAX_POSTS_PER_ENVELOPE,
    ChannelState,
    PendingFull,
    Rejected,
)
from p2pchat.channel.ulid import make_ulid, ulid_after
from p2pchat.core.dm import DmRouter
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    ChannelsLoaded,
    DmRequested,
    Effect,
    JoinRequested,
    MessageOpRequested,
    ModRequested,
    PersistChannel,
    PersistEnvelopes,
    SendRequested,
    SyncProgress,
)
from p2pchat.core.hub_state import (
    ADMIT_GRACE_MS,
    MAX_BATCH_BYTES,
    MAX_DMS_PER_PEER,
    MAX_HELD_PUSH,
    MAX_OFFERS_PER_LINK,
    PREKEY_RENEW_MS,
    SNAPSHOT_EVERY,
    SYNC_WINDOW_BYTES,
    BatchVerifier,
    RandomBytes,
    _LinkChannels,
    _resume_device,
    cut_batches,
    topic_for,
    verify_in_order,
)
from p2pchat.core.keywork import KeyWork
from p2pchat.core.link import Link
from p2pchat.errors import CloseCode, IdentityError, LocalError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.wire import Envelopes, Frame, Offer, Subscribe, Summary
from p2pchat.wire.frames import Relay

__all__ = [
    "ADMIT_GRACE_MS",
    "MAX_BATCH_BYTES",
    "MAX_DMS_PER_PEER",
    "MAX_HELD_PUSH",
    "MAX_OFFERS_PER_LINK",
    "PREKEY_RENEW_MS",
    "SNAPSHOT_EVERY",
    "SYNC_WINDOW_BYTES",
    "BatchVerifier",
    "ChannelHub",
    "RandomBytes",
    "SyncProgress",
    "cut_batches",
    "topic_for",
    "verify_in_order",
]


class ChannelHub(KeyWork):
    """This node's channels (see the module docstring)."""

    def __init__(self, identity: Identity, randbytes: RandomBytes,
                 verify_batch: BatchVerifier = verify_in_order) -> None:
        super().__init__(identity, randbytes, verify_batch)
        self.dm_relay = DmRouter(self)

    def on_loaded(self, ev: ChannelsLoaded, now_ms: int) -> list[Effect]:
        """Restore channels: the snapshot, then the envelopes stored after it."""
        for stored in ev.channels:
            state = self._new_state(stored.channel, stored.key, stored.secrets)
            self.names[stored.channel] = stored.name
            replay = stored.envelopes
            if stored.snapshot is not None:
                restored = self._restore(stored)
                if restored is not None:
                    state = restored
                    replay = stored.envelopes[stored.covered:]
            _resume_device(state, replay)
            state.head_unsure = ev.head_unsure
            for raw in replay:
                try:
                    state.receive_bytes(raw, now_ms)
                except RemoteProtocolError:
                    continue  # stored data is ours; a bad row is skipped, not fatal
            state.group.unseal_due = True  # the keyring may open what the snapshot kept
            state.settle()
            self._snapshot_at[stored.channel] = len(state.log) if not replay else 0
            self.load_report[stored.channel] = (len(stored.envelopes) - len(replay), len(replay))
        return self._resubscribe_all()

    def create(self, ev: ChannelCreateRequested) -> list[Effect]:
        try:
            state, _ = ChannelState.create(self.identity, ev.name, None, ev.wall_ms,
                                           self._randbytes, ev.policy, self.private_for)
        except ValueError as exc:
            return [ChannelAnswer(ev.request_id, None, str(exc))]
        self._adopt(state)
        self._took_created(state)
        self.names[state.channel_id] = state.name
        if self.prekeys_on:
            self._prekey_missing.add(state.channel_id)
        own = [(i, state.raw[i]) for i in state.log]
        self.own_written += [(state.channel_id, raw) for _, raw in own]
        effects: list[Effect] = [
            PersistChannel(state.channel_id, state.name, b""),
            *self._key_effects(state),
            PersistEnvelopes(state.channel_id, tuple(own)),
            ChannelAnswer(ev.request_id, {"channel": state.channel_id, "name": state.name,
                                          "policy": state.policy}, None),
        ]
        return effects + self._resubscribe_all()

    def join(self, ev: JoinRequested) -> list[Effect]:
        if ev.channel in self.channels:
            return self._join_again(ev)
        effects, error = self._join(ev.channel, ev.name, ev.cap, ev.grant, ev.grant_signature,
                                    ev.genesis, ev.wall_ms)
        if error:
            return [ChannelAnswer(ev.request_id, None, f"invite does not work: {error}")]
        answer = {"channel": ev.channel, "name": ev.name, "new": True}
        return [*effects, ChannelAnswer(ev.request_id, answer, None), *self._resubscribe_all()]

    def _join_again(self, ev: JoinRequested) -> list[Effect]:
        """``join`` with a channel we hold: a member is told so; a banned node is refused
        (the members would never admit it); a kicked node, or one still waiting, writes
        a join with the new invite, which brings it back once a member admits it (a join
        that follows every kick ends the kick, design.md §10.15)."""
        state = self.channels[ev.channel]
        name = self.name_of(ev.channel)
        status = state.key_status()
        me = self.identity.did
        if status in ("static", "member"):
            return [ChannelAnswer(ev.request_id, {"channel": ev.channel, "name": name,
                                                  "new": False, "status": status}, None)]
        if state.mod_events and me in state.moderation().banned:
            return [ChannelAnswer(ev.request_id, None, f"you are banned from #{name}: "
                                  "a moderator must unban you before an invite works")]
        if state.dm_peer:
            return [ChannelAnswer(ev.request_id, None, "a direct-message channel takes no "
                                  "invite")]
        before = len(state.log)
        try:
            record = self.own_prekey[0] if self.own_prekey is not None else b""
            self._took(state, state.join(ev.grant, ev.grant_signature,
                                         make_proof(ev.cap, ev.channel, me), record,
                                         ev.wall_ms, self._randbytes))
        except (RemoteProtocolError, ValueError, RuntimeError) as exc:
            return [ChannelAnswer(ev.request_id, None, f"invite does not work: {exc}")]
        if state.key_status() == "removed":  # our own replica says the join changes nothing
            return [*self._after_local(state, before),
                    ChannelAnswer(ev.request_id, None, f"you are still removed from #{name}: "
                                  "this invite does not readmit you")]
        answer = {"channel": ev.channel, "name": name, "new": False, "rejoined": True,
                  "status": state.key_status()}
        return [*self._after_local(state, before), ChannelAnswer(ev.request_id, answer, None),
                *self._resubscribe_all()]

    def dm(self, ev: DmRequested) -> list[Effect]:
        """Post to the DM channel with ``ev.did``: made on first use (invite-only, the
        peer added and given the first epoch through its identity key, as a first
        contact), and offered to the peer over every link to it."""
        try:
            public_key_from_did(ev.did)
        except IdentityError as exc:
            return [ChannelAnswer(ev.request_id, None, f"not a DID: {exc}")]
        if ev.did == self.identity.did:
            return [ChannelAnswer(ev.request_id, None, "that is this node's own DID")]
        effects: list[Effect] = []
        channel = self.dm_channel(ev.did)
        new = channel is None
        if channel is None:
            try:
                state, _ = ChannelState.create(self.identity, "dm", None, ev.wall_ms,
                                               self._randbytes, "history", self.private_for,
                                               dm=ev.did)
                state.moderate("mode", ev.wall_ms, self._randbytes, value="invite-only")
                state.moderate("add", ev.wall_ms, self._randbytes, target=ev.did,
                               reason="direct messages")
                prekey = self._prekey_for(state, ev.did, ev.wall_ms)
                assert prekey is not None  # a valid DID always has its identity key
                state.share([prekey], list(state.group.secrets), ev.wall_ms, self._randbytes)
            except (ValueError, KeyError_, AssertionError) as exc:
                return [ChannelAnswer(ev.request_id, None, f"cannot reach {ev.did}: {exc}")]
            channel = state.channel_id
            self._adopt(state)
            self._took_created(state)
            self.names[channel] = "dm"
            if self.prekeys_on:
                self._prekey_missing.add(channel)
            own = [(i, state.raw[i]) for i in state.log]
            self.own_written += [(channel, raw) for _, raw in own]
            effects += [PersistChannel(channel, "dm", b""), *self._key_effects(state),
                        PersistEnvelopes(channel, tuple(own))]
            uri = self.invite_for(channel, ev.wall_ms).to_uri(self.identity)
            self._dm_offers[ev.did] = uri
            effects += self._resubscribe_all() + self._offer(ev.did)
            effects += self.dm_relay.new_offer(ev.did, uri, ev.wall_ms)
        state = self.channels[channel]
        before = len(state.log)
        try:
            env, msg_id = self._took(state, state.post(ev.text, ev.wall_ms, self._randbytes))
        except ValueError as exc:
            return [*effects, ChannelAnswer(ev.request_id, None, str(exc))]
        effects += self._after_local(state, before)
        # seq: the post's envelope (``delivered`` once the peer's receipt covers it); own:
        # how many envelopes of ours the channel holds (``stored`` once a server has that)
        own_count = len(self.own_envelopes(channel))
        return [*effects, ChannelAnswer(ev.request_id, {"channel": channel, "id": msg_id,
                                                        "new": new, "seq": env.seq,
                                                        "own": own_count}, None)]

    def _offer(self, did: str) -> list[Effect]:
        """Send the pending DM offer for ``did`` over every open link to it."""
        uri = self._dm_offers.get(did)
        if uri is None:
            return []
        return [lc.link.send(Offer(invite=uri)) for lc in self._links.values()
                if lc.link.peer_did == did]

    def offer_pending_dms(self, now_ms: int) -> None:
        """After a restart: DM channels we made whose peer has not joined yet are offered
        again (a fresh capability) when a link to the peer opens."""
        me = self.identity.did
        for channel, state in self.channels.items():
            peer = state.dm_peer
            if peer and state.founder == me and state.e2ee \
                    and not any(a == peer for a, _ in state.vector):
                try:
                    invite = self.invite_for(channel, now_ms)
                except ValueError:
                    continue
                uri = invite.to_uri(self.identity)
                self._dm_offers[peer] = uri
                self.dm_relay.new_offer(peer, uri, now_ms)  # no links yet: the mailbox

    def _on_offer(self, lc: _LinkChannels, frame: Offer, now_ms: int) -> list[Effect]:
        lc.offers += 1
        if lc.offers > MAX_OFFERS_PER_LINK:
            raise RemoteProtocolError("too many direct-message offers on one link")
        effects, error = self.accept_offer(lc.link.peer_did or "", frame.invite, now_ms)
        if error:
            raise RemoteProtocolError(error)
        return effects

    def accept_offer(self, peer: str, uri: str, now_ms: int) -> tuple[list[Effect], str]:
        """Join the DM channel ``peer`` offers (over a link, a relay or a mailbox):
        (effects, error). Offers for a channel held, or beyond MAX_DMS_PER_PEER, are
        ignored without an error."""
        try:
            invite = parse_invite(uri)
        except LocalError as exc:
            return [], f"malformed direct-message offer: {exc}"
        if invite.inviter != peer:
            return [], "a direct-message offer must be the sender's own invite"
        if invite.channel in self.channels:
            return [], ""
        if len(self._dm_channels(peer)) >= MAX_DMS_PER_PEER:
            return [], ""  # one (two, if both made one at once) is enough
        effects, error = self._join(invite.channel, "dm", invite.cap, invite.grant,
                                    invite.grant_signature, invite.genesis, now_ms,
                                    dm_from=peer)
        if error:
            return [], f"bad direct-message offer: {error}"
        return effects + self._resubscribe_all(), ""

    def send(self, ev: SendRequested, batch: bool) -> list[Effect]:
        """Post (its push held until :meth:`flush_held`); a ``batch`` post, or one to a
        channel with queued posts, is queued to be sealed with its burst (core.batching)."""
        state = self.channels.get(ev.channel)
        if state is None:
            return [ChannelAnswer(ev.request_id, None, "unknown channel")]
        if state.genesis_id is None:
            return [ChannelAnswer(ev.request_id, None,
                                  "channel not synced yet: no peer has sent its history")]
        if batch or ev.channel in self._queued:
            return self._queue_post(state, ev)  # sealed with its burst (see seal_held)
        before = len(state.log)
        try:
            _, msg_id = self._took(state, state.post(ev.text, ev.wall_ms, self._randbytes,
                                                     ev.reply_to))
        except ValueError as exc:
            return [ChannelAnswer(ev.request_id, None, str(exc))]
        effects = self._after_local(state, before, hold=True)
        effects.append(ChannelAnswer(ev.request_id, {"id": msg_id, "channel": ev.channel}, None))
        return effects

    def _queue_post(self, state: ChannelState, ev: SendRequested) -> list[Effect]:
        """Check a batched post now (a refusal is answered at once) and queue it; it is
        sealed with the rest of its burst at :meth:`seal_held` or :meth:`flush_held`, or
        when MAX_POSTS_PER_ENVELOPE are queued. Its id is made now, after the queue's
        last (so the ids of a burst keep the order of its requests)."""
        try:
            state.check_post(ev.text, ev.reply_to)
        except ValueError as exc:
            return [ChannelAnswer(ev.request_id, None, str(exc))]
        queue = self._queued.setdefault(ev.channel, [])
        msg_id = make_ulid(ev.wall_ms, self._randbytes(10))
        if queue and msg_id <= queue[-1][1]:
            msg_id = ulid_after(queue[-1][1])
        queue.append((ev.request_id, msg_id, ev.text, ev.reply_to, ev.wall_ms))
        if len(queue) >= MAX_POSTS_PER_ENVELOPE:
            return self._seal_queued(ev.channel)
        return []

    def message_op(self, ev: MessageOpRequested) -> list[Effect]:
        state = self.channels.get(ev.channel)
        if state is None:
            return [ChannelAnswer(ev.request_id, None, "unknown channel")]
        effects = self._seal_queued(ev.channel)  # earlier posts go first
        before = len(state.log)
        try:
            if ev.op == "edit":
                self._took(state, state.edit(ev.msg_id, ev.text, ev.wall_ms, self._randbytes))
            elif ev.op == "delete":
                self._took(state, state.delete(ev.msg_id, ev.wall_ms, self._randbytes))
            elif ev.op == "react":
                self._took(state, state.react(ev.msg_id, ev.emoji, ev.on, ev.wall_ms,
                                              self._randbytes))
            else:
                return [*effects, ChannelAnswer(ev.request_id, None,
                                                f"unknown operation {ev.op!r}")]
        except ValueError as exc:
            return [*effects, ChannelAnswer(ev.request_id, None, str(exc))]
        effects += self._after_local(state, before, hold=True)
        effects.append(ChannelAnswer(ev.request_id, {"id": ev.msg_id, "op": ev.op}, None))
        return effects

    def moderate(self, ev: ModRequested) -> list[Effect]:
        state = self.channels.get(ev.channel)
        if state is None:
            return [ChannelAnswer(ev.request_id, None, "unknown channel")]
        if state.genesis_id is None:
            return [ChannelAnswer(ev.request_id, None,
                                  "channel not synced yet: no peer has sent its history")]
        effects = self._seal_queued(ev.channel)  # earlier posts go first
        before = len(state.log)
        try:
            _, entry = self._took(state, state.moderate(
                ev.action, ev.wall_ms, self._randbytes, target=ev.target, value=ev.value,
                on=ev.on, reason=ev.reason))
        except ValueError as exc:
            return [*effects, ChannelAnswer(ev.request_id, None, str(exc))]
        effects += self._readmit_unbanned(ev.channel)
        effects += self._after_local(state, before, hold=True)
        self._drop_after_flush.add(ev.channel)  # cut banned peers off after the push
        effects.append(ChannelAnswer(ev.request_id, {"id": entry, "action": ev.action}, None))
        return effects

    def on_link_open(self, link: Link) -> list[Effect]:
        lc = _LinkChannels(link, {}, set())
        self._links[link.link_id] = lc
        effects = self._subscribe(lc)
        if link.peer_did in self._dm_offers:
            effects += self._offer(link.peer_did or "")
        return effects + self.dm_relay.on_link_open(link)

    def on_frame(self, link: Link, frame: Frame, now_ms: int) -> list[Effect]:
        lc = self._links.get(link.link_id)
        if lc is None:
            return []
        if isinstance(frame, Subscribe):
            return self._on_subscribe(lc, frame)
        if isinstance(frame, Offer):
            return self._on_offer(lc, frame, now_ms)
        if isinstance(frame, Relay):
            return self.dm_relay.on_relay(lc.link, frame, now_ms)
        if isinstance(frame, (Summary, Envelopes)) and lc.topics.get(frame.topic) in lc.refused:
            if isinstance(frame, Summary):  # answered if the peer may sync again
                lc.ignored[lc.topics[frame.topic]] = frame
            return []
        if isinstance(frame, Summary):
            return self._on_summary(lc, frame)
        if isinstance(frame, Envelopes):
            return self._on_envelopes(lc, frame, now_ms)
        raise RemoteProtocolError(f"unexpected {frame.TAG!r} frame")

    def _on_envelopes(self, lc: _LinkChannels, frame: Envelopes, now_ms: int) -> list[Effect]:
        channel = self._channel_of(lc, frame.topic)
        state = self.channels[channel]
        try:
            # what we hold already (gossip repeats a lot) is skipped before decoding: the id
            # covers the signed bytes, so a copy with other signature bytes changes nothing
            envelopes = [state.decode(raw) for raw in frame.items
                         if not state.is_known(state.id_of(raw))]
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"sent an invalid envelope: {exc}") from None
        verdicts = dict(zip((env.id for env in envelopes), self.verify_batch(envelopes),
                            strict=True))
        return self._apply_batch(lc, channel, frame.more, envelopes, verdicts, now_ms)

    def _apply_batch(self, lc: _LinkChannels, channel: bytes, more: bool,
                     envelopes: list[Envelope], verdicts: dict[bytes, bool], now_ms: int
                     ) -> list[Effect]:
        """Receive a frame's envelopes. A bad one closes the link; what came before it stays
        (applied, stored and forwarded)."""
        state = self.channels[channel]
        stored: list[tuple[bytes, bytes]] = []
        #: stored, never pushed: banned authors, and what we could read and is invalid
        refused: list[tuple[bytes, bytes]] = []
        mod_events = len(state.mod_events)
        pending_evidence: list[Effect] = []
        parked = False
        error: RemoteProtocolError | None = None
        state.preapply(envelopes, verdicts)
        for env in envelopes:
            try:
                result = self._took(state, state.receive(env, now_ms, verdicts.get(env.id)))
            except PendingFull:
                continue  # not the forwarder's fault; a later summary fetches it again
            except Rejected as exc:
                error = RemoteProtocolError(f"sent an invalid envelope: {exc}",
                                            CloseCode.PROTOCOL_ERROR)
                break
            except RemoteProtocolError as exc:
                error = RemoteProtocolError(f"sent an invalid envelope: {exc}")
                break
            parked |= result.pending
            stored += [(e.id, state.raw[e.id])
                       for e in result.applied + result.quarantined + result.sealed]
            refused += [(e.id, state.raw[e.id]) for e in result.refused + result.invalid]
            if result.equivocation:
                # the source may hold only one branch: give it all the evidence we have
                evidence = [i for i in state.log
                            if (state.envs[i].author, state.envs[i].device)
                            in state.equivocators]
                pending_evidence += self._send_envelopes(lc, channel, evidence)
        moderated = len(state.mod_events) != mod_events
        if state.head_unsure:
            state.head_seen(0)  # we may now hold our own envelopes a summary announced
        effects = self._readmit_unbanned(channel) if moderated else []
        effects += self._key_effects(state)
        effects += self._after_apply(state, stored, source=lc.link.link_id)
        effects += self.key_work(state, now_ms)
        if moderated:
            self._drop_banned(channel)
        if refused:
            effects.append(PersistEnvelopes(channel, tuple(refused)))
        self._track_sync(channel)
        if error is not None:
            return effects + lc.link.close(error.code, str(error))
        effects += pending_evidence
        if parked or more:
            effects.append(self._summary(lc, channel))
        return effects

    def receive_stored(self, channel: bytes, raws: list[bytes], now_ms: int) -> list[Effect]:
        """Envelopes from a bootstrap server: verified and applied like a peer's, but a bad
        one is skipped (the server checked only its signature; there is no link to blame)."""
        state = self.channels.get(channel)
        if state is None:
            return []
        envelopes = []
        for raw in raws:
            try:
                envelopes.append(state.decode(raw))
            except RemoteProtocolError:
                continue
        fresh = [env for env in envelopes if not state.is_known(env.id)]
        verdicts = dict(zip((env.id for env in fresh), self.verify_batch(fresh), strict=True))
        stored: list[tuple[bytes, bytes]] = []
        refused: list[tuple[bytes, bytes]] = []
        mod_events = len(state.mod_events)
        for env in envelopes:
            try:
                result = self._took(state, state.receive(env, now_ms, verdicts.get(env.id)))
            except RemoteProtocolError:
                continue
            stored += [(e.id, state.raw[e.id])
                       for e in result.applied + result.quarantined + result.sealed]
            refused += [(e.id, state.raw[e.id]) for e in result.refused + result.invalid]
        moderated = len(state.mod_events) != mod_events
        effects = self._readmit_unbanned(channel) if moderated else []
        effects += self._key_effects(state)
        effects += self._after_apply(state, stored, source=None)
        effects += self.key_work(state, now_ms)
        if moderated:
            self._drop_banned(channel)
        if refused:
            effects.append(PersistEnvelopes(channel, tuple(refused)))
        self._track_sync(channel)  # a server may bring what a peer announced
        return effects
