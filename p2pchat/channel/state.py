"""One channel's replica: verify, order and apply envelopes; author new ones. Sans-IO.

Theory of operation
-------------------
``receive(envelope, now_ms)`` runs the checks of DESIGN §3 in order, cheapest
first, and never touches the document before all of them pass:

1. structure and size (``decode_envelope``), right channel, not a duplicate;
2. the author's Ed25519 signature over the exact signed bytes;
3. a known epoch key, then authenticated decryption (header as associated data);
4. the plaintext: an operation descriptor plus one raw Automerge change whose
   actor is ``actor_id(author, device)`` and whose seq is the envelope's seq;
5. equivocation: a second, different envelope for one ``(author, device, seq)``
   marks that device as equivocating from that seq (see below);
6. causality: every envelope dep known, else the envelope waits in a bounded
   pending buffer and is retried when its deps arrive;
7. the change's own deps are exactly genesis (first change of a device) or the
   device's previous change (see :mod:`p2pchat.channel.doc`);
8. apply the change, then validate the declared operation against the document
   read *at the change's own heads*; an operation that does not match, or that
   breaks a rule (edit of another author's message…), leaves the envelope
   ``invalid``: kept for replication and dependencies, never shown.

Every check depends only on the envelope and its causal past, so every replica
reaches the same verdict for the same envelope.

Equivocation: both envelopes are kept (so they reach every replica as evidence)
and every envelope of that device from the lower seq on is hidden from views;
its later changes are not applied. Since honest changes never depend on another
device's change, honest authors are unaffected.

Display order: each envelope gets ``eff = max(op.ts, eff(deps))`` and
``depth = 1 + max(depth(deps))``; messages sort by ``(eff, depth, ulid)``. This
is a linear extension of the causal order that follows authors' clocks where
they agree with causality, and it is computed once per envelope.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise
from typing import Any

import msgpack

from p2pchat.channel import moderation as mod
from p2pchat.channel.change import ChangeFormatError, ChangeHeader, parse_change
from p2pchat.channel.doc import AuthoringDocument, ChangeApplyError, SharedDocument
from p2pchat.channel.envelope import (
    Envelope,
    actor_id,
    channel_topic,
    decode_envelope,
    envelope_id_of,
    seal_envelope,
)
from p2pchat.channel.group import (
    MAX_REQUEST_EPOCHS,
    POLICIES,
    ROTATE_EVERY,
    EpochInfo,
    GroupKeys,
    JoinInfo,
    PrivateLookup,
    RequestInfo,
    ShareInfo,
)
from p2pchat.channel.invite import check_grant, check_proof
from p2pchat.channel.keys import (
    BundleHeader,
    KeyError_,
    Prekey,
    epoch_id,
    identity_prekey_id,
    identity_prekey_private,
    message_key,
    open_prekey,
    read_bundle,
    read_share,
    seal_bundle,
    seal_share,
)
from p2pchat.channel.moderation import ModEvent, ModState
from p2pchat.channel.shared import SharedWork
from p2pchat.channel.ulid import (
    ULID_BYTES,
    is_ulid,
    make_ulid,
    ulid_from_bytes,
    ulid_ms,
    ulid_to_bytes,
)
from p2pchat.crypto import DecryptionError, blake2b
from p2pchat.errors import IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did

#: Envelopes a write looks through, back from sealed heads, for the newest readable
#: ones to depend on (see ChannelState._readable_frontier).
MAX_FRONTIER_WALK = 4096
#: Envelopes waiting for missing dependencies, per channel.
MAX_PENDING = 10_000
#: Of those, from any one author (so one member cannot fill the buffer for everyone).
MAX_PENDING_PER_AUTHOR = 2_000
#: Longest message text, in characters.
MAX_TEXT_LENGTH = 16_000
#: Largest Automerge change inside one envelope, in bytes.
MAX_CHANGE_SIZE = 64 * 1024
#: Changes that automerge failed on remembered per replica, so a resend is refused
#: without another document rebuild (cleared when full).
MAX_UNAPPLIABLE = 256
#: Most posts one envelope carries (a burst of sends sealed together, DESIGN §10.2).
MAX_POSTS_PER_ENVELOPE = 64
#: Bytes of text (UTF-8, with reply_to) plus POST_ENTRY_OVERHEAD per post that one
#: multi-post envelope may carry: its change must stay under MAX_CHANGE_SIZE.
MAX_POSTS_BYTES = 56 * 1024
#: A bound on what one messages entry adds to a change besides its text (the map, its
#: id, four keys, the author DID, reply_to; ~140 bytes measured).
POST_ENTRY_OVERHEAD = 256
#: Changes applied ahead of their envelopes (preapply) that may wait for them.
MAX_PREAPPLIED = 10_000
MAX_CHANNEL_NAME = 100
MAX_EMOJI_LENGTH = 32
#: How far in the future a message time is shown before it is clamped to "now".
MAX_DISPLAY_SKEW_MS = 5 * 60 * 1000
SNAPSHOT_VERSION = 7
_CHANNEL_PERSON = b"p2pchat-chan"
_EPOCH_PERSON = b"p2pchat-epoch"

KeyLookup = Callable[[bytes], bytes | None]
RandomBytes = Callable[[int], bytes]


def channel_id_for(founder: str, name: str, nonce: bytes) -> bytes:
    return blake2b(msgpack.packb([founder, name, nonce], use_bin_type=True), person=_CHANNEL_PERSON)


def encode_operation(op: dict[str, Any], change: bytes) -> bytes:
    """An envelope's plaintext: ``[change, operation]``. A post, the commonest, is just
    ``[change, ulid]`` (16 bytes; its time is the ULID's): overhead counts (DESIGN §5).
    Several posts sealed together are ``[change, [ulid, ...]]`` (2 to
    MAX_POSTS_PER_ENVELOPE binary ULIDs, increasing; the time is the latest)."""
    if op["op"] == "post" and len(op) == 3 and is_ulid(op["id"]) \
            and op["ts"] == ulid_ms(op["id"]):
        body: Any = ulid_to_bytes(op["id"])
    elif op["op"] == "posts" and len(op) == 3:
        body = [ulid_to_bytes(i) for i in op["ids"]]
    else:
        body = op
    return msgpack.packb([change, body], use_bin_type=True)  # type: ignore[no-any-return]


def decode_operation(plaintext: bytes) -> tuple[dict[str, Any], bytes]:
    """(operation, change) from an envelope's plaintext; :class:`Rejected` if malformed."""
    try:
        outer = msgpack.unpackb(plaintext, raw=False, strict_map_key=True)
    except Exception as exc:
        raise Rejected(f"envelope plaintext is malformed: {type(exc).__name__}") from None
    if not (isinstance(outer, list) and len(outer) == 2 and type(outer[0]) is bytes):
        raise Rejected("envelope plaintext must be an operation with a change")
    change, body = outer
    if type(body) is bytes and len(body) == ULID_BYTES:
        msg_id = ulid_from_bytes(body)
        if not is_ulid(msg_id):
            raise Rejected("post id is not a ULID")
        return {"op": "post", "id": msg_id, "ts": ulid_ms(msg_id)}, change
    if type(body) is list:
        if not 2 <= len(body) <= MAX_POSTS_PER_ENVELOPE \
                or any(type(b) is not bytes or len(b) != ULID_BYTES for b in body):
            raise Rejected(f"a multi-post envelope names 2..{MAX_POSTS_PER_ENVELOPE} "
                           "binary ULIDs")
        ids = [ulid_from_bytes(b) for b in body]  # every 128-bit value is a ULID
        return {"op": "posts", "ids": ids, "ts": max(ulid_ms(i) for i in ids)}, change
    if not isinstance(body, dict) or type(body.get("op")) is not str \
            or type(body.get("ts")) is not int or "change" in body:
        raise Rejected("envelope plaintext must be an operation with a change")
    return body, change


def _post_bytes(text: str, reply_to: str) -> int:
    """What one post of a multi-post envelope counts against MAX_POSTS_BYTES."""
    return len(text.encode()) + len(reply_to) + POST_ENTRY_OVERHEAD


def epoch_id_for(key: bytes) -> bytes:
    """The id of the epoch whose group secret is ``key`` (a commitment to it)."""
    return blake2b(b"epoch", key=key, person=_EPOCH_PERSON)


def clear_key(channel_id: bytes) -> bytes:
    """The key of the *clear epoch*: derived from the channel id alone, so whoever knows
    the channel (members, joiners without a group key yet, servers) can read what is
    sealed under it. Only public material goes there: published prekeys (and, with the
    E2EE issue, key bundles, which are sealed per recipient anyway)."""
    return blake2b(b"clear", key=channel_id, person=b"p2pchat-clear")


class Status(Enum):
    APPLIED = "applied"
    INVALID = "invalid"  # applied to the document, but its operation broke a rule
    QUARANTINED = "quarantined"  # equivocation: kept as evidence, not applied
    #: its author was banned in its causal past: kept (later envelopes may depend on it,
    #: and sync must not fetch it again) but not applied, shown or pushed to peers
    REFUSED = "refused"
    #: recorded in the DAG (forwarded, counted in vectors) but not readable here: its
    #: epoch's secret is not in the keyring, or it depends on an envelope that is not;
    #: opened (in causal order) when the secret arrives
    SEALED = "sealed"


class _Sealed(Exception):
    """Internal: the envelope's epoch key is not (yet) in this replica's keyring."""


class _Unreadable(Exception):
    """Internal: under a group epoch this replica holds, the envelope does not open or
    its plaintext is malformed (possible for anyone who knows an epoch id)."""


class Rejected(RemoteProtocolError):
    """An envelope failed verification; it is not stored and changes nothing."""


class PendingFull(Rejected):
    """The pending buffer (the channel's, or its author's share) is full: the envelope is
    dropped, not the forwarder's fault; a later summary exchange fetches it again."""


class _Forked(Exception):
    """Internal: a signed change continues another change than the one this replica
    holds at its device's previous seq: its author signed two histories (a fork at
    ``seq``), whether it ever sent the other branch here or not."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


@dataclass(slots=True)
class EnvMeta:
    author: str
    device: bytes
    seq: int
    deps: tuple[bytes, ...]
    change_hash: bytes
    status: Status
    order: int
    eff: int
    depth: int
    why: str = ""
    epoch: bytes = b""


@dataclass(slots=True)
class MessageRecord:
    """A post and the later edits/deletes of its device, in that device's seq order."""

    id: str
    author: str
    device: bytes
    text: str
    reply_to: str
    ts: int
    env: bytes
    seq: int
    key: tuple[int, int, str]
    #: (seq, "edit" | "delete", text, ts) of later operations on this message
    ops: list[tuple[int, str, str, int]] = field(default_factory=list)

    @property
    def deleted_in_chain(self) -> bool:
        return any(kind == "delete" for _, kind, _, _ in self.ops)


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    author: str
    text: str
    reply_to: str
    ts: int
    edited: int | None
    deleted: bool
    reactions: dict[str, list[str]]
    #: why moderation hides it ("" if shown); only in ``history(with_hidden=True)``,
    #: which gives hidden posts as placeholders (no text) for moderators' views
    hidden: str = ""


@dataclass(slots=True)
class ReceiveResult:
    """What one ``receive`` did: envelopes applied now (in order), or why not."""

    applied: list[Envelope] = field(default_factory=list)
    #: stored as evidence of an equivocation, not applied
    quarantined: list[Envelope] = field(default_factory=list)
    #: stored but not applied: the author was banned in the envelope's causal past
    refused: list[Envelope] = field(default_factory=list)
    #: stored and forwarded, not readable here (yet): no key for its epoch
    sealed: list[Envelope] = field(default_factory=list)
    #: stored (it fills its author's seq, so nobody sends it again) but never applied
    #: and never pushed: under a key this replica holds it does not open, or its change
    #: is malformed or oversized (protocol.md §9.3)
    invalid: list[Envelope] = field(default_factory=list)
    #: earlier sealed envelopes that a new key opened (already stored)
    unsealed: list[Envelope] = field(default_factory=list)
    pending: bool = False
    duplicate: bool = False
    equivocation: bool = False


def _prekey_key(prekey_id: bytes) -> str:
    return f"prekey:{prekey_id.hex()}"


def _mod_fields(action: Any, target: Any, value: Any, on: Any, reason: Any
                ) -> dict[str, Any] | str:
    """The modlog fields of an action, or why it is malformed."""
    if action not in mod.ACTIONS:
        return f"unknown moderation action {str(action)[:32]!r}"
    if type(reason) is not str or len(reason) > mod.MAX_REASON_LENGTH:
        return f"reason must be at most {mod.MAX_REASON_LENGTH} characters"
    if action in mod.TARGET_ACTIONS:
        try:
            public_key_from_did(target)
        except (IdentityError, TypeError, AttributeError):
            return f"{action} needs a member's DID"
        return {"action": action, "target": target, "reason": reason}
    if action == "topic":
        if type(value) is not str or len(value) > mod.MAX_TOPIC_LENGTH:
            return f"topic must be at most {mod.MAX_TOPIC_LENGTH} characters"
        return {"action": action, "value": value, "reason": reason}
    if value not in mod.MODES or type(on) is not bool:
        return f"mode must be one of {', '.join(mod.MODES)}, set on or off"
    return {"action": action, "value": value, "on": on, "reason": reason}


#: device salts whose ownership ChannelState.owns_device remembers
MAX_OWN_DEVICE_MEMO = 4096
#: personalisation of a sub-device salt's check bytes (see :func:`sub_device_salt`)
SUB_DEVICE_PERSON = b"p2pchat-subdev"


def sub_device_salt(base: bytes, channel: bytes, nonce: bytes) -> bytes:
    """A fresh device salt for one channel that this node recognises as its own: 8 random
    bytes and 8 check bytes keyed with the node's own device salt (design.md §10.5).
    Only its DID can sign for it, so recognising it needs no secret."""
    return nonce[:8] + blake2b(nonce[:8] + channel, person=SUB_DEVICE_PERSON, key=base,
                               size=8)


def open_envelope(env: Envelope, key: bytes, channel: bytes
                  ) -> tuple[dict[str, Any], bytes, ChangeHeader]:
    """Decrypt ``env`` with ``key`` and check its change against its header: (operation,
    change, change header), or :class:`Rejected`. A pure function of its arguments."""
    try:
        plaintext = env.decrypt(key, channel)
    except DecryptionError as exc:
        raise Rejected(f"envelope does not decrypt: {exc}") from None
    op, change = decode_operation(plaintext)
    if len(change) > MAX_CHANGE_SIZE:
        raise Rejected(f"change of {len(change)} bytes exceeds {MAX_CHANGE_SIZE}")
    try:
        header = parse_change(change)
    except ChangeFormatError as exc:
        raise Rejected(f"bad change: {exc}") from None
    if header.actor != actor_id(env.author, env.device):
        raise Rejected("change actor does not belong to the envelope's author")
    if header.seq != env.seq:
        raise Rejected(f"change seq {header.seq} does not match envelope seq {env.seq}")
    return op, change, header


def _position(record: MessageRecord) -> tuple[tuple[int, int, str], bytes]:
    """A post's place in display order (design.md §10.6): its key, then its envelope id."""
    return record.key, record.env


class ChannelState:
    def __init__(self, channel_id: bytes, identity: Identity, keys: KeyLookup | None = None,
                 private_for: PrivateLookup | None = None,
                 secrets: dict[bytes, bytes] | None = None) -> None:
        """``keys``: static epoch keys known out of band (channels from before group keys,
        and tests of the DAG machinery); ``private_for``: this node's prekey private keys
        by prekey id (default: the identity fallback only); ``secrets``: the keyring."""
        self.channel_id = channel_id
        #: what binds envelopes to this channel (their signatures and ids)
        self.topic = channel_topic(channel_id)
        self.identity = identity
        self._keys: KeyLookup = keys or (lambda e: None)
        own_id = identity_prekey_id(identity.did)
        self.group = GroupKeys(self, private_for or (
            lambda pid: identity_prekey_private(identity) if pid == own_id else None))
        self.group.secrets.update(secrets or {})
        #: "history" (joiners get past epochs) or "ephemeral" (old secrets are deleted)
        self.policy = "history"
        #: in a direct-message channel, the other member's DID (named by the genesis)
        self.dm_peer = ""
        self._message_keys: dict[tuple[bytes, str], bytes] = {}
        #: ids of envelopes with status SEALED
        self.sealed: set[bytes] = set()
        #: envelopes under a group epoch we hold that do not open (or depend on one that
        #: does not): stored as invalid, never applied; a node without that epoch keeps
        #: them sealed, so both agree to store them and neither blames the forwarder
        self.unreadable: set[bytes] = set()
        self._clear_key = clear_key(channel_id)
        self.clear_epoch = epoch_id_for(self._clear_key)
        #: published prekeys by member: prekey id -> Prekey (valid when published)
        self.prekeys: dict[str, dict[bytes, Prekey]] = {}
        self.doc = SharedDocument()
        #: memos shared with other replicas in this process (the simulator's; see
        #: :mod:`p2pchat.channel.shared`); None: compute everything here
        self.shared: SharedWork | None = None
        #: hashes of changes automerge failed on (see SharedDocument.apply)
        self._unappliable: set[bytes] = set()
        #: changes already in the document, applied with their frame (see preapply),
        #: and what opening their envelopes gave
        self._preapplied: set[bytes] = set()
        self._preopened: dict[bytes, tuple[dict[str, Any], bytes, ChangeHeader]] = {}
        self._actor = actor_id(identity.did, identity.device_salt)
        self.authoring = AuthoringDocument(self._actor)
        #: the node's own device salt; ``identity.device_salt`` is the device this replica
        #: writes as now, which is that or a sub-device of it (see :meth:`use_device`)
        self.base_device = identity.device_salt
        self._own_devices: dict[bytes, bool] = {}  # owns_device, memoised
        #: after a start that may have lost stored writes (a power cut, say), this
        #: device's chain head is not known until a peer's summary shows it: a write
        #: before that goes to a fresh sub-device, so it can never fork the old chain
        self.head_unsure = False
        #: the highest seq of our device a peer has announced (see :meth:`head_seen`)
        self._head_announced = 0
        self.name = ""
        self.founder = ""
        self.created = 0
        self.genesis_id: bytes | None = None
        self.genesis_hash: bytes | None = None
        self.envs: dict[bytes, EnvMeta] = {}
        self.raw: dict[bytes, bytes] = {}
        self.log: list[bytes] = []
        self.slots: dict[tuple[str, bytes, int], bytes] = {}
        self.vector: dict[tuple[str, bytes], int] = {}
        self.equivocators: dict[tuple[str, bytes], int] = {}
        self.heads: set[bytes] = set()
        self.pending: dict[bytes, Envelope] = {}
        #: every claim of an id that was claimed more than once (concurrently)
        self._collided: dict[str, list[MessageRecord]] = {}
        self._pending_by_author: dict[str, int] = {}
        self._waiting: dict[bytes, set[bytes]] = {}
        #: parked envelopes waiting for their device's previous envelope, by its slot
        self._waiting_slot: dict[tuple[str, bytes, int], set[bytes]] = {}
        #: what an elided epoch means after a clear-epoch envelope (see _implied_epoch)
        self._implied: dict[bytes, bytes] = {}
        #: every post, by (ulid, author, device); two only share a ulid if concurrent
        self.posts: dict[tuple[str, str, bytes], MessageRecord] = {}
        #: one post per ulid, for lookups (reply and reaction targets); views show every
        #: post, so a concurrent claim on someone's ulid cannot hide their message
        self.messages: dict[str, MessageRecord] = {}
        #: every post in display order (hidden ones too), built on demand by
        #: :meth:`_ordered` and dropped when a post is added
        self._order: list[MessageRecord] | None = None
        #: (target, emoji, author, device) -> [(seq, on)] in the device's seq order
        self.reactions: dict[tuple[str, str, str, bytes], list[tuple[int, bool]]] = {}
        self.current_epoch: bytes | None = None
        #: ids of messages whose visible content changed (drained by the node for indexing)
        self.changed: list[str] = []
        #: well-formed modlog entries (authority is decided by the fold, over all of them)
        self.mod_events: list[ModEvent] = []
        self._mod_state: ModState | None = None
        self._recheck_refused = False
        #: authors whose devices get a slot in the causal clocks (moderation authors and
        #: targets), and per applied envelope the highest seq of each watched device in
        #: its causal past (itself included): "is A in B's past" in O(1) when A's device
        #: is watched (see in_past)
        self._watched: set[str] = set()
        self._slots: dict[tuple[str, bytes], int] = {}
        self._clocks: dict[bytes, tuple[int, ...]] = {}
        self._wrote_cache: dict[tuple[str, bytes], bool] = {}

    # --- authoring ------------------------------------------------------------------

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
        change = state.authoring.genesis({"name": name, "founder": identity.did,
                                          "created": now_ms})
        op = {"op": "genesis", "name": name, "nonce": nonce, "ts": now_ms}
        if policy != "history":
            op["policy"] = policy
        if dm:
            op["dm"] = dm
        env = state._seal(op, change, randbytes, clear=key is None)
        result = state.receive(env, now_ms)
        assert result.applied, "own genesis must apply"
        if key is None:
            state.rotate(now_ms, randbytes)
        return state, env

    @property
    def e2ee(self) -> bool:
        """Group keys (bundles), not a static key."""
        return self.current_epoch is None

    # --- group keys -------------------------------------------------------------------

    def _ready_epoch(self, now_ms: int, randbytes: RandomBytes) -> None:
        """Before authoring an encrypted change: rotate if no head epoch may be used."""
        if self.e2ee and self.group.send_epoch(now_ms) is None:
            view = self.group.view()
            if self.identity.did in view.removed:
                banned = self.identity.did in self.moderation().banned
                raise ValueError(f"you were {'banned' if banned else 'kicked'} from this "
                                 "channel: the members no longer share its keys with you")
            if self.key_status() != "member":
                raise ValueError("not admitted yet: no member has shared the channel's keys "
                                 "with this node (it needs a member online, directly or "
                                 "through a bootstrap server)")
            self.rotate(now_ms, randbytes)

    def rotate(self, now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Distribute a new epoch to every current member (see :mod:`group`)."""
        if not self.e2ee:
            raise ValueError("this channel has a static key; it cannot rotate")
        self._check_may_write(posting=False)
        heads = tuple(self.group.view().heads)
        secret = randbytes(32)
        bundle = seal_bundle(self.identity, self.channel_id, heads, secret,
                             self.group.rotation_recipients(now_ms), randbytes, now_ms)
        epoch = epoch_id(bundle)
        self.group.secrets[epoch] = secret
        self.group.new_secrets.append((epoch, secret))
        change = self._writer(randbytes).put_entry("keys", f"epoch:{epoch.hex()}",
                                          {"by": self.identity.did})
        env = self._author({"op": "bundle", "bundle": bundle, "ts": now_ms}, change, now_ms,
                           randbytes, clear=True)
        self.group.rotated_for.add(frozenset(heads))
        return env

    def share(self, recipients: list[Prekey], epochs: list[bytes], now_ms: int,
              randbytes: RandomBytes) -> Envelope:
        """A history share: the secrets of ``epochs`` (that we hold) for ``recipients``."""
        secrets = {e: self.group.secrets[e] for e in epochs if e in self.group.secrets}
        if not secrets or not recipients:
            raise ValueError("nothing to share")
        self._check_may_write(posting=False)
        raw = seal_share(self.identity, self.channel_id, secrets, recipients, randbytes,
                         now_ms)
        change = self._writer(randbytes).put_entry("keys", f"share:{epoch_id(raw).hex()}",
                                          {"by": self.identity.did})
        return self._author({"op": "share", "share": raw, "ts": now_ms}, change, now_ms,
                            randbytes, clear=True)

    def join(self, grant: bytes, grant_signature: bytes, proof: bytes, prekey: bytes,
             now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Present an invite's capability (and our prekey) to the members."""
        change = self._writer(randbytes).put_entry("keys", f"join:{self.identity.did}:{now_ms}",
                                          {"by": self.identity.did})
        return self._author({"op": "join", "grant": grant, "sig": grant_signature,
                             "proof": proof, "prekey": prekey, "ts": now_ms}, change, now_ms,
                            randbytes, clear=True)

    def request_keys(self, epochs: list[bytes], prekey: bytes, now_ms: int,
                     randbytes: RandomBytes) -> Envelope:
        """Ask members for the secrets of ``epochs`` (sealed to ``prekey``, published here)."""
        epochs = sorted(set(epochs))[:MAX_REQUEST_EPOCHS]
        change = self._writer(randbytes).put_entry("keys", f"keyreq:{self.identity.did}:{now_ms}",
                                          {"by": self.identity.did})
        return self._author({"op": "keyreq", "epochs": epochs, "prekey": prekey, "ts": now_ms},
                            change, now_ms, randbytes, clear=True)

    def key_status(self) -> str:
        """``static`` (a channel from before group keys), ``member`` (holds the keys),
        ``waiting`` (joined, not admitted yet), or ``removed`` (banned or kicked)."""
        if not self.e2ee:
            return "static"
        view = self.group.view()
        me = self.identity.did
        if me in view.removed:
            return "removed"
        if me not in view.members:
            return "waiting"
        # a member back after a kick holds old epochs only, until a member shares the
        # current ones (any other member without a head epoch rotates away from it)
        if self.group.was_kicked(me) and view.heads and not any(
                me in view.holders.get(h, set()) for h in view.heads):
            return "waiting"
        return "member"

    def sealed_count(self) -> int:
        return len(self.sealed)

    def sealed_epochs(self) -> list[bytes]:
        """Epochs of sealed envelopes whose secret this replica lacks."""
        out = {m.epoch for m in (self.envs[i] for i in self.sealed)
               if m.epoch not in self.group.secrets and m.epoch != self.clear_epoch}
        return sorted(out)

    def epoch_of(self, env_id: bytes) -> bytes:
        return self.envs[env_id].epoch

    def check_post(self, text: str, reply_to: str = "") -> None:
        """Refuse a post that could not count (says why), before it is written."""
        self._check_text(text)
        self._check_may_write()
        if reply_to and reply_to not in self.messages:
            raise ValueError(f"no message {reply_to} to reply to")

    def post(self, text: str, now_ms: int, randbytes: RandomBytes, reply_to: str = ""
             ) -> tuple[Envelope, str]:
        self.check_post(text, reply_to)
        self._ready_epoch(now_ms, randbytes)
        msg_id = make_ulid(now_ms, randbytes(10))
        return self._author_post(msg_id, text, reply_to, now_ms, randbytes), msg_id

    def _author_post(self, msg_id: str, text: str, reply_to: str, now_ms: int,
                     randbytes: RandomBytes) -> Envelope:
        change = self._writer(randbytes).put_entry("messages", msg_id, {
            "author": self.identity.did, "text": text, "reply_to": reply_to, "deleted": False})
        # the text travels once, in the change: the operation names the entry it writes
        return self._author({"op": "post", "id": msg_id, "ts": ulid_ms(msg_id)}, change,
                            now_ms, randbytes, local={"text": text, "reply_to": reply_to})

    def post_room(self, now_ms: int, posts: list[tuple[str, str]]) -> int:
        """How many of ``posts`` ((text, reply_to), in order) the next envelope may
        carry, at least one: up to MAX_POSTS_PER_ENVELOPE, MAX_POSTS_BYTES, and no
        further than the current epoch's routine rotation (then the next one)."""
        room = MAX_POSTS_PER_ENVELOPE
        if self.e2ee:
            epoch = self.group.send_epoch(now_ms)
            used = 0 if epoch is None else self.group.count.get(epoch, 0)
            room = min(room, ROTATE_EVERY - used)
        size = 0
        for n, (text, reply_to) in enumerate(posts[:room]):
            size += _post_bytes(text, reply_to)
            if size > MAX_POSTS_BYTES:
                room = n
                break
        return max(1, room)

    def post_many(self, posts: list[tuple[str, str, str]], now_ms: int,
                  randbytes: RandomBytes) -> Envelope:
        """Seal several posts, ``(id, text, reply_to)`` with increasing ULID ids made when
        they were asked for, into one envelope and one change: all count or none does.
        (A burst of sends shares one signature, seal and Automerge change; DESIGN §10.2.)
        One post goes out as a plain post."""
        if not 1 <= len(posts) <= MAX_POSTS_PER_ENVELOPE:
            raise ValueError(f"an envelope carries 1..{MAX_POSTS_PER_ENVELOPE} posts")
        ids = [msg_id for msg_id, _, _ in posts]
        if not all(is_ulid(i) for i in ids) or any(a >= b for a, b in pairwise(ids)):
            raise ValueError("post ids must be increasing ULIDs")
        if len(posts) > 1 and sum(_post_bytes(t, r) for _, t, r in posts) > MAX_POSTS_BYTES:
            raise ValueError(f"posts of more than {MAX_POSTS_BYTES} bytes in one envelope")
        self._check_may_write()
        for msg_id, text, reply_to in posts:
            self._check_text(text)
            if reply_to and reply_to not in self.messages:
                raise ValueError(f"no message {reply_to} to reply to")
            if msg_id in self.messages:
                raise ValueError(f"message id {msg_id} already used")
        self._ready_epoch(now_ms, randbytes)
        if len(posts) == 1:
            return self._author_post(*posts[0], now_ms, randbytes)
        me = self.identity.did
        change = self._writer(randbytes).put_entries("messages", [
            (msg_id, {"author": me, "text": text, "reply_to": reply_to, "deleted": False})
            for msg_id, text, reply_to in posts])
        return self._author({"op": "posts", "ids": ids, "ts": ulid_ms(ids[-1])},
                            change, now_ms, randbytes,
                            local={"texts": [(t, r) for _, t, r in posts]})

    def edit(self, msg_id: str, text: str, now_ms: int, randbytes: RandomBytes) -> Envelope:
        self._check_text(text)
        self._check_may_write()
        self._fresh_device_if_unsure(randbytes)
        record = self._own_message(msg_id)
        current = next((t for _, kind, t, _ in reversed(record.ops) if kind == "edit"),
                       record.text)
        if text == current:  # protocol.md §7: an edit must change something
            raise ValueError("nothing to change")
        self._ready_epoch(now_ms, randbytes)
        change = self.authoring.update_entry("messages", msg_id, {"text": text, "edited": now_ms})
        return self._author({"op": "edit", "id": msg_id, "text": text, "ts": now_ms}, change,
                            now_ms, randbytes)

    def delete(self, msg_id: str, now_ms: int, randbytes: RandomBytes) -> Envelope:
        self._check_may_write(posting=False)
        self._fresh_device_if_unsure(randbytes)
        self._own_message(msg_id)
        self._ready_epoch(now_ms, randbytes)
        change = self.authoring.update_entry("messages", msg_id, {"text": "", "deleted": True})
        return self._author({"op": "delete", "id": msg_id, "ts": now_ms}, change, now_ms,
                            randbytes)

    def react(self, target: str, emoji: str, on: bool, now_ms: int, randbytes: RandomBytes
              ) -> Envelope:
        if target not in self.messages:
            raise ValueError(f"no message {target}")
        self._check_may_write()
        if not emoji or len(emoji) > MAX_EMOJI_LENGTH or not emoji.isprintable():
            raise ValueError("invalid reaction")
        self._ready_epoch(now_ms, randbytes)
        change = self._writer(randbytes).put_scalar("reactions", self._reaction_key(target, emoji,
                                                                           self._actor), on)
        return self._author({"op": "react", "target": target, "emoji": emoji, "on": on,
                             "ts": now_ms}, change, now_ms, randbytes)

    def moderate(self, action: str, now_ms: int, randbytes: RandomBytes, *, target: str = "",
                 value: str = "", on: bool = True, reason: str = "", check: bool = True
                 ) -> tuple[Envelope, str]:
        """Author a moderation action; refused here if it could not count (says why).

        ``check=False`` publishes it anyway: every replica then records it as invalid,
        with the reason (tests use this to play a hostile or stale author).
        """
        fields = _mod_fields(action, target, value, on, reason)
        if isinstance(fields, str):
            raise ValueError(fields)
        if check:
            self._check_may_write(posting=False)
        state = self.moderation()
        me = self.identity.did
        my_rank = state.rank(me)
        if action in mod.TARGET_ACTIONS:
            target_rank = mod.OWNER if target == state.owner else state.rank(target)
            why = mod.check_authority(ModEvent(b"", "", me, action, target), my_rank, target_rank)
        else:
            why = "" if my_rank >= mod.MODERATOR else f"{action} needs moderator rank"
        if why and check:
            raise ValueError(f"{action} would not count: {why}")
        self._ready_epoch(now_ms, randbytes)
        entry_id = make_ulid(now_ms, randbytes(10))
        change = self._writer(randbytes).put_entry("modlog", entry_id, {**fields, "by": me})
        env = self._author({"op": "mod", "id": entry_id, **fields, "ts": now_ms}, change,
                           now_ms, randbytes)
        if action in ("ban", "kick") and self.e2ee and self.group.send_epoch(now_ms) is None:
            # the removal and the epoch that leaves the member out go out together
            self.rotate(now_ms, randbytes)
        return env, entry_id

    def publish_prekey(self, record: bytes, now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Publish one of this member's signed prekeys, in the clear epoch."""
        try:
            prekey = open_prekey(record, now_ms)
        except KeyError_ as exc:
            raise ValueError(str(exc)) from None
        if prekey.did != self.identity.did:
            raise ValueError("a member publishes only its own prekeys")
        self._check_may_write(posting=False)
        change = self._writer(randbytes).put_entry("keys", _prekey_key(prekey.prekey_id),
                                          {"record": record})
        return self._author({"op": "prekey", "record": record, "ts": now_ms}, change, now_ms,
                            randbytes, clear=True)

    def prekey_of(self, did: str, now_ms: int) -> Prekey | None:
        """The member's published prekey that lives longest, if any is still valid."""
        live = [p for p in self.prekeys.get(did, {}).values() if p.expires_ms > now_ms]
        return max(live, key=lambda p: (p.expires_ms, p.prekey_id), default=None)

    def _check_text(self, text: str) -> None:
        if not text or len(text) > MAX_TEXT_LENGTH:
            raise ValueError(f"message text must be 1..{MAX_TEXT_LENGTH} characters")

    # --- this node's devices (crash recovery, design.md §10.5) ----------------------

    def owns_device(self, salt: bytes) -> bool:
        """Whether ``salt`` is this node's device or one of its sub-devices here."""
        known = self._own_devices.get(salt)
        if known is None:  # asked per own envelope (uploads, DM status): hash each salt once
            base = self.base_device
            known = salt == base or (len(salt) == len(base) and
                                     sub_device_salt(base, self.channel_id, salt) == salt)
            if len(self._own_devices) < MAX_OWN_DEVICE_MEMO:
                self._own_devices[salt] = known
        return known

    def use_device(self, salt: bytes) -> None:
        """Write as device ``salt`` (ours) from now on: its own authoring document holds
        the genesis and that device's changes applied so far."""
        if salt == self.identity.device_salt:
            return
        self.identity = dataclasses.replace(self.identity, device_salt=salt)
        self._actor = actor_id(self.identity.did, salt)
        self.authoring = AuthoringDocument(self._actor)
        for env_id in self.log:
            meta = self.envs[env_id]
            if env_id == self.genesis_id or (
                    (meta.author, meta.device) == (self.identity.did, salt)
                    and meta.status is Status.APPLIED):
                _op, change, _header = self._open(self.stored(env_id))
                self.authoring.apply(change)

    def head_seen(self, announced: int) -> None:
        """A peer's summary announced our current device at seq ``announced``: once we
        hold that much, the chain head is known and writes continue it."""
        self._head_announced = max(self._head_announced, announced)
        me = (self.identity.did, self.identity.device_salt)
        if self.head_unsure and self.vector.get(me, 0) >= self._head_announced:
            self.head_unsure = False

    def _fresh_device_if_unsure(self, randbytes: RandomBytes) -> None:
        """Before authoring: a device whose head is unsure (or that forked) goes on as a
        fresh sub-device, so nothing it writes now can clash with what peers hold."""
        me = (self.identity.did, self.identity.device_salt)
        if self.genesis_id is None or not (self.head_unsure or me in self.equivocators):
            return
        self.use_device(sub_device_salt(self.base_device, self.channel_id, randbytes(8)))
        self.head_unsure = False

    def _writer(self, randbytes: RandomBytes) -> AuthoringDocument:
        """The authoring document a new change goes on (after a device switch if due)."""
        self._fresh_device_if_unsure(randbytes)
        return self.authoring

    def _own_message(self, msg_id: str) -> MessageRecord:
        record = self.posts.get((msg_id, self.identity.did, self.identity.device_salt))
        if record is None:
            if any(k[0] == msg_id and k[1] == self.identity.did and self.owns_device(k[2])
                   for k in self.posts):
                raise ValueError(
                    f"{msg_id} was written on this node's earlier device chain, which it "
                    "left after a restart that may have lost writes (or a fork); it can no "
                    "longer be edited or deleted")
            raise ValueError(f"{msg_id} is not a message of this device")
        if record.deleted_in_chain:
            raise ValueError(f"{msg_id} is deleted")
        return record

    @staticmethod
    def _reaction_key(target: str, emoji: str, actor: bytes) -> str:
        return f"{target}:{emoji}:{actor.hex()}"

    def _check_may_write(self, posting: bool = True) -> None:
        """Refuse a write that every replica would refuse or hide (says why)."""
        me = self.identity.did
        if not self.mod_events or me == self.founder:
            return
        state = self.moderation()
        if me in state.banned:
            raise ValueError("you are banned from this channel")
        if posting:
            # a post after everything we know: everything valid is in its causal past
            why = mod.hidden_by(me, b"", state, lambda a, b: b == b"" if b"" in (a, b)
                                else self.in_past(a, b), self.wrote_before)
            if why:
                raise ValueError(f"your message would be hidden: {why.replace('author', 'you')}")

    def _author(self, op: dict[str, Any], change: bytes, now_ms: int,
                randbytes: RandomBytes, clear: bool = False,
                local: dict[str, Any] | None = None) -> Envelope:
        """Seal and apply our own operation. ``local``: fields the fold of our own
        operation may take as given (they are in the change; peers read them back)."""
        env = self._seal(op, change, randbytes, clear, now_ms)
        if local:
            op = {**op, **local}
        # We just made, signed and encrypted it: skip the signature and decryption checks
        # (the rules of _apply still run, so our own invalid operations are caught too).
        result = ReceiveResult()
        header = self.authoring.last_header
        if header is None or header.seq != env.seq:
            header = parse_change(change)
        self._admit(env, op, change, header, result, trusted=True)
        if not result.applied or self.envs[env.id].status is not Status.APPLIED:
            raise RuntimeError(f"own envelope did not apply: {self.envs[env.id].why}")
        if self._recheck_refused:  # our own unban, say: refused envelopes may apply now
            self._readmit(ReceiveResult())
        return env

    def _seal(self, op: dict[str, Any], change: bytes, randbytes: RandomBytes,
              clear: bool = False, now_ms: int = 0) -> Envelope:
        epoch = self.clear_epoch if clear else self.current_epoch
        if epoch is None:
            epoch = self.group.send_epoch(now_ms)
        if epoch is None:
            raise RuntimeError("no epoch key to write with")
        if (self.identity.did, self.identity.device_salt) in self.equivocators:
            raise ValueError("this device has forked its own history (restored from an old "
                             "copy of the node home?); it can no longer write to this channel")
        key = self._key_for(epoch, self.identity.did)
        assert key is not None
        me = (self.identity.did, self.identity.device_salt)
        seq = self.vector.get(me, 0) + 1
        deps = self._deps_for_new(me)
        prev = self.slots[(me[0], me[1], seq - 1)] if seq > 1 else b""
        return seal_envelope(self.identity, channel=self.channel_id, seq=seq, deps=deps,
                             epoch=epoch, key=key, nonce=randbytes(24),
                             plaintext=encode_operation(op, change), prev=prev,
                             prev_epoch=self._implied_epoch(prev) if prev else b"")

    def _key_for(self, epoch: bytes, author: str) -> bytes | None:
        if epoch == self.clear_epoch:
            return self._clear_key
        secret = self.group.secrets.get(epoch)
        if secret is not None:
            key = self._message_keys.get((epoch, author))
            if key is None:
                key = self._message_keys[(epoch, author)] = message_key(secret, author)
            return key
        return self._keys(epoch)

    def _deps_for_new(self, me: tuple[str, bytes]) -> tuple[bytes, ...]:
        from p2pchat.channel.envelope import MAX_ENVELOPE_DEPS

        own_prev = self.slots.get((me[0], me[1], self.vector.get(me, 0)))
        heads = sorted(self._readable_frontier(), key=lambda i: self.envs[i].order,
                       reverse=True)
        chosen = [own_prev] if own_prev is not None else []
        for h in heads:
            if len(chosen) >= MAX_ENVELOPE_DEPS:
                break
            if h != own_prev:
                chosen.append(h)
        return tuple(sorted(chosen))

    def _readable_frontier(self) -> set[bytes]:
        """The newest envelopes this replica can read: its heads, with each sealed or
        unreadable head replaced by its nearest readable ancestors. Own writes never
        depend on what this replica cannot read (every replica would have to wait for
        it, or, if it never opens, for ever), but they must still follow everything
        readable we saw: a kicked member's join has to follow the kick, which sits
        under the sealed messages written since (issue 16)."""
        out: set[bytes] = set()
        todo = [h for h in self.heads]
        seen: set[bytes] = set(todo)
        visits = 0
        while todo and visits < MAX_FRONTIER_WALK:
            env_id = todo.pop()
            visits += 1
            if env_id not in self.sealed and env_id not in self.unreadable:
                out.add(env_id)
                continue
            for dep in self.envs[env_id].deps:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return out

    # --- receiving --------------------------------------------------------------------

    def receive_bytes(self, data: bytes, now_ms: int) -> ReceiveResult:
        return self.receive(self.decode(data), now_ms)

    def decode(self, data: bytes) -> Envelope:
        """Parse an envelope of this channel (unresolved; see :meth:`receive`)."""
        shared = self.shared
        if shared is None:
            return decode_envelope(data, self.topic)
        return shared.memo(shared.decoded, (self.topic, data),
                           lambda: decode_envelope(data, self.topic))

    def id_of(self, data: bytes) -> bytes:
        """The id of envelope bytes of this channel, without decoding them."""
        if self.shared is None:
            return envelope_id_of(data, self.topic)
        return self.decode(data).id

    def stored(self, env_id: bytes) -> Envelope:
        """A recorded envelope, resolved as when it was recorded."""
        meta = self.envs[env_id]
        env = decode_envelope(self.raw[env_id], self.topic)
        prev = self.slots.get((meta.author, meta.device, meta.seq - 1), b"")
        return env.resolve(prev, self._implied_epoch(prev)) if prev else env

    def _implied_epoch(self, prev: bytes) -> bytes:
        """What an elided epoch means after the device's previous envelope ``prev``: the
        epoch that ``prev`` distributes if it is a key bundle (a sender rotates, then
        writes under the new epoch), else ``prev``'s own epoch."""
        epoch = self.envs[prev].epoch
        if epoch != self.clear_epoch:
            return epoch
        implied = self._implied.get(prev)
        if implied is None:
            # read from the bundle itself, not from the fold: whether the bundle counts
            # may change later (an unban), what the elided epoch means must not
            implied = epoch
            try:
                wire = decode_envelope(self.raw[prev], self.topic)
                op, _ = decode_operation(wire.decrypt(self._clear_key, self.channel_id))
                if op["op"] == "bundle" and type(op.get("bundle")) is bytes:
                    implied = epoch_id(op["bundle"])
            except (Rejected, DecryptionError):
                pass
            self._implied[prev] = implied
        return implied

    def _resolve(self, env: Envelope) -> Envelope | None:
        """``env`` with its implicit dependency (its device's previous envelope) and
        elided epoch filled in, or None while that envelope is not recorded here."""
        if env.seq == 1:
            return env
        prev = self.slots.get((env.author, env.device, env.seq - 1))
        if prev is None:
            return None
        # by the slot, whatever a caller filled in: the wire decides what it depends on
        return env if env.prev == prev else env.resolve(prev, self._implied_epoch(prev))

    def is_known(self, env_id: bytes) -> bool:
        return env_id in self.envs or env_id in self.pending

    def receive(self, env: Envelope, now_ms: int, signature_ok: bool | None = None
                ) -> ReceiveResult:
        """Verify and (when its deps are here) apply ``env``. Raises :class:`Rejected`.

        ``signature_ok``: the caller already checked ``env.verify_signature()`` (e.g. a
        batch verified in parallel); ``None`` checks it here.
        """
        if env.id in self.envs or env.id in self.pending:
            return ReceiveResult(duplicate=True)
        if env.topic != self.topic:
            raise Rejected("envelope belongs to another channel")
        if not (env.verify_signature() if signature_ok is None else signature_ok):
            raise Rejected("envelope signature does not verify")
        resolved = self._resolve(env)
        if resolved is None:
            return self._park(env)
        env = resolved
        opened, unreadable = self._try_open(env)
        if any(dep not in self.envs for dep in env.deps):
            return self._park(env)
        result = ReceiveResult()
        self._admit_opened(env, opened, unreadable, result)
        self._drain(env.id, result)
        self._settle(result)
        return result

    def _try_open(self, env: Envelope
                  ) -> tuple[tuple[dict[str, Any], bytes, ChangeHeader] | None, str]:
        """(operation, change, header), or None and why it is unreadable ('' if only
        its key is missing so far). Rejected still raises."""
        got = self._preopened.pop(env.id, None)
        if got is not None:
            return got, ""
        try:
            return self._open(env), ""
        except _Sealed:
            return None, ""
        except _Unreadable as exc:
            return None, str(exc)

    def _admit_opened(self, env: Envelope,
                      opened: tuple[dict[str, Any], bytes, ChangeHeader] | None,
                      unreadable: str, result: ReceiveResult) -> None:
        if opened is None:
            self._admit_sealed(env, result, unreadable)
        else:
            self._admit(env, *opened, result)

    def _settle(self, result: ReceiveResult) -> None:
        while self.group.unseal_due or self._recheck_refused:
            if self.group.unseal_due:
                self._unseal(result)
            if self._recheck_refused:
                self._readmit(result)

    def _admit_sealed(self, env: Envelope, result: ReceiveResult, unreadable: str = "") -> None:
        """Record an envelope this replica cannot read (yet): in the DAG, not applied.
        ``unreadable``: it never will be (see :attr:`unreadable`); recorded invalid."""
        eff = max((self.envs[d].eff for d in env.deps), default=0)
        depth = 1 + max((self.envs[d].depth for d in env.deps), default=0)
        device = (env.author, env.device)
        start = self.equivocators.get(device)
        other = self.slots.get((env.author, env.device, env.seq))
        if (start is not None and env.seq >= start) or other is not None:
            if other is not None and start is None:
                self.equivocators[device] = env.seq
                result.equivocation = True
            self._record(env, b"", Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            return
        if unreadable:
            self._record(env, b"", Status.INVALID, eff, depth, unreadable)
            self.unreadable.add(env.id)
            result.invalid.append(env)  # stored, not forwarded: we could read it
            return
        self._record(env, b"", Status.SEALED, eff, depth, "no key for its epoch here")
        self.sealed.add(env.id)
        self.group.work_due = True
        result.sealed.append(env)

    def _unseal(self, result: ReceiveResult) -> None:
        """New secrets: open sealed envelopes whose deps are readable, in causal order."""
        while self.group.unseal_due:
            self.group.unseal_due = False
            for env_id in sorted(self.sealed, key=lambda i: self.envs[i].order):
                meta = self.envs[env_id]
                if any(d in self.sealed for d in meta.deps):
                    continue
                env = self.stored(env_id)
                why = "depends on an envelope that does not decrypt" \
                    if any(d in self.unreadable for d in meta.deps) else ""
                if not why:
                    try:
                        op, change, header = self._open(env)
                        self._check_chain(env, op, header)
                    except _Sealed:
                        continue
                    except _Forked as fork:  # as in _admit: evidence, never applied
                        self._mark_fork((env.author, env.device), fork.seq)
                        meta.status, meta.why = Status.QUARANTINED, "equivocation"
                        self.sealed.discard(env_id)
                        continue
                    except (Rejected, _Unreadable) as exc:
                        why = str(exc)
                if why:  # unreadable after all: kept, never applied
                    meta.status, meta.why = Status.INVALID, why
                    self.sealed.discard(env_id)
                    self.unreadable.add(env_id)
                    continue
                self.sealed.discard(env_id)
                meta.change_hash = header.hash
                meta.eff = max([op["ts"], *(self.envs[d].eff for d in env.deps)])
                refusal = self._refusal(env)
                if refusal:
                    meta.status, meta.why = Status.REFUSED, refusal
                    continue
                inner = ReceiveResult()
                try:
                    self._apply(env, op, change, header, inner, meta.eff, meta.depth)
                except Rejected as exc:  # automerge cannot apply it: as if unreadable
                    meta.status, meta.why = Status.INVALID, str(exc)
                    self.unreadable.add(env_id)
                    continue
                result.unsealed += inner.applied

    def _refusal(self, env: Envelope) -> str:
        """Why ``env`` (all deps here) is refused: its author was banned in its past."""
        if not self.mod_events or env.author == self.founder:
            return ""
        bans = [e for e in self.moderation().valid
                if e.target == env.author and e.action in ("ban", "unban")]
        if not bans:
            return ""
        past = [e for e in bans if self.in_past_of_deps(e.env, env.deps)]
        if mod.resolve_flag(past, "ban", "unban", self.in_past):
            return "author was banned in the envelope's causal past"
        return ""

    def _readmit(self, result: ReceiveResult) -> None:
        """The fold changed: apply refused envelopes whose author is no longer banned."""
        self._recheck_refused = False
        for env_id in [i for i in self.log if self.envs[i].status is Status.REFUSED]:
            env = self.stored(env_id)
            if self._refusal(env):
                continue
            op, change, header = self._open(env)
            meta = self.envs[env_id]
            try:
                self._apply(env, op, change, header, result, meta.eff, meta.depth)
            except Rejected as exc:  # automerge cannot apply it: kept, never applied
                meta.status, meta.why = Status.INVALID, str(exc)

    def _open(self, env: Envelope) -> tuple[dict[str, Any], bytes, ChangeHeader]:
        key = self._key_for(env.epoch, env.author)
        if key is None:
            if not self.e2ee:
                raise Rejected("envelope uses an unknown epoch key")
            raise _Sealed()
        if not self.e2ee or env.epoch == self.clear_epoch:
            return self._open_with(env, key)
        try:
            return self._open_with(env, key)
        except Rejected as exc:
            raise _Unreadable(str(exc)) from None

    def _open_with(self, env: Envelope, key: bytes
                   ) -> tuple[dict[str, Any], bytes, ChangeHeader]:
        shared = self.shared
        if shared is None:
            op, change, header = open_envelope(env, key, self.channel_id)
        else:
            op, change, header = shared.memo(
                shared.opened, (env.id, key), lambda: open_envelope(env, key, self.channel_id))
        if env.epoch == self.clear_epoch and op["op"] in ("bundle", "share"):
            self.group.harvest(env.author, op)
        return op, change, header

    def _park(self, env: Envelope) -> ReceiveResult:
        if len(self.pending) >= MAX_PENDING:
            raise PendingFull("pending buffer full")
        if self._pending_by_author.get(env.author, 0) >= MAX_PENDING_PER_AUTHOR:
            raise PendingFull("pending buffer full for this author")
        self._pending_by_author[env.author] = self._pending_by_author.get(env.author, 0) + 1
        self.pending[env.id] = env
        if not env.resolved:
            slot = (env.author, env.device, env.seq - 1)
            self._waiting_slot.setdefault(slot, set()).add(env.id)
        for dep in env.deps:
            if dep not in self.envs:
                self._waiting.setdefault(dep, set()).add(env.id)
        return ReceiveResult(pending=True)

    def _drain(self, arrived: bytes, result: ReceiveResult) -> None:
        """Admit parked envelopes whose deps are now all here (and theirs, in turn)."""
        ready = [arrived]
        while ready:
            dep = ready.pop()
            meta = self.envs[dep]
            waiting = self._waiting.pop(dep, set())
            waiting |= self._waiting_slot.pop((meta.author, meta.device, meta.seq), set())
            for waiting_id in sorted(waiting):
                parked = self.pending.get(waiting_id)
                env = self._resolve(parked) if parked is not None else None
                if env is None or any(d not in self.envs for d in env.deps):
                    continue
                del self.pending[waiting_id]
                self._pending_by_author[env.author] -= 1
                try:
                    opened, unreadable = self._try_open(env)
                    self._admit_opened(env, opened, unreadable, result)
                except Rejected:
                    continue  # dropped; it neither blocks nor changes anything
                ready.append(env.id)

    def _admit(self, env: Envelope, op: dict[str, Any], change: bytes, header: ChangeHeader,
               result: ReceiveResult, trusted: bool = False) -> None:
        """All deps are present: quarantine, reject or apply ``env``."""
        if any(d in self.sealed for d in env.deps):
            self._admit_sealed(env, result)  # it may rely on what we cannot read yet
            return
        if any(d in self.unreadable for d in env.deps):
            self._admit_sealed(env, result, "depends on an envelope that does not decrypt")
            return
        device = (env.author, env.device)
        eff = max([op["ts"], *(self.envs[d].eff for d in env.deps)])
        depth = 1 + max((self.envs[d].depth for d in env.deps), default=0)
        start = self.equivocators.get(device)
        if start is not None and env.seq >= start:
            # this device forked: everything from the fork on is evidence, never applied
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            return
        try:
            self._check_chain(env, op, header)
        except _Forked as fork:
            # e.g. a device that lost its newest envelopes in a crash and wrote again:
            # its next change continues the new branch, we hold the old one. Quarantine
            # from the fork, as for twins; the forwarder is not at fault (issue 16)
            self._mark_fork(device, fork.seq)
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            result.equivocation = True
            return
        other = self.slots.get((env.author, env.device, env.seq))
        if other is not None:  # same author, device and seq, different envelope
            self._mark_fork(device, env.seq)
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            result.equivocation = True
            return
        refusal = self._refusal(env)
        if refusal:
            self._record(env, header.hash, Status.REFUSED, eff, depth, refusal)
            result.refused.append(env)
            return
        self._apply(env, op, change, header, result, eff, depth, trusted)

    def _apply(self, env: Envelope, op: dict[str, Any], change: bytes, header: ChangeHeader,
               result: ReceiveResult, eff: int, depth: int, trusted: bool = False) -> None:
        if header.hash in self._preapplied:  # applied with its frame (see preapply)
            self._preapplied.discard(header.hash)
        else:
            self._apply_change(change, header.hash)
        own = env.author == self.identity.did and env.device == self.identity.device_salt
        if (own or op["op"] == "genesis") and self._actor_change_missing(header.hash):
            self.authoring.apply(change)  # our authoring document: genesis + our changes
        why = self._fold(env, op, header.hash, eff, depth, trusted)
        status = Status.INVALID if why else Status.APPLIED
        meta = self.envs.get(env.id)
        if meta is not None:  # a refused envelope admitted after all (see _readmit)
            meta.status, meta.why = status, why
        else:
            self._record(env, header.hash, status, eff, depth, why)
        if op["op"] == "genesis":
            self.genesis_id, self.genesis_hash = env.id, header.hash
        if env.epoch != self.clear_epoch:  # routine rotation counts messages, not envelopes
            n = len(op["ids"]) if op["op"] == "posts" else 1
            self.group.count[env.epoch] = self.group.count.get(env.epoch, 0) + n
        result.applied.append(env)

    def _apply_change(self, change: bytes, change_hash: bytes) -> None:
        shared = self.shared
        if shared is not None and change_hash in shared.applied:
            self.doc.defer(change)  # another replica applied it: it applies (see shared)
            return
        if change_hash in self._unappliable:
            raise Rejected("automerge cannot apply the change (seen before)")
        try:
            self.doc.apply(change)
        except ChangeApplyError as exc:
            if len(self._unappliable) >= MAX_UNAPPLIABLE:
                self._unappliable.clear()
            self._unappliable.add(change_hash)  # a resend costs no second rebuild
            raise Rejected(str(exc)) from None
        if change_hash not in self.doc.doc.get_heads():
            raise Rejected("automerge could not apply the change")  # document unchanged
        if shared is not None:
            shared.note_applied(change_hash)

    def preapply(self, envelopes: list[Envelope], verdicts: dict[bytes, bool]) -> int:
        """Apply, in one automerge call, the changes of the leading run of ``envelopes``
        that :meth:`receive` will certainly apply; returns how many. (One call per change
        costs about twice as much per change as one call for ten: receiving a frame of
        posts is dominated by it.)

        Certainly: messages (post, edit, delete, react: they change neither moderation
        nor keys, so nothing earlier in the run changes how a later one is judged) by
        another device, signature verified, every dep recorded here and readable or
        earlier in the run, the author's previous change in the document or earlier in
        the run, no equivocation, opened with a key held here, change deps that pass
        :meth:`_check_chain`, and no ban or unban of the author anywhere. The run stops
        at the first envelope that is not; :meth:`receive` then handles every envelope
        as usual, skipping only the automerge call for the ones applied here. If the
        batch fails, the document is restored and nothing counts as applied.
        """
        self._preopened.clear()
        # parked envelopes may be admitted in between (one could be a ban): not then
        if len(envelopes) < 2 or self.genesis_hash is None or self.pending:
            return 0
        me = (self.identity.did, self.identity.device_salt)
        banned_once = {e.target for e in self.moderation().valid
                       if e.action in ("ban", "unban")} if self.mod_events else set()
        ahead: dict[tuple[str, bytes, int], tuple[bytes, bytes, bytes]] = {}
        changes: list[bytes] = []
        tips: dict[tuple[str, bytes], bytes] = {}
        opened: dict[bytes, tuple[dict[str, Any], bytes, ChangeHeader]] = {}
        for env in envelopes:
            device = (env.author, env.device)
            slot = (env.author, env.device, env.seq)
            if verdicts.get(env.id) is not True or env.topic != self.topic \
                    or self.is_known(env.id) or env.id in opened or device == me \
                    or slot in self.slots or slot in ahead or device in self.equivocators \
                    or (env.author in banned_once and env.author != self.founder):
                break
            if env.seq == 1:
                expected = self.genesis_hash
            else:
                prev_slot = (env.author, env.device, env.seq - 1)
                if prev_slot in ahead:
                    prev, expected, prev_epoch = ahead[prev_slot]
                else:
                    prev = self.slots.get(prev_slot, b"")
                    meta = self.envs.get(prev)
                    if meta is None or meta.status not in (Status.APPLIED, Status.INVALID) \
                            or prev in self.unreadable:
                        break
                    expected, prev_epoch = meta.change_hash, self._implied_epoch(prev)
                env = env if env.prev == prev else env.resolve(prev, prev_epoch)
            if env.epoch == self.clear_epoch or any(
                    d not in opened and (d not in self.envs or d in self.sealed
                                         or d in self.unreadable) for d in env.deps):
                break
            key = self._key_for(env.epoch, env.author)
            if key is None:
                break
            try:
                op, change, header = got = self._open_with(env, key)
            except Rejected:
                break
            if op["op"] not in ("post", "posts", "edit", "delete", "react") \
                    or tuple(sorted(header.deps)) != (expected,):
                break
            opened[env.id] = got
            ahead[slot] = (env.id, header.hash, env.epoch)
            changes.append(change)
            tips[device] = header.hash
        if len(changes) < 2:
            return 0
        shared = self.shared
        hashes = [h for _, h, _ in ahead.values()]
        if shared is not None and shared.applied.issuperset(hashes):
            for change in changes:
                self.doc.defer(change)
        elif not self.doc.apply_all(changes, set(tips.values())):
            return 0
        elif shared is not None:
            for change_hash in hashes:
                shared.note_applied(change_hash)
        self._preapplied.update(hashes)
        if len(self._preapplied) > MAX_PREAPPLIED:  # only mispredictions linger
            self._preapplied = {h for _, h, _ in ahead.values()}
        self._preopened = opened
        return len(changes)

    def _mark_fork(self, device: tuple[str, bytes], seq: int) -> None:
        """Record ``device`` as forked from ``seq`` (the lowest fork seen wins, so every
        replica with the same evidence agrees); its posts' views change."""
        start = self.equivocators.get(device)
        self.equivocators[device] = seq if start is None else min(start, seq)
        self.changed += [m.id for m in self.posts.values() if (m.author, m.device) == device]

    def _check_chain(self, env: Envelope, op: dict[str, Any], header: ChangeHeader) -> None:
        """Rules that depend only on ``env`` and its device's previous envelope.

        Checked before the equivocation test, so a malformed twin is rejected on
        every replica, whichever of the two arrives first.
        """
        if op["op"] == "genesis":
            name, nonce = op.get("name"), op.get("nonce")
            if self.genesis_id is not None or env.seq != 1 or env.deps or header.deps \
                    or type(name) is not str or type(nonce) is not bytes \
                    or op.get("policy", "history") not in POLICIES \
                    or type(op.get("dm", "")) is not str or len(op.get("dm", "")) > 128 \
                    or channel_id_for(env.author, name, nonce) != self.channel_id:
                raise Rejected("not this channel's genesis")
            return
        if self.genesis_hash is None:
            raise Rejected("envelope before the channel's genesis")
        if env.seq == 1:
            expected = (self.genesis_hash,)
        else:
            prev = self.slots.get((env.author, env.device, env.seq - 1))
            if prev is None or prev not in env.deps:
                raise Rejected("envelope does not depend on its author's previous envelope")
            expected = (self.envs[prev].change_hash,)
        if tuple(sorted(header.deps)) != expected:
            if env.seq > 1 and len(header.deps) == 1:
                # it continues some other change at seq - 1: two histories, one signer
                raise _Forked(env.seq - 1)
            raise Rejected("change dependencies do not match the author's previous change")

    def _record(self, env: Envelope, change_hash: bytes, status: Status, eff: int, depth: int,
                why: str = "") -> EnvMeta:
        meta = EnvMeta(env.author, env.device, env.seq, env.deps, change_hash, status,
                       len(self.log), eff, depth, why, env.epoch)
        self.envs[env.id] = meta
        self.raw[env.id] = env.encode()
        self.log.append(env.id)
        self.slots.setdefault((env.author, env.device, env.seq), env.id)
        device = (env.author, env.device)
        seq = self.vector.get(device, 0)
        while (env.author, env.device, seq + 1) in self.slots:
            seq += 1
        self.vector[device] = seq
        self.heads.difference_update(env.deps)
        self.heads.add(env.id)
        if self._clocks:
            if (env.author, env.device) not in self._slots and env.author in self._watched:
                self._slots.clear()  # a new device of a watched author: rebuild lazily
                self._clocks.clear()
            else:
                self._clocks[env.id] = self._clock_for(meta)
        return meta

    def _actor_change_missing(self, change_hash: bytes) -> bool:
        return change_hash not in self.authoring.doc.get_heads()

    def in_causal_past(self, ancestor: bytes, deps: tuple[bytes, ...]) -> bool:
        """True if ``ancestor`` is one of ``deps`` or their ancestors (all known)."""
        floor = self.envs[ancestor].depth
        todo = list(deps)
        seen = set(deps)
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            for dep in self.envs[current].deps:
                if dep not in seen and self.envs[dep].depth >= floor:
                    seen.add(dep)
                    todo.append(dep)
        return False

    def all_in_causal_past(self, ancestors: set[bytes], deps: tuple[bytes, ...]) -> bool:
        """Every one of ``ancestors`` is among ``deps`` or their ancestors: one walk back
        to the shallowest of them (a share may name a hundred epochs)."""
        if not ancestors:
            return True
        floor = min(self.envs[a].depth for a in ancestors)
        missing = set(ancestors)
        todo = [d for d in deps]
        seen = set(deps)
        while todo and missing:
            current = todo.pop()
            missing.discard(current)
            for dep in self.envs[current].deps:
                if dep not in seen and self.envs[dep].depth >= floor:
                    seen.add(dep)
                    todo.append(dep)
        return not missing

    # --- the fold: validate the declared operation against the document ------------

    def _fold(self, env: Envelope, op: dict[str, Any], change_hash: bytes, eff: int,
              depth: int, trusted: bool = False) -> str:
        """Apply ``op`` to the index; return why it is invalid, or '' if it counts.

        Every verdict depends only on ``env`` and its causal past, so replicas agree.
        """
        heads = [change_hash]
        kind = op["op"]
        if kind == "genesis":
            self.doc.genesis = change_hash
            meta = {k: self.doc.read_scalar("meta", k, heads) for k in ("name", "founder")}
            if meta != {"name": op["name"], "founder": env.author}:
                return "genesis document does not match its operation"
            self.name, self.founder, self.created = op["name"], env.author, op["ts"]
            self.policy = op.get("policy", "history")
            self.dm_peer = op.get("dm", "")
            return ""
        if self.e2ee and env.epoch == self.clear_epoch \
                and kind in ("post", "posts", "edit", "delete", "react", "mod"):
            return f"{kind} in the clear epoch (readable by anyone who knows the channel)"
        if kind == "post":
            return self._fold_post(env, op, heads, eff, depth, trusted)
        if kind == "posts":
            return self._fold_posts(env, op, heads, eff, depth, trusted)
        if kind in ("edit", "delete"):
            return self._fold_edit(env, op, heads, kind)
        if kind == "mod":
            return self._fold_mod(env, op, heads)
        if kind == "prekey":
            self.group.changed()
            return self._fold_prekey(env, op, heads)
        if kind in ("bundle", "share", "join", "keyreq"):
            if env.epoch != self.clear_epoch:
                return f"{kind} outside the clear epoch"
            why = getattr(self, f"_fold_{kind}")(env, op, heads)
            self.group.changed()
            return str(why)
        if kind == "react":
            target, emoji, on = op.get("target"), op.get("emoji"), op.get("on")
            if not isinstance(target, str) or type(emoji) is not str \
                    or not 0 < len(emoji) <= MAX_EMOJI_LENGTH or type(on) is not bool:
                return "malformed reaction"
            if not any(r.id == target and self.in_causal_past(r.env, env.deps)
                       for r in self.claims(target)):
                return "reaction to a message outside its causal past"
            key = self._reaction_key(target, emoji, actor_id(env.author, env.device))
            if self._read_scalar("reactions", key, heads) is not on:
                return "document does not match the reaction"
            self.reactions.setdefault((target, emoji, env.author, env.device), []).append(
                (env.seq, on))
            self.changed.append(target)
            return ""
        return f"unknown operation {kind[:32]!r}"

    def claims(self, msg_id: str) -> list[MessageRecord]:
        """Every post with this id (one, unless someone reused the id concurrently)."""
        collided = self._collided.get(msg_id)
        if collided is not None:
            return collided
        first = self.messages.get(msg_id)
        return [first] if first is not None else []

    def _add_claim(self, record: MessageRecord) -> None:
        shown = self.messages.get(record.id)
        if shown is not None:
            self._collided.setdefault(record.id, [shown]).append(record)
        if shown is None or record.env < shown.env:
            self.messages[record.id] = record

    def _fold_post(self, env: Envelope, op: dict[str, Any], heads: list[bytes], eff: int,
                   depth: int, trusted: bool = False) -> str:
        msg_id = op.get("id")
        if not is_ulid(msg_id):
            return "malformed post"
        assert isinstance(msg_id, str)
        if ulid_ms(msg_id) != op["ts"]:
            return "message id time does not match the operation's time"
        given = (op["text"], op["reply_to"]) if trusted else None
        got = self._check_post(env, msg_id, heads, eff, depth, given)
        if isinstance(got, str):
            return got
        if not trusted and "text" in op \
                and (op.get("text"), op.get("reply_to", "")) != (got.text, got.reply_to):
            return "document does not match the post"  # envelopes from before 0.6
        self._add_post(got)
        return ""

    def _fold_posts(self, env: Envelope, op: dict[str, Any], heads: list[bytes], eff: int,
                    depth: int, trusted: bool = False) -> str:
        """Several posts in one change: every one must count, or none does."""
        ids = op["ids"]  # decode_operation checked the shape
        if any(a >= b for a, b in pairwise(ids)):
            return "post ids must be strictly increasing"
        records = []
        for n, msg_id in enumerate(ids):
            got = self._check_post(env, msg_id, heads, eff, depth,
                                   op["texts"][n] if trusted else None)
            if isinstance(got, str):
                return f"post {n + 1} of {len(ids)}: {got}"
            records.append(got)
        for record in records:
            self._add_post(record)
        return ""

    def _check_post(self, env: Envelope, msg_id: str, heads: list[bytes], eff: int,
                    depth: int, given: tuple[str, str] | None) -> MessageRecord | str:
        """The record of one post of ``env``, or why it does not count. ``given``: our own
        post's (text, reply_to), just written from these very values."""
        if given is not None:
            text, reply_to = given
        else:  # the text travels in the change only: read the entry back
            entry = self._read_map("messages", msg_id, heads) or {}
            read_text, read_reply = entry.get("text"), entry.get("reply_to")
            if type(read_text) is not str or type(read_reply) is not str \
                    or entry != {"author": env.author, "text": read_text,
                                 "reply_to": read_reply, "deleted": False}:
                return "document does not match the post"
            text, reply_to = read_text, read_reply
        if not 0 < len(text) <= MAX_TEXT_LENGTH:
            return "message text length out of range"
        if any(self.in_causal_past(r.env, env.deps) for r in self.claims(msg_id)):
            return "message id already used"
        return MessageRecord(msg_id, env.author, env.device, text, reply_to, ulid_ms(msg_id),
                             env.id, env.seq, (eff, depth, msg_id))

    def _add_post(self, record: MessageRecord) -> None:
        self.posts[(record.id, record.author, record.device)] = record
        self._order = None
        self._add_claim(record)  # a concurrent claim on the same id: both posts are shown
        self.changed.append(record.id)

    def _fold_prekey(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        record = op.get("record")
        if type(record) is not bytes:
            return "malformed prekey"
        try:
            prekey = open_prekey(record, op["ts"])  # valid when it was published
        except KeyError_ as exc:
            return f"invalid prekey: {exc}"
        if prekey.did != env.author:
            return "prekey of another member"
        if self._read_map("keys", _prekey_key(prekey.prekey_id), heads) != {"record": record}:
            return "document does not match the prekey"
        self.prekeys.setdefault(env.author, {})[prekey.prekey_id] = prekey
        return ""

    def _read_map(self, top: str, key: str, heads: list[bytes]) -> dict[str, Any] | None:
        """``self.doc.read_map``, shared across replicas when :attr:`shared` is set: the
        heads are change hashes, so every replica holding them reads the same entry.
        The caller must not change the dict it gets."""
        return self._read(self.doc.read_map, top, key, heads)  # type: ignore[no-any-return]

    def _read_scalar(self, top: str, key: str, heads: list[bytes]) -> Any:
        """``self.doc.read_scalar``, shared as :meth:`_read_map` is."""
        return self._read(self.doc.read_scalar, top, key, heads)

    def _read(self, read: Callable[[str, str, list[bytes]], Any], top: str, key: str,
              heads: list[bytes]) -> Any:
        shared = self.shared
        if shared is None:
            return read(top, key, heads)
        return shared.memo(shared.reads, (read.__name__, top, key, tuple(heads)),
                           lambda: read(top, key, heads))

    def _doc_says(self, key: str, author: str, heads: list[bytes]) -> bool:
        return bool(self._read_map("keys", key, heads) == {"by": author})

    def _key_material(self, env: Envelope, op: dict[str, Any], kind: str,
                      read: Callable[[bytes], BundleHeader]) -> BundleHeader | str:
        """The checked header of a ``bundle`` or ``share`` operation, or why it is invalid:
        well formed, signed, of this channel, by the envelope's author, and naming only
        known epochs in the envelope's causal past (one walk back for all of them)."""
        raw = op.get(kind)
        if type(raw) is not bytes:
            return f"malformed {kind}"
        try:
            shared = self.shared
            header = read(raw) if shared is None else \
                shared.memo(shared.headers, (kind, raw), lambda: read(raw))
        except KeyError_ as exc:
            return f"invalid {kind}: {exc}"
        if header.channel != self.channel_id:
            return f"{kind} of another channel"
        if header.distributor != env.author:
            return f"{kind} signed by someone other than the envelope's author"
        named = [self.group.epochs.get(e) for e in header.parents]
        if None in named or not self.all_in_causal_past(
                {i.env for i in named if i is not None}, env.deps):
            return f"{kind} names an epoch outside its causal past"
        return header

    def _fold_bundle(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        header = self._key_material(env, op, "bundle", read_bundle)
        if isinstance(header, str):
            return header
        if header.epoch in self.group.epochs:
            return "epoch already distributed"
        if not self._doc_says(f"epoch:{header.epoch.hex()}", env.author, heads):
            return "document does not match the bundle"
        self.group.epochs[header.epoch] = EpochInfo(
            header.epoch, env.id, env.author, header.parents, header.recipients,
            header.created_ms, header.commitment)
        self.group.commitments[header.epoch] = header.commitment
        return ""

    def _fold_share(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        header = self._key_material(env, op, "share", read_share)
        if isinstance(header, str):
            return header
        assert isinstance(op["share"], bytes)
        if not self._doc_says(f"share:{epoch_id(op['share']).hex()}", env.author, heads):
            return "document does not match the share"
        self.group.shares.append(ShareInfo(env.id, env.author, header.parents,
                                           header.recipients))
        return ""

    def _fold_join(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        grant, sig, proof, prekey = (op.get(k) for k in ("grant", "sig", "proof", "prekey"))
        if not all(type(v) is bytes for v in (grant, sig, proof, prekey)):
            return "malformed join"
        assert isinstance(grant, bytes) and isinstance(sig, bytes)
        assert isinstance(proof, bytes) and isinstance(prekey, bytes)
        try:
            inviter, cap, expires = check_grant(self.channel_id, grant, sig)
        except ValueError as exc:
            return f"invalid invite grant: {exc}"
        if not check_proof(cap, self.channel_id, env.author, proof):
            return "join proof does not verify"
        if expires < op["ts"]:
            return "invite had expired"
        if prekey:
            why = self._add_prekey(env, prekey, op["ts"])
            if why:
                return why
        if not self._doc_says(f"join:{env.author}:{op['ts']}", env.author, heads):
            return "document does not match the join"
        self.group.joins.setdefault(env.author, []).append(
            JoinInfo(env.id, env.author, inviter, expires, op["ts"]))
        return ""

    def _fold_keyreq(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        epochs, prekey = op.get("epochs"), op.get("prekey")
        if not isinstance(epochs, list) or len(epochs) > MAX_REQUEST_EPOCHS \
                or not all(type(e) is bytes and len(e) == 32 for e in epochs) \
                or type(prekey) is not bytes:
            return "malformed key request"
        if prekey:
            why = self._add_prekey(env, prekey, op["ts"])
            if why:
                return why
        if not self._doc_says(f"keyreq:{env.author}:{op['ts']}", env.author, heads):
            return "document does not match the key request"
        self.group.requests.append(RequestInfo(env.id, env.author, tuple(epochs)))
        return ""

    def _add_prekey(self, env: Envelope, record: bytes, ts: int) -> str:
        try:
            prekey = open_prekey(record, ts)
        except KeyError_ as exc:
            return f"invalid prekey: {exc}"
        if prekey.did != env.author:
            return "prekey of another member"
        self.prekeys.setdefault(env.author, {})[prekey.prekey_id] = prekey
        self.group.changed()
        return ""

    def _fold_mod(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        entry_id, action = op.get("id"), op.get("action")
        if not is_ulid(entry_id) or type(action) is not str:
            return "malformed moderation entry"
        assert isinstance(entry_id, str)
        if ulid_ms(entry_id) != op["ts"]:
            return "entry id time does not match the operation's time"
        fields = _mod_fields(action, op.get("target", ""), op.get("value", ""),
                             op.get("on", True), op.get("reason", ""))
        if isinstance(fields, str):
            return fields
        if self._read_map("modlog", entry_id, heads) != {**fields, "by": env.author}:
            return "document does not match the moderation entry"
        if any(e.ulid == entry_id for e in self.mod_events):
            return "moderation entry id already used"
        self.mod_events.append(ModEvent(env.id, entry_id, env.author, action,
                                        fields.get("target", ""), fields.get("value", ""),
                                        fields.get("on", True), fields["reason"], op["ts"],
                                        env.device, env.seq))
        self._watch(env.author, fields.get("target", ""))
        self._mod_state = None
        self.group.changed()
        self._recheck_refused = any(m.status is Status.REFUSED for m in self.envs.values())
        # visibility may change for the target's posts (or everyone's, for a mode)
        self.changed += [r.id for r in self.posts.values()
                         if action == "mode" or r.author == fields.get("target")]
        return ""

    def _fold_edit(self, env: Envelope, op: dict[str, Any], heads: list[bytes], kind: str) -> str:
        msg_id = op.get("id")
        if not isinstance(msg_id, str) or msg_id not in self.messages:
            return f"{kind} of an unknown message"
        record = self.posts.get((msg_id, env.author, env.device))
        if record is None:
            return f"{kind} of another author's message"
        if record.deleted_in_chain:
            return f"{kind} of a deleted message"
        doc = self._read_map("messages", msg_id, heads) or {}
        if kind == "edit":
            text = op.get("text")
            if type(text) is not str or not 0 < len(text) <= MAX_TEXT_LENGTH \
                    or doc.get("text") != text or doc.get("edited") != op["ts"]:
                return "document does not match the edit"
            record.ops.append((env.seq, "edit", text, op["ts"]))
        else:
            if doc.get("deleted") is not True or doc.get("text") != "":
                return "document does not match the delete"
            record.ops.append((env.seq, "delete", "", op["ts"]))
        self.changed.append(msg_id)
        return ""

    # --- snapshots --------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything but the envelope bytes (the store has those) and the pending buffer."""
        envs = [[i, m.author, m.device, m.seq, list(m.deps), m.change_hash, m.status.value,
                 m.eff, m.depth, m.why, m.epoch] for i in self.log for m in (self.envs[i],)]
        g = self.group
        posts = [[r.id, r.author, r.device, r.text, r.reply_to, r.ts, r.env, r.seq,
                  list(r.key), [list(o) for o in r.ops]] for r in self.posts.values()]
        return msgpack.packb({  # type: ignore[no-any-return]
            "v": SNAPSHOT_VERSION, "doc": self.doc.save(), "authoring": self.authoring.save(),
            "device": self.identity.device_salt,
            "name": self.name, "founder": self.founder, "created": self.created,
            "genesis": [self.genesis_id, self.genesis_hash], "envs": envs,
            "posts": posts,
            "reactions": [[t, e, a, d, [list(x) for x in states]]
                          for (t, e, a, d), states in self.reactions.items()],
            "equivocators": [[a, d, s] for (a, d), s in self.equivocators.items()],
            "mod": [[e.env, e.ulid, e.author, e.action, e.target, e.value, e.on, e.reason, e.ts,
                     e.device, e.seq] for e in self.mod_events],
            "prekeys": [[p.did, p.prekey_id, p.public, p.expires_ms]
                        for keys in self.prekeys.values() for p in keys.values()],
            "policy": self.policy, "dm": self.dm_peer,
            "epochs": [[i.epoch, i.env, i.distributor, list(i.parents), list(i.recipients),
                        i.created_ms, i.commitment] for i in g.epochs.values()],
            "shares": [[x.env, x.distributor, list(x.epochs), list(x.recipients)]
                       for x in g.shares],
            "joins": [[j.env, j.did, j.inviter, j.expires_ms, j.ts]
                      for joins in g.joins.values() for j in joins],
            "requests": [[r.env, r.did, list(r.epochs)] for r in g.requests],
            "count": list(g.count.items()),
            "commitments": list(g.commitments.items()),
            "rotated": [sorted(h) for h in g.rotated_for],
            "unreadable": sorted(self.unreadable),
        }, use_bin_type=True)

    @classmethod
    def restore(cls, channel_id: bytes, identity: Identity, keys: KeyLookup | None,
                epoch: bytes | None, data: bytes, raw: dict[bytes, bytes],
                private_for: PrivateLookup | None = None,
                secrets: dict[bytes, bytes] | None = None) -> ChannelState:
        """Rebuild from :meth:`snapshot` plus the stored bytes of the envelopes it covers
        (``epoch``: the static epoch, or None for a channel with group keys)."""
        snap = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if snap.get("v") != SNAPSHOT_VERSION:
            raise ValueError("unknown snapshot version")
        state = cls(channel_id, identity, keys, private_for, secrets)
        state.current_epoch = epoch
        state.doc = SharedDocument.load(snap["doc"])
        device = snap.get("device", identity.device_salt)  # the device it wrote as
        if type(device) is not bytes or not state.owns_device(device):
            raise ValueError("snapshot names a device that is not this node's")
        if device != identity.device_salt:
            state.identity = dataclasses.replace(identity, device_salt=device)
            state._actor = actor_id(identity.did, device)
        state.authoring = AuthoringDocument.load(state._actor, snap["authoring"])
        state.name, state.founder, state.created = snap["name"], snap["founder"], snap["created"]
        state.genesis_id, state.genesis_hash = snap["genesis"]
        state.doc.genesis = state.genesis_hash
        for env_id, author, device, seq, deps, change_hash, status, eff, depth, why, ep \
                in snap["envs"]:
            if env_id not in raw:
                raise ValueError("snapshot covers an envelope the store does not have")
            meta = EnvMeta(author, device, seq, tuple(deps), change_hash, Status(status),
                           len(state.log), eff, depth, why, ep)
            state.envs[env_id] = meta
            if meta.status is Status.SEALED:
                state.sealed.add(env_id)
            state.raw[env_id] = raw[env_id]
            state.log.append(env_id)
            state.slots.setdefault((author, device, seq), env_id)
            state.heads.difference_update(meta.deps)
            state.heads.add(env_id)
        for (author, device, _), _id in sorted(state.slots.items()):
            device_key = (author, device)
            seq = state.vector.get(device_key, 0)
            while (author, device, seq + 1) in state.slots:
                seq += 1
            state.vector[device_key] = seq
        for mid, author, device, text, reply_to, ts, env, seq, key, ops in snap["posts"]:
            record = MessageRecord(mid, author, device, text, reply_to, ts, env, seq,
                                   (key[0], key[1], key[2]),
                                   [(o[0], o[1], o[2], o[3]) for o in ops])
            state.posts[(mid, author, device)] = record
            state._add_claim(record)
        state.reactions = {(t, e, a, d): [(x[0], x[1]) for x in states]
                           for t, e, a, d, states in snap["reactions"]}
        state.equivocators = {(a, d): s for a, d, s in snap["equivocators"]}
        state.mod_events = [ModEvent(*row) for row in snap["mod"]]
        for did, prekey_id, public, expires in snap["prekeys"]:
            state.prekeys.setdefault(did, {})[prekey_id] = Prekey(did, prekey_id, public,
                                                                  expires)
        for e in state.mod_events:
            state._watch(e.author, e.target)
        g = state.group
        state.policy, state.dm_peer = snap["policy"], snap["dm"]
        for ep, env_id, dist, parents, recipients, created, commitment in snap["epochs"]:
            g.epochs[ep] = EpochInfo(ep, env_id, dist, tuple(parents), tuple(recipients),
                                     created, commitment)
        g.shares = [ShareInfo(e, d, tuple(x), tuple(r)) for e, d, x, r in snap["shares"]]
        for env_id, did, inviter, expires, ts in snap["joins"]:
            g.joins.setdefault(did, []).append(JoinInfo(env_id, did, inviter, expires, ts))
        g.requests = [RequestInfo(e, d, tuple(x)) for e, d, x in snap["requests"]]
        g.count = dict((e, n) for e, n in snap["count"])
        g.commitments = dict((e, c) for e, c in snap["commitments"])
        g.rotated_for = {frozenset(h) for h in snap["rotated"]}
        state.unreadable = set(snap["unreadable"])
        return state

    # --- views ------------------------------------------------------------------------

    def _fork(self, author: str, device: bytes) -> int | None:
        return self.equivocators.get((author, device))

    def hidden(self, record: MessageRecord) -> bool:
        start = self._fork(record.author, record.device)
        return (start is not None and record.seq >= start) or bool(self.hidden_why(record))

    def hidden_why(self, record: MessageRecord) -> str:
        """Why moderation (or the group keys) hides this post ('' if it does not)."""
        if self.e2ee:
            epoch = self.envs[record.env].epoch
            view = self.group.view()
            if not view.valid.get(epoch, False):
                return "written under an epoch no member distributed"
            if record.author not in view.holders[epoch]:
                return "written with a key its author was not given"
        if not self.mod_events or record.author == self.founder:
            return ""
        return mod.hidden_by(record.author, record.env, self.moderation(), self.in_past,
                             self.wrote_before)

    def wrote_before(self, did: str, env_id: bytes) -> bool:
        """Some envelope by ``did`` is in the causal past of ``env_id`` (cached: a device's
        first envelope is in that past if any of its envelopes is)."""
        key = (did, env_id)
        known = self._wrote_cache.get(key)
        if known is None:
            firsts = [i for (author, _, seq), i in self.slots.items()
                      if author == did and seq == 1]
            known = self._wrote_cache[key] = any(self.in_past(i, env_id) for i in firsts)
        return known

    def in_past(self, ancestor: bytes, env_id: bytes) -> bool:
        """``ancestor`` is in the causal past of envelope ``env_id`` (both recorded here)."""
        if ancestor == env_id:
            return False
        meta = self.envs[ancestor]
        slot = self._clock_slot(meta.author, meta.device)
        if slot is None:
            return self.in_causal_past(ancestor, self.envs[env_id].deps)
        return self._clock(env_id)[slot] >= meta.seq

    def in_past_of_deps(self, ancestor: bytes, deps: tuple[bytes, ...]) -> bool:
        """``ancestor`` is among ``deps`` or their causal past (an envelope not recorded)."""
        meta = self.envs[ancestor]
        slot = self._clock_slot(meta.author, meta.device)
        if slot is None:
            return self.in_causal_past(ancestor, deps)
        return any(self._clock(d)[slot] >= meta.seq for d in deps)

    def _watch(self, *dids: str) -> None:
        new = {d for d in dids if d} - self._watched
        if new:
            self._watched |= new
            self._slots.clear()  # slots and clocks are rebuilt on the next query
            self._clocks.clear()

    def _clock_slot(self, author: str, device: bytes) -> int | None:
        """The clock slot of a watched, non-forked device (forks break the chain)."""
        if author not in self._watched or (author, device) in self.equivocators:
            return None
        if not self._slots:
            self._rebuild_clocks()
        return self._slots.get((author, device))

    def _clock(self, env_id: bytes) -> tuple[int, ...]:
        clock = self._clocks.get(env_id)
        if clock is None:
            self._rebuild_clocks()
            clock = self._clocks[env_id]
        return clock

    def _rebuild_clocks(self) -> None:
        devices = sorted({(m.author, m.device) for m in self.envs.values()
                          if m.author in self._watched})
        self._slots = {d: i for i, d in enumerate(devices)}
        self._clocks = {}
        for env_id in self.log:  # causal order: deps first
            self._clocks[env_id] = self._clock_for(self.envs[env_id])

    def _clock_for(self, meta: EnvMeta) -> tuple[int, ...]:
        clock = [0] * len(self._slots)
        for dep in meta.deps:
            for i, seq in enumerate(self._clocks[dep]):
                if seq > clock[i]:
                    clock[i] = seq
        slot = self._slots.get((meta.author, meta.device))
        if slot is not None:
            clock[slot] = max(clock[slot], meta.seq)
        return tuple(clock)

    def moderation(self) -> ModState:
        """The moderation fold over every modlog entry applied here (cached)."""
        if self._mod_state is None:
            self._mod_state = mod.fold(self.founder, self.mod_events, self.in_past)
        return self._mod_state

    def may_sync(self, did: str) -> bool:
        """May peer ``did`` sync this channel? Not if banned; in an ``invite-only``
        channel only the owner, moderators and added members may."""
        if not self.mod_events or did == self.founder:
            return True
        state = self.moderation()
        if did in state.banned:
            return False
        if not state.modes.get("invite-only") or did in state.moderators:
            return True
        kicked = mod.resolve_flag(state.by_target.get(did, []), "kick", "add", self.in_past)
        if kicked is None:  # never added: a member if it wrote before invite-only
            modes = [e for e in state.valid if e.action == "mode" and e.value == "invite-only"]
            last = mod.latest(modes, self.in_past)
            return last is not None and self.wrote_before(did, last.env)
        return not kicked

    def member_ranks(self) -> list[tuple[str, str]]:
        """(did, rank) of every author and moderation target: owner, moderator, member,
        muted or banned; kicked members are left out until they write again."""
        state = self.moderation()
        dids = set(self.members()) | {e.target for e in self.mod_events if e.target}
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
        return any(m.author == did and all(self.in_past(k, i) for k in kicks)
                   for i, m in self.envs.items() if m.status is Status.APPLIED)

    def modlog(self) -> list[dict[str, Any]]:
        """Every moderation entry in causal order, with whether it counts and why not."""
        state = self.moderation()
        rows = []
        for e in sorted(self.mod_events, key=lambda e: (self.envs[e.env].depth, e.ulid)):
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
        if self._order is None:
            self._order = sorted(self.posts.values(), key=_position)
        return self._order

    def message_count(self) -> int:
        """How many messages :meth:`history` shows (without building their views)."""
        return sum(1 for r in self.posts.values() if not self.hidden(r))

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

        def shown(r: MessageRecord) -> bool:
            return with_hidden or not self.hidden(r)

        page: list[MessageRecord] = []
        if after is None:
            i = len(order) if before is None else bisect_left(
                order, min(map(_position, self._claims_of(before))), key=_position)
            while i > 0 and len(page) < limit:
                i -= 1
                if shown(order[i]):
                    page.append(order[i])
            # widen until no older post shares the id of the page's oldest message
            while page:
                start = bisect_left(order, min(map(_position, self.claims(page[-1].id))),
                                    key=_position)
                if start >= i:
                    break
                while i > start:
                    i -= 1
                    if shown(order[i]):
                        page.append(order[i])
            page.reverse()
        else:
            i = bisect_left(order, max(map(_position, self._claims_of(after))),
                            key=_position)
            while i + 1 < len(order) and len(page) < limit:
                i += 1
                if shown(order[i]):
                    page.append(order[i])
            while page:
                end = bisect_left(order, max(map(_position, self.claims(page[-1].id))),
                                  key=_position)
                if end <= i:
                    break
                while i < end:
                    i += 1
                    if shown(order[i]):
                        page.append(order[i])
        return self._views(page, now_ms, with_hidden)

    def _claims_of(self, msg_id: str) -> list[MessageRecord]:
        claims = self.claims(msg_id)
        if not claims:
            raise ValueError(f"no message {msg_id[:40]} in this channel")
        return claims

    def views_of(self, ids: set[str], now_ms: int | None = None) -> list[MessageView]:
        """The shown messages with these ids, in display order (search results)."""
        records = [r for i in ids for r in self.claims(i) if not self.hidden(r)]
        return self._views(sorted(records, key=_position), now_ms, False)

    def _views(self, records: list[MessageRecord], now_ms: int | None,
               with_hidden: bool) -> list[MessageView]:
        wanted = {r.id for r in records}
        reactions: dict[str, dict[str, set[str]]] = {}
        for (target, emoji, author, device), states in self.reactions.items():
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
        authors = {m.author for m in self.envs.values() if m.status is not Status.QUARANTINED}
        return sorted(authors)

    def missing_for(self, vector: dict[tuple[str, bytes], int]) -> list[bytes]:
        """Envelope ids the holder of ``vector`` lacks, in causal (local log) order.

        A seq vector cannot say which of two forked envelopes it holds, so every
        envelope of a known equivocator from its fork on is included as evidence.
        """
        out = []
        for i in self.log:
            m = self.envs[i]
            start = self.equivocators.get((m.author, m.device))
            if m.seq > vector.get((m.author, m.device), 0) or (start is not None
                                                              and m.seq >= start):
                out.append(i)
        return out
