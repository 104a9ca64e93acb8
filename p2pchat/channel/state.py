"""One channel's replica: verify, order and apply envelopes; author new ones. Sans-IO.

:class:`ChannelState` is a façade: it builds the replica's parts, wires them together
and gives the rest of the node one object per channel. Each part holds one concept:

* :mod:`~p2pchat.channel.dag`: recorded envelopes, slots, vectors, the pending buffer;
* :mod:`~p2pchat.channel.clocks`: causal clocks ("is A in B's past?");
* :mod:`~p2pchat.channel.receive`: the receive pipeline (verify, open, admit, apply;
  its module docstring is the theory of operation of a replica);
* :mod:`~p2pchat.channel.fold`: validation of operations and the index they build;
* :mod:`~p2pchat.channel.authoring`: local writes and the (sub-)device they go on;
* :mod:`~p2pchat.channel.views`: history, members, ranks, the modlog;
* :mod:`~p2pchat.channel.snapshot`: snapshots;
* :mod:`~p2pchat.channel.keyring` and :mod:`~p2pchat.channel.group`: epoch keys;
* :mod:`~p2pchat.channel.memo`: the seam for sharing pure work between replicas.

What one call changed that the caller must act on (messages to index, secrets to
persist) is returned by that call (:class:`ReceiveResult` for what it received,
:class:`Written` for what it wrote), never left on the replica for the caller to drain.
"""

from __future__ import annotations

from typing import Any

from p2pchat.channel import snapshot as snapshots
from p2pchat.channel.authoring import Device, RandomBytes, Writer
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.doc import AuthoringDocument, SharedDocument
from p2pchat.channel.envelope import Envelope, channel_topic
from p2pchat.channel.fold import MAX_TEXT_LENGTH, Fold
from p2pchat.channel.group import POLICIES, GroupKeys, PrivateLookup
from p2pchat.channel.keyring import KeyLookup, Keyring
from p2pchat.channel.keys import Prekey, identity_prekey_id, identity_prekey_private
from p2pchat.channel.memo import PLAIN, ReceiveMemo
from p2pchat.channel.moderation import ModEvent, ModState
from p2pchat.channel.operation import (
    MAX_CHANGE_SIZE,
    MAX_POSTS_BYTES,
    MAX_POSTS_PER_ENVELOPE,
    POST_ENTRY_OVERHEAD,
    channel_id_for,
    clear_key,
    decode_operation,
    encode_operation,
    epoch_id_for,
)
from p2pchat.channel.receive import Receiver
from p2pchat.channel.records import (
    EnvMeta,
    MessageRecord,
    MessageView,
    Outcome,
    PendingFull,
    ReceiveResult,
    Rejected,
    Status,
    Written,
)
from p2pchat.channel.views import MAX_DISPLAY_SKEW_MS, Views
from p2pchat.identity import Identity

#: re-exported: what the node's other layers take from here
__all__ = [
    "MAX_CHANGE_SIZE", "MAX_DISPLAY_SKEW_MS", "MAX_POSTS_BYTES", "MAX_POSTS_PER_ENVELOPE",
    "MAX_TEXT_LENGTH", "POST_ENTRY_OVERHEAD", "ChannelState", "KeyLookup", "MessageRecord",
    "MessageView", "PendingFull", "RandomBytes", "ReceiveResult", "Rejected", "Status",
    "Written", "channel_id_for", "clear_key", "decode_operation", "encode_operation",
    "epoch_id_for",
]

MAX_CHANNEL_NAME = 100


class ChannelState:
    def __init__(self, channel_id: bytes, identity: Identity, keys: KeyLookup | None = None,
                 private_for: PrivateLookup | None = None,
                 secrets: dict[bytes, bytes] | None = None,
                 memo: ReceiveMemo | None = None) -> None:
        """``keys``: static epoch keys known out of band (channels from before group keys,
        and tests of the DAG machinery); ``private_for``: this node's prekey private keys
        by prekey id (default: the identity fallback only); ``secrets``: the keyring;
        ``memo``: work shared with other replicas in this process (the simulator's)."""
        self.channel_id = channel_id
        #: what binds envelopes to this channel (their signatures and ids)
        self.topic = channel_topic(channel_id)
        memo = memo or PLAIN
        #: what the current call changed (see Outcome); taken by each public call
        self._out = Outcome()
        own_id = identity_prekey_id(identity.did)
        self.group = GroupKeys(self, private_for or (
            lambda pid: identity_prekey_private(identity) if pid == own_id else None),
            self._out)
        self.group.secrets.update(secrets or {})
        self.keyring = Keyring(channel_id, self.group.secrets, keys)
        self.dag = Dag(channel_id, self.topic, self.keyring)
        self.clocks = CausalClocks(self.dag)
        self.fold = Fold(channel_id, self.dag, self.clocks, self.group, self.keyring, memo,
                         self._out)
        self.device = Device(identity)
        self.receiver = Receiver(channel_id, self.topic, self.dag, self.clocks, self.fold,
                                 self.group, self.keyring, self.device, memo)
        self.writer = Writer(channel_id, self.device, self.dag, self.clocks, self.fold,
                             self.group, self.keyring, self.receiver, self._out)
        self.views = Views(self.fold, self.dag, self.clocks, self.group, self.keyring)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, identity: Identity, name: str, key: bytes | None, now_ms: int,
               randbytes: RandomBytes, policy: str = "history",
               private_for: PrivateLookup | None = None, dm: str = ""
               ) -> tuple[ChannelState, Envelope]:
        """Found a channel: the genesis envelope, applied locally.

        With ``key=None`` (every new channel) the genesis goes in the clear epoch and the
        founder distributes the first epoch at once (a second envelope in ``log``); a
        static ``key`` makes a channel whose one epoch everybody knows out of band.
        """
        name = name.strip()
        if not name or len(name) > MAX_CHANNEL_NAME:
            raise ValueError(f"channel name must be 1..{MAX_CHANNEL_NAME} characters")
        if policy not in POLICIES:
            raise ValueError(f"history policy must be one of {', '.join(POLICIES)}")
        nonce = randbytes(32)
        cid = channel_id_for(identity.did, name, nonce)
        if key is not None:
            epoch = epoch_id_for(key)
            state = cls(cid, identity, lambda e: key if e == epoch else None, private_for)
            state.current_epoch = epoch
        else:
            state = cls(cid, identity, None, private_for)
        env = state.writer.genesis(name, nonce, now_ms, randbytes, policy, dm)
        # nothing to index yet, and every secret it made is in state.group.secrets
        state._take()
        return state, env

    @classmethod
    def restore(cls, channel_id: bytes, identity: Identity, keys: KeyLookup | None,
                epoch: bytes | None, data: bytes, raw: dict[bytes, bytes],
                private_for: PrivateLookup | None = None,
                secrets: dict[bytes, bytes] | None = None) -> ChannelState:
        """Rebuild from :meth:`snapshot` plus the stored bytes of the envelopes it covers
        (``epoch``: the static epoch, or None for a channel with group keys)."""
        state = cls(channel_id, identity, keys, private_for, secrets)
        state.current_epoch = epoch
        snapshots.load(data, raw, state.dag, state.clocks, state.fold, state.writer,
                       state.group)
        return state

    def snapshot(self) -> bytes:
        """Everything but the envelope bytes (the store has those) and the pending buffer."""
        return snapshots.dump(self.dag, self.fold, self.device, self.group)

    # --- the outcome of a call ------------------------------------------------------------

    # Each public call that may change something takes what it changed out of the
    # collector and returns it (a call that raises leaves it to the next call's result:
    # a secret it made must still reach the store).

    def _take(self) -> tuple[tuple[str, ...], tuple[tuple[bytes, bytes], ...]]:
        out = self._out
        taken = tuple(out.changed), tuple(out.new_secrets)
        out.changed.clear()
        out.new_secrets.clear()
        return taken

    def _received(self, result: ReceiveResult) -> ReceiveResult:
        changed, secrets = self._take()
        result.changed += changed
        result.new_secrets += secrets
        return result

    def _written(self, env: Envelope, made: str = "") -> Written:
        changed, secrets = self._take()
        return Written(env, made, changed, secrets)

    # --- parts' state, as the node reads it ---------------------------------------------

    @property
    def identity(self) -> Identity:
        return self.device.identity

    @property
    def authoring(self) -> AuthoringDocument:
        return self.device.authoring

    @property
    def head_unsure(self) -> bool:
        return self.writer.head_unsure

    @head_unsure.setter
    def head_unsure(self, value: bool) -> None:
        self.writer.head_unsure = value

    @property
    def shared(self) -> ReceiveMemo:
        return self.receiver.memo

    @shared.setter
    def shared(self, memo: ReceiveMemo | None) -> None:
        """Share pure work with other replicas in this process (None: share nothing)."""
        self.receiver.memo = self.fold.memo = memo or PLAIN

    @property
    def current_epoch(self) -> bytes | None:
        return self.keyring.current_epoch

    @current_epoch.setter
    def current_epoch(self, epoch: bytes | None) -> None:
        self.keyring.current_epoch = epoch

    @property
    def e2ee(self) -> bool:
        """Group keys (bundles), not a static key."""
        return self.keyring.e2ee

    @property
    def clear_epoch(self) -> bytes:
        return self.keyring.clear_epoch

    @property
    def doc(self) -> SharedDocument:
        return self.fold.doc

    @property
    def name(self) -> str:
        return self.fold.name

    @property
    def founder(self) -> str:
        return self.fold.founder

    @property
    def created(self) -> int:
        return self.fold.created

    @property
    def policy(self) -> str:
        return self.fold.policy

    @property
    def dm_peer(self) -> str:
        return self.fold.dm_peer

    @property
    def prekeys(self) -> dict[str, dict[bytes, Prekey]]:
        return self.fold.prekeys

    @property
    def messages(self) -> dict[str, MessageRecord]:
        return self.fold.messages

    @property
    def reactions(self) -> dict[tuple[str, str, str, bytes], list[tuple[int, bool]]]:
        return self.fold.reactions

    @property
    def mod_events(self) -> list[ModEvent]:
        return self.fold.mod_events

    @property
    def genesis_id(self) -> bytes | None:
        return self.dag.genesis_id

    @property
    def genesis_hash(self) -> bytes | None:
        return self.dag.genesis_hash

    @property
    def envs(self) -> dict[bytes, EnvMeta]:
        return self.dag.envs

    @property
    def raw(self) -> dict[bytes, bytes]:
        return self.dag.raw

    @property
    def log(self) -> list[bytes]:
        return self.dag.log

    @property
    def slots(self) -> dict[tuple[str, bytes, int], bytes]:
        return self.dag.slots

    @property
    def vector(self) -> dict[tuple[str, bytes], int]:
        return self.dag.vector

    @property
    def equivocators(self) -> dict[tuple[str, bytes], int]:
        return self.dag.equivocators

    @property
    def heads(self) -> set[bytes]:
        return self.dag.heads

    @property
    def pending(self) -> dict[bytes, Envelope]:
        return self.dag.pending

    @property
    def sealed(self) -> set[bytes]:
        return self.dag.sealed

    @property
    def unreadable(self) -> set[bytes]:
        return self.dag.unreadable

    # --- group keys -----------------------------------------------------------------------

    def key_status(self) -> str:
        return self.writer.key_status()

    def sealed_count(self) -> int:
        return len(self.dag.sealed)

    def sealed_epochs(self) -> list[bytes]:
        """Epochs of sealed envelopes whose secret this replica lacks."""
        envs, secrets = self.dag.envs, self.group.secrets
        out = {m.epoch for m in (envs[i] for i in self.dag.sealed)
               if m.epoch not in secrets and m.epoch != self.clear_epoch}
        return sorted(out)

    def epoch_of(self, env_id: bytes) -> bytes:
        return self.dag.envs[env_id].epoch

    def order_of(self, env_id: bytes) -> int:
        """An envelope's place in this replica's log (a causal order)."""
        return self.dag.envs[env_id].order

    def forget_message_keys(self, epoch: bytes) -> None:
        self.keyring.forget_message_keys(epoch)

    def prekey_of(self, did: str, now_ms: int) -> Prekey | None:
        return self.fold.prekey_of(did, now_ms)

    # --- authoring (see p2pchat.channel.authoring) ----------------------------------------

    def rotate(self, now_ms: int, randbytes: RandomBytes) -> Written:
        return self._written(self.writer.rotate(now_ms, randbytes))

    def share(self, recipients: list[Prekey], epochs: list[bytes], now_ms: int,
              randbytes: RandomBytes) -> Written:
        return self._written(self.writer.share(recipients, epochs, now_ms, randbytes))

    def join(self, grant: bytes, grant_signature: bytes, proof: bytes, prekey: bytes,
             now_ms: int, randbytes: RandomBytes) -> Written:
        return self._written(self.writer.join(grant, grant_signature, proof, prekey, now_ms,
                                              randbytes))

    def request_keys(self, epochs: list[bytes], prekey: bytes, now_ms: int,
                     randbytes: RandomBytes) -> Written:
        return self._written(self.writer.request_keys(epochs, prekey, now_ms, randbytes))

    def publish_prekey(self, record: bytes, now_ms: int, randbytes: RandomBytes) -> Written:
        return self._written(self.writer.publish_prekey(record, now_ms, randbytes))

    def check_post(self, text: str, reply_to: str = "") -> None:
        self.writer.check_post(text, reply_to)

    def post(self, text: str, now_ms: int, randbytes: RandomBytes, reply_to: str = ""
             ) -> Written:
        return self._written(*self.writer.post(text, now_ms, randbytes, reply_to))

    def post_room(self, now_ms: int, posts: list[tuple[str, str]]) -> int:
        return self.writer.post_room(now_ms, posts)

    def post_many(self, posts: list[tuple[str, str, str]], now_ms: int,
                  randbytes: RandomBytes) -> Written:
        return self._written(self.writer.post_many(posts, now_ms, randbytes))

    def edit(self, msg_id: str, text: str, now_ms: int, randbytes: RandomBytes) -> Written:
        return self._written(self.writer.edit(msg_id, text, now_ms, randbytes))

    def delete(self, msg_id: str, now_ms: int, randbytes: RandomBytes) -> Written:
        return self._written(self.writer.delete(msg_id, now_ms, randbytes))

    def react(self, target: str, emoji: str, on: bool, now_ms: int, randbytes: RandomBytes
              ) -> Written:
        return self._written(self.writer.react(target, emoji, on, now_ms, randbytes))

    def moderate(self, action: str, now_ms: int, randbytes: RandomBytes, *, target: str = "",
                 value: str = "", on: bool = True, reason: str = "", check: bool = True
                 ) -> Written:
        return self._written(*self.writer.moderate(
            action, now_ms, randbytes, target=target, value=value, on=on, reason=reason,
            check=check))

    def owns_device(self, salt: bytes) -> bool:
        return self.writer.owns_device(salt)

    def use_device(self, salt: bytes) -> None:
        """Write as device ``salt`` (ours) from now on (on start: nothing it reopens is
        new to the keyring or the index)."""
        self.writer.use_device(salt)
        self._take()

    def head_seen(self, announced: int) -> None:
        self.writer.head_seen(announced)

    # --- receiving (see p2pchat.channel.receive) -------------------------------------------

    def receive(self, env: Envelope, now_ms: int, signature_ok: bool | None = None
                ) -> ReceiveResult:
        """Verify and (when its deps are here) apply ``env``. Raises :class:`Rejected`."""
        return self._received(self.receiver.receive(env, now_ms, signature_ok))

    def receive_bytes(self, data: bytes, now_ms: int) -> ReceiveResult:
        return self.receive(self.decode(data), now_ms)

    def settle(self) -> ReceiveResult:
        """Open what the keyring can open now and apply what an unban readmits (after a
        restore, say); what that did."""
        result = ReceiveResult()
        self.receiver.settle(result)
        return self._received(result)

    def decode(self, data: bytes) -> Envelope:
        return self.receiver.decode(data)

    def id_of(self, data: bytes) -> bytes:
        return self.receiver.id_of(data)

    def preapply(self, envelopes: list[Envelope], verdicts: dict[bytes, bool]) -> int:
        return self.receiver.preapply(envelopes, verdicts)

    def is_known(self, env_id: bytes) -> bool:
        return self.dag.is_known(env_id)

    def missing_for(self, vector: dict[tuple[str, bytes], int]) -> list[bytes]:
        return self.dag.missing_for(vector)

    # --- causality and moderation -----------------------------------------------------------

    def in_past(self, ancestor: bytes, env_id: bytes) -> bool:
        return self.clocks.in_past(ancestor, env_id)

    def moderation(self) -> ModState:
        return self.fold.moderation()

    # --- views (see p2pchat.channel.views) --------------------------------------------------

    def claims(self, msg_id: str) -> list[MessageRecord]:
        return self.fold.claims(msg_id)

    def hidden(self, record: MessageRecord) -> bool:
        return self.views.hidden(record)

    def hidden_why(self, record: MessageRecord) -> str:
        return self.views.hidden_why(record)

    def visible(self, record: MessageRecord) -> tuple[str, bool, int | None]:
        return self.views.visible(record)

    def may_sync(self, did: str) -> bool:
        return self.views.may_sync(did)

    def member_ranks(self) -> list[tuple[str, str]]:
        return self.views.member_ranks()

    def modlog(self) -> list[dict[str, Any]]:
        return self.views.modlog()

    def members(self) -> list[str]:
        return self.views.members()

    def message_count(self) -> int:
        return self.views.message_count()

    def history(self, limit: int | None = None, now_ms: int | None = None,
                with_hidden: bool = False) -> list[MessageView]:
        return self.views.history(limit, now_ms, with_hidden)

    def history_page(self, limit: int, *, before: str | None = None, after: str | None = None,
                     now_ms: int | None = None, with_hidden: bool = False) -> list[MessageView]:
        return self.views.history_page(limit, before=before, after=after, now_ms=now_ms,
                                       with_hidden=with_hidden)

    def views_of(self, ids: set[str], now_ms: int | None = None) -> list[MessageView]:
        return self.views.views_of(ids, now_ms)

