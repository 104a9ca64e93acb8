"""The channel hub's state: this node's channels and links, and the queries and small
helpers every part of the hub shares. Sans-IO.

The hub is four classes, each extending the one below, so a call only goes down:
:class:`HubState` (here) → :class:`~p2pchat.core.replication.Replication` (links,
summaries, batches, pushes, held writes) → :class:`~p2pchat.core.keywork.KeyWork`
(group keys and prekeys) → :class:`~p2pchat.core.channels.ChannelHub` (requests,
direct messages, receiving).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.invite import INVITE_TTL_MS, Invite, make_grant, make_proof
from p2pchat.channel.keys import (
    KeyError_,
    Prekey,
    identity_prekey,
    identity_prekey_id,
    identity_prekey_private,
    open_prekey,
)
from p2pchat.channel.memo import ReceiveMemo
from p2pchat.channel.records import Outcome
from p2pchat.channel.state import (
    ChannelState,
    ReceiveResult,
    Rejected,
    Written,
    epoch_id_for,
)
from p2pchat.core.dm import DmRouter
from p2pchat.core.events import (
    Effect,
    PersistChannel,
    PersistEnvelopes,
    PersistEpochKey,
    PersistSnapshot,
    StoredChannel,
    SyncProgress,
)
from p2pchat.core.link import Link
from p2pchat.crypto import blake2b
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity
from p2pchat.wire import Summary
from p2pchat.wire.frames import TOPIC_SIZE

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


class HubState:
    """The hub's state and queries (see the module docstring)."""

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
        #: DMs beyond a direct link: relayed items, receipts, mailbox offers (made by the
        #: hub's top layer, which is the router's host)
        self.dm_relay: DmRouter
        self._key_due: dict[bytes, int] = {}
        #: channels catching up on what peers' summaries announced (``sync_progress``)
        self._sync: dict[bytes, SyncProgress] = {}
        #: channels whose sync progress changed since the runtime last took this set
        self.sync_changed: set[bytes] = set()

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

    def _dm_channels(self, did: str) -> list[tuple[int, bytes]]:
        """(created, channel) of every direct-message channel between us and ``did``."""
        me = self.identity.did
        return [(s.created, c) for c, s in self.channels.items() if s.dm_peer
                and {s.founder, s.dm_peer} == {me, did}]

    def dm_channel(self, did: str) -> bytes | None:
        """The direct-message channel with ``did`` (the oldest, if both made one)."""
        found = self._dm_channels(did)
        return min(found)[1] if found else None

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

    def key_deadline(self) -> int | None:
        """Wall time (ms) when waiting admissions are due, if any."""
        return min(self._key_due.values(), default=None)

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

    @property
    def holding(self) -> bool:
        return self._held_count > 0 or bool(self._drop_after_flush) or bool(self._queued)

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

    def own_envelopes(self, channel: bytes) -> list[bytes]:
        """This device's envelopes of ``channel``, in log order (what it uploads)."""
        state = self.channels[channel]
        me = self.identity.did
        return [state.raw[i] for i in state.log
                if state.envs[i].author == me and state.owns_device(state.envs[i].device)]
