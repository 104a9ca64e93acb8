"""Channel replication over links (DESIGN §7). Sans-IO; owned by NodeCore.

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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from p2pchat.channel import moderation as mod
from p2pchat.channel.envelope import Envelope
from p2pchat.channel.group import EPHEMERAL_WINDOW_MS
from p2pchat.channel.invite import INVITE_TTL_MS, Invite, make_grant, make_proof, parse_invite
from p2pchat.channel.keys import (
    MAX_SHARE_EPOCHS,
    KeyError_,
    Prekey,
    identity_prekey,
    identity_prekey_id,
    identity_prekey_private,
    make_prekey,
    open_prekey,
)
from p2pchat.channel.memo import ReceiveMemo
from p2pchat.channel.records import Outcome
from p2pchat.channel.state import (
    MAX_POSTS_PER_ENVELOPE,
    ChannelState,
    PendingFull,
    ReceiveResult,
    Rejected,
    Written,
    epoch_id_for,
)
from p2pchat.channel.ulid import make_ulid, ulid_after
from p2pchat.core.dm import DmRouter
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    ChannelsLoaded,
    DmRequested,
    Effect,
    ForgetEpochKey,
    IndexMessages,
    JoinRequested,
    MessageOpRequested,
    ModRequested,
    PersistChannel,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    SendRequested,
    StoredChannel,
)
from p2pchat.core.link import Link
from p2pchat.crypto import blake2b
from p2pchat.errors import CloseCode, IdentityError, LocalError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.wire import Envelopes, Frame, Offer, Subscribe, Summary, VectorEntry
from p2pchat.wire.frames import MAX_BATCH_ITEMS, MAX_TOPICS, MAX_VECTOR_ENTRIES, TOPIC_SIZE, Relay

#: Applied envelopes between two snapshots of a channel (also taken at shutdown).
#: A snapshot serialises the whole document on the event loop (~0.5 s at 100k
#: messages); a crash costs at most this many envelopes of replay at the next start.
SNAPSHOT_EVERY = 10_000
#: Envelope bytes one answer to a summary carries; the peer pulls the rest, window by
#: window, so a large backlog never floods a link (aioquic has no send backpressure).
SYNC_WINDOW_BYTES = 2 * 1024 * 1024
#: Envelope bytes per Envelopes frame: small frames let the receiver start applying
#: (and keep its event loop responsive) while the rest of a window is in flight.
MAX_BATCH_BYTES = 64 * 1024
#: Publish a fresh prekey this long before the current one expires (it lives 7 days).
PREKEY_RENEW_MS = 2 * 24 * 3600 * 1000
#: A join is admitted at once by its inviter; other members wait this long first, so
#: one admitter usually acts (they step in when the inviter is offline).
ADMIT_GRACE_MS = 15_000
#: Direct-message offers one link may carry; more closes it.
MAX_OFFERS_PER_LINK = 16
#: DM channels accepted per peer (two when both sides made one at the same time).
MAX_DMS_PER_PEER = 2
#: Own envelopes held back for one push (app writes: see core.batching) before they go anyway.
MAX_HELD_PUSH = 16
_TOPIC_PERSON = b"p2pchat-topic"


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """A channel catching up (:meth:`ChannelHub.sync_progress`): envelopes received since
    it began, and how many the linked peers' summaries say this node still lacks."""

    received: int
    behind: int

    @property
    def expected(self) -> int:
        return self.received + self.behind


RandomBytes = Callable[[int], bytes]
#: Checks the signatures of a batch of envelopes; the runtime may spread the work over
#: threads (libsodium releases the GIL). Must return one verdict per envelope, in order.
BatchVerifier = Callable[[list[Envelope]], list[bool]]


def cut_batches(raws: list[bytes], max_items: int, max_bytes: int) -> list[tuple[bytes, ...]]:
    """``raws`` in order, cut into runs of at most ``max_items`` and ``max_bytes`` (a single
    larger item goes alone)."""
    batches: list[tuple[bytes, ...]] = []
    batch: list[bytes] = []
    size = 0
    for raw in raws:
        if batch and (len(batch) >= max_items or size + len(raw) > max_bytes):
            batches.append(tuple(batch))
            batch, size = [], 0
        batch.append(raw)
        size += len(raw)
    if batch:
        batches.append(tuple(batch))
    return batches


def verify_in_order(envelopes: list[Envelope]) -> list[bool]:
    return [env.verify_signature() for env in envelopes]


def topic_for(channel: bytes, session_id: bytes) -> bytes:
    return blake2b(session_id, key=channel, person=_TOPIC_PERSON, size=TOPIC_SIZE)


def _resume_device(state: ChannelState, replay: tuple[bytes, ...]) -> None:
    """Before replaying stored envelopes: write as the device this node wrote as last
    (it may have moved to a sub-device, design.md §10.5), so the replay rebuilds that
    device's authoring document."""
    me = state.identity.did
    for raw in reversed(replay):
        try:
            env = state.decode(raw)
        except RemoteProtocolError:
            continue
        if env.author == me and state.owns_device(env.device):
            state.use_device(env.device)
            return


#: what a replica's call returns that the hub indexes and persists
_Result = TypeVar("_Result", Written, ReceiveResult)


@dataclass
class _LinkChannels:
    link: Link
    topics: dict[bytes, bytes]  # my topic -> channel id, for this link's session
    shared: set[bytes]
    by_channel: dict[bytes, bytes] = field(default_factory=dict)  # channel id -> topic
    #: per channel, the envelope ids of the last sync window sent (maybe still in flight)
    in_flight: dict[bytes, set[bytes]] = field(default_factory=dict)
    #: channels whose sync to this peer has more windows to come: live pushes wait
    #: (the next window carries them), so a pushed envelope whose deps are still in a
    #: later window cannot make the peer ask a second, overlapping summary
    syncing: set[bytes] = field(default_factory=set)
    #: the topics the peer subscribed to last: a channel we join later is shared at
    #: once if the peer already holds it (its Subscribe came before we had it)
    theirs: set[bytes] = field(default_factory=set)
    #: direct-message offers received on this link
    offers: int = 0
    #: channels this peer may not sync (banned; not a member of an invite-only channel):
    #: nothing is sent, and its frames for them are ignored
    refused: set[bytes] = field(default_factory=set)
    #: the last summary it sent for a refused channel, answered if it may sync again
    ignored: dict[bytes, Summary] = field(default_factory=dict)
    #: per channel, the peer's seq of each device that was above ours when its summary
    #: came (what this node lacks from it; caught-up devices are dropped): sync progress
    ahead: dict[bytes, dict[tuple[str, bytes], int]] = field(default_factory=dict)


class ChannelHub:
    def __init__(self, identity: Identity, randbytes: RandomBytes,
                 verify_batch: BatchVerifier = verify_in_order) -> None:
        self.identity = identity
        self._randbytes = randbytes
        self.verify_batch = verify_batch
        self.channels: dict[bytes, ChannelState] = {}
        self.keys: dict[bytes, bytes] = {}
        self.names: dict[bytes, str] = {}
        self._links: dict[int, _LinkChannels] = {}
        self._snapshot_at: dict[bytes, int] = {}  # log length at the last snapshot
        #: per loaded channel: (envelopes restored from its snapshot, envelopes replayed)
        self.load_report: dict[bytes, tuple[int, int]] = {}
        #: periodic snapshots (0: never, e.g. when nothing stores them)
        self.snapshot_every = SNAPSHOT_EVERY
        #: emit IndexMessages for search (off when nothing stores them)
        self.index_messages = True
        #: memos shared with other hubs in this process (the simulator sets one for all
        #: its nodes; see :mod:`p2pchat.channel.memo`)
        self.shared: ReceiveMemo | None = None
        #: per channel, what the replica's calls returned that is not indexed or persisted
        #: yet (see _took; _after_apply and _key_effects take it)
        self._outcomes: dict[bytes, Outcome] = {}
        #: own envelopes of held writes, per channel, not pushed to links yet
        self._held: dict[bytes, list[bytes]] = {}
        self._held_count = 0
        #: held posts not sealed yet, per channel: (request id, message id, text,
        #: reply_to, wall ms); a burst goes out as one multi-post envelope
        self._queued: dict[bytes, list[tuple[int, str, str, str, int]]] = {}
        #: channels whose held push carries a ban: cut the banned peers off after it
        self._drop_after_flush: set[bytes] = set()
        #: own envelopes written since NodeCore last looked (it uploads them to servers)
        self.own_written: list[tuple[bytes, bytes]] = []
        #: prekeys: off until the runtime starts (``load_prekeys``); the private keys by id
        #: with their expiry, the record published now, and channels still without it
        self.prekeys_on = False
        self.prekey_privates: dict[bytes, tuple[bytes, int]] = {}
        self.own_prekey: tuple[bytes, Prekey] | None = None
        self._prekey_missing: set[bytes] = set()
        self._identity_prekey_id = identity_prekey_id(identity.did)
        #: per channel, the epoch sets already asked for (one key request per set)
        self._requested: dict[bytes, frozenset[bytes]] = {}
        #: key requests this node answered or declined (by envelope id)
        self._answered: set[bytes] = set()
        #: next sweep of ephemeral channels' old secrets
        self._next_sweep = 0
        #: joins waiting out ADMIT_GRACE_MS (envelope id -> first seen), and per channel
        #: when key work is due again for them
        self._join_seen: dict[bytes, int] = {}
        #: DM offers (invite URIs) to deliver when a link to the peer opens, by DID
        self._dm_offers: dict[str, str] = {}
        #: DMs beyond a direct link: relayed items, receipts, mailbox offers
        self.dm_relay = DmRouter(self)
        self._key_due: dict[bytes, int] = {}
        #: channels catching up on what peers' summaries announced (``sync_progress``)
        self._sync: dict[bytes, SyncProgress] = {}
        #: channels whose sync progress changed since the runtime last took this set
        self.sync_changed: set[bytes] = set()

    # --- queries ------------------------------------------------------------------

    def get(self, channel: bytes) -> ChannelState:
        state = self.channels.get(channel)
        if state is None:
            raise KeyError(channel)
        return state

    def name_of(self, channel: bytes) -> str:
        state = self.channels[channel]
        return state.name or self.names.get(channel, "")

    def shared_with(self, channel: bytes) -> list[str]:
        return sorted(lc.link.peer_did or "" for lc in self._links.values()
                      if channel in lc.shared)

    def sync_progress(self, channel: bytes) -> SyncProgress | None:
        """How far ``channel`` has caught up on what linked peers' summaries announced
        (an initial sync after a join, or catch-up after being offline); None when this
        node lacks nothing they announced."""
        return self._sync.get(channel)

    def _track_sync(self, channel: bytes) -> None:
        """Recount what ``channel`` lacks of the peers' summaries: after a summary, an
        applied batch, or a link (or a peer's right to sync) gone. ``received`` grows by
        what the lack shrank by, so envelopes nobody announced do not count."""
        old = self._sync.get(channel)
        state = self.channels.get(channel)
        if state is None or (old is None and
                             not any(channel in lc.ahead for lc in self._links.values())):
            return
        top: dict[tuple[str, bytes], int] = {}
        for lc in self._links.values():
            ahead = lc.ahead.get(channel)
            if ahead is None:
                continue
            for device, seq in list(ahead.items()):
                if state.vector.get(device, 0) >= seq:
                    del ahead[device]
                elif seq > top.get(device, 0):
                    top[device] = seq
            if not ahead:
                del lc.ahead[channel]
        behind = sum(seq - state.vector.get(device, 0) for device, seq in top.items())
        if behind == 0:
            self._sync.pop(channel, None)
        else:
            received = 0 if old is None else old.received + max(0, old.behind - behind)
            self._sync[channel] = SyncProgress(received, behind)
        if self._sync.get(channel) != old:
            self.sync_changed.add(channel)

    # --- requests -----------------------------------------------------------------

    def private_for(self, prekey_id: bytes) -> bytes | None:
        """This node's private key for one of its prekeys (or its identity fallback)."""
        if prekey_id == self._identity_prekey_id:
            return identity_prekey_private(self.identity)
        entry = self.prekey_privates.get(prekey_id)
        return entry[0] if entry is not None else None

    def _new_state(self, channel: bytes, key: bytes,
                   secrets: tuple[tuple[bytes, bytes], ...] = ()) -> ChannelState:
        """A channel with group keys (``key`` empty) or, stored before them, a static key."""
        if key:
            epoch = epoch_id_for(key)
            state = ChannelState(channel, self.identity, lambda e: key if e == epoch else None,
                                 self.private_for)
            state.current_epoch = epoch
            self.keys[channel] = key
        else:
            state = ChannelState(channel, self.identity, None, self.private_for, dict(secrets))
        self._adopt(state)
        if self.prekeys_on:
            self._prekey_missing.add(channel)
        return state

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

    def _restore(self, stored: StoredChannel) -> ChannelState | None:
        from p2pchat.channel.envelope import channel_topic, envelope_id_of

        key = stored.key
        epoch = epoch_id_for(key) if key else None
        covered = stored.envelopes[:stored.covered]
        try:
            topic = channel_topic(stored.channel)
            raw = {envelope_id_of(r, topic): r for r in covered}
            state = ChannelState.restore(stored.channel, self.identity,
                                         (lambda e: key if e == epoch else None) if key
                                         else None, epoch, stored.snapshot or b"", raw,
                                         self.private_for, dict(stored.secrets))
        except Exception:  # a damaged snapshot costs a full replay, never the channel
            return None
        self._adopt(state)
        return state

    def snapshots(self, force: bool = False) -> list[Effect]:
        """Snapshots of channels that grew by SNAPSHOT_EVERY (or any amount, if ``force``)."""
        effects: list[Effect] = []
        for channel, state in sorted(self.channels.items()):
            grown = len(state.log) - self._snapshot_at.get(channel, 0)
            due = self.snapshot_every and grown >= self.snapshot_every
            if grown and (force or due) and state.genesis_id is not None:
                self._snapshot_at[channel] = len(state.log)
                effects.append(PersistSnapshot(channel, state.snapshot(), len(state.log)))
        return effects

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

    def invite_for(self, channel: bytes, now_ms: int,
                   peers: tuple[tuple[str, str, int], ...] = ()) -> Invite:
        """An invite carrying a fresh capability (not a key) for ``channel``."""
        state = self.get(channel)
        if not state.e2ee:
            raise ValueError("this channel predates group keys and cannot invite; "
                             "create a new channel")
        if state.genesis_id is None:
            raise ValueError("channel not synced yet")
        if self.identity.did not in state.group.view().members:
            raise ValueError("only a member holding the channel's keys can invite")
        cap = self._randbytes(32)
        grant, signature = make_grant(self.identity, channel, cap, now_ms + INVITE_TTL_MS)
        return Invite(channel, cap, self.name_of(channel), self.identity.did, peers, grant,
                      signature, state.raw[state.genesis_id])

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

    def _join(self, channel: bytes, name: str, cap: bytes, grant: bytes, signature: bytes,
              genesis: bytes, now_ms: int, dm_from: str = "") -> tuple[list[Effect], str]:
        """Take the genesis from an invite and write our join; (effects, error)."""
        state = ChannelState(channel, self.identity, None, self.private_for)
        try:
            result = state.receive_bytes(genesis, now_ms)
            if state.genesis_id is None or not result.applied:
                raise Rejected("not this channel's genesis")
            if dm_from and (state.founder != dm_from or state.dm_peer != self.identity.did):
                raise Rejected("not a direct-message channel from that peer to us")
            record = self.own_prekey[0] if self.own_prekey is not None else b""
            state.join(grant, signature, make_proof(cap, channel, self.identity.did), record,
                       now_ms, self._randbytes)
        except (RemoteProtocolError, ValueError, RuntimeError) as exc:
            return [], str(exc)
        self._adopt(state)
        if self.prekeys_on:
            self._prekey_missing.add(channel)
        self.names[channel] = name
        own = [(i, state.raw[i]) for i in state.log]
        self.own_written += [(channel, raw) for _, raw in own]
        return [PersistChannel(channel, name, b""), PersistEnvelopes(channel, tuple(own))], ""

    # --- direct messages -------------------------------------------------------------

    def _dm_channels(self, did: str) -> list[tuple[int, bytes]]:
        """(created, channel) of every direct-message channel between us and ``did``."""
        me = self.identity.did
        return [(s.created, c) for c, s in self.channels.items() if s.dm_peer
                and {s.founder, s.dm_peer} == {me, did}]

    def dm_channel(self, did: str) -> bytes | None:
        """The direct-message channel with ``did`` (the oldest, if both made one)."""
        found = self._dm_channels(did)
        return min(found)[1] if found else None

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

    def _after_local(self, state: ChannelState, before: int, hold: bool = False
                     ) -> list[Effect]:
        """Store and push what a local write added to the log (the write itself, and a
        rotation that had to go first), with the secrets it made."""
        own = [(i, state.raw[i]) for i in state.log[before:]]
        return self._key_effects(state) + self._after_apply(state, own, source=None, own=True,
                                                            hold=hold)

    def _key_effects(self, state: ChannelState) -> list[Effect]:
        out = self._outcomes.get(state.channel_id)
        if out is None:
            return []
        effects: list[Effect] = [PersistEpochKey(state.channel_id, e, s)
                                 for e, s in out.new_secrets]
        out.new_secrets.clear()
        return effects

    def _took(self, state: ChannelState, result: _Result, index: bool = True) -> _Result:
        """Keep what a call on ``state`` returned that it changed: messages to index (unless
        ``index`` is false) for :meth:`_after_apply`, secrets for :meth:`_key_effects`."""
        out = self._outcomes.setdefault(state.channel_id, Outcome())
        if index:
            out.changed += result.changed
        out.new_secrets += result.new_secrets
        return result

    def _took_created(self, state: ChannelState) -> None:
        """A channel we just founded (and maybe wrote to): every secret it holds is new,
        in the order it learnt them; nothing to index yet."""
        out = self._outcomes.setdefault(state.channel_id, Outcome())
        out.new_secrets += state.group.secrets.items()

    # --- group keys: admissions, key requests, rotations (DESIGN §5) -------------------

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

    def key_deadline(self) -> int | None:
        """Wall time (ms) when waiting admissions are due, if any."""
        return min(self._key_due.values(), default=None)

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

    def _prekey_for(self, state: ChannelState, did: str, now_ms: int) -> Prekey | None:
        prekey = state.prekey_of(did, now_ms)
        if prekey is None and not state.prekeys.get(did):
            try:
                return identity_prekey(did)
            except KeyError_:
                return None
        return prekey

    def _held_epochs(self, state: ChannelState) -> list[bytes]:
        group, me = state.group, self.identity.did
        return [e for e in group.epochs if e in group.secrets and group.holds(me, e)]

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

    # --- prekeys (E2EE groundwork: published now, used by key bundles next) -----------

    def load_prekeys(self, items: tuple[tuple[bytes, bytes], ...], now_ms: int) -> None:
        """This node's prekeys kept by earlier runs; turns prekey maintenance on."""
        for record, private in items:
            try:
                prekey = open_prekey(record, now_ms)
            except KeyError_:
                continue
            if prekey.did != self.identity.did:
                continue
            self.prekey_privates[prekey.prekey_id] = (private, prekey.expires_ms)
            if self.own_prekey is None or prekey.expires_ms > self.own_prekey[1].expires_ms:
                self.own_prekey = (record, prekey)
        self.prekeys_on = True
        self._prekey_missing = set(self.channels)

    def prekey_work(self, now_ms: int) -> bool:
        return self.prekeys_on and (bool(self._prekey_missing) or self.own_prekey is None
                                    or self.own_prekey[1].expires_ms - now_ms
                                    < PREKEY_RENEW_MS)

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

    @property
    def holding(self) -> bool:
        return self._held_count > 0 or bool(self._drop_after_flush) or bool(self._queued)

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

    # --- links --------------------------------------------------------------------

    def on_link_open(self, link: Link) -> list[Effect]:
        lc = _LinkChannels(link, {}, set())
        self._links[link.link_id] = lc
        effects = self._subscribe(lc)
        if link.peer_did in self._dm_offers:
            effects += self._offer(link.peer_did or "")
        return effects + self.dm_relay.on_link_open(link)

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

    def _adopt(self, state: ChannelState) -> None:
        state.shared = self.shared
        self.channels[state.channel_id] = state

    def _topic(self, lc: _LinkChannels, channel: bytes) -> bytes:
        topic = lc.by_channel.get(channel)
        return topic if topic is not None else topic_for(channel, lc.link.session_id)

    def _channel_of(self, lc: _LinkChannels, topic: bytes) -> bytes:
        channel = lc.topics.get(topic)
        if channel is None or channel not in lc.shared:
            raise RemoteProtocolError("frame for a channel not shared on this link")
        return channel

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

    def own_envelopes(self, channel: bytes) -> list[bytes]:
        """This device's envelopes of ``channel``, in log order (what it uploads)."""
        state = self.channels[channel]
        me = self.identity.did
        return [state.raw[i] for i in state.log
                if state.envs[i].author == me and state.owns_device(state.envs[i].device)]

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
