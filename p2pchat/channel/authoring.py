"""Authoring: this node's writes to one channel, and the device it writes them as.

Theory of operation
-------------------
A write is checked first (it is refused here, with the reason, if every replica would
refuse or hide it), then goes on this device's *authoring document* (genesis plus this
device's own changes: an Automerge change continues only its own device's chain),
is sealed under the epoch to write with (rotating first if no head epoch may be used;
see :mod:`p2pchat.channel.group`) and is admitted like a received envelope, with the
signature and decryption checks skipped (:meth:`Writer.author`).

Sub-devices (design.md §10.5): after a start that may have lost stored writes, this
device's chain head is not known until a peer's summary shows it (``head_unsure``).
A write before that, or after this device forked, goes to a fresh *sub-device*: a
salt made of 8 random bytes and 8 check bytes keyed with the node's own device salt
(:func:`sub_device_salt`), which this node recognises as its own without any secret
(:meth:`Writer.owns_device`). A sub-device gets its own authoring document
(:meth:`Writer.use_device`), so nothing written now can clash with what peers hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from p2pchat.channel import moderation as mod
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.doc import AuthoringDocument
from p2pchat.channel.envelope import Envelope, actor_id, seal_envelope
from p2pchat.channel.fold import MAX_EMOJI_LENGTH, MAX_TEXT_LENGTH, Fold
from p2pchat.channel.group import MAX_REQUEST_EPOCHS, ROTATE_EVERY, GroupKeys
from p2pchat.channel.keyring import Keyring
from p2pchat.channel.keys import (
    KeyError_,
    Prekey,
    epoch_id,
    open_prekey,
    seal_bundle,
    seal_share,
)
from p2pchat.channel.moderation import ModEvent
from p2pchat.channel.operation import (
    MAX_POSTS_BYTES,
    MAX_POSTS_PER_ENVELOPE,
    encode_operation,
    mod_fields,
    post_bytes,
    prekey_key,
    reaction_key,
)
from p2pchat.channel.receive import Receiver
from p2pchat.channel.records import MessageRecord, Outcome, ReceiveResult, Status
from p2pchat.channel.ulid import is_ulid, make_ulid, ulid_ms
from p2pchat.crypto import blake2b
from p2pchat.identity import Identity

RandomBytes = Callable[[int], bytes]

#: device salts whose ownership Writer.owns_device remembers
MAX_OWN_DEVICE_MEMO = 4096
#: personalisation of a sub-device salt's check bytes (see :func:`sub_device_salt`)
SUB_DEVICE_PERSON = b"p2pchat-subdev"


def sub_device_salt(base: bytes, channel: bytes, nonce: bytes) -> bytes:
    """A fresh device salt for one channel that this node recognises as its own: 8 random
    bytes and 8 check bytes keyed with the node's own device salt (design.md §10.5).
    Only its DID can sign for it, so recognising it needs no secret."""
    return nonce[:8] + blake2b(nonce[:8] + channel, person=SUB_DEVICE_PERSON, key=base,
                               size=8)


class Device:
    """The device this replica writes as now, and its authoring document."""

    def __init__(self, identity: Identity) -> None:
        #: ``identity.device_salt`` is the node's own device salt or a sub-device of it
        self.identity = identity
        self.actor = actor_id(identity.did, identity.device_salt)
        self.authoring = AuthoringDocument(self.actor)
        #: the node's own device salt
        self.base_device = identity.device_salt

    def switch(self, salt: bytes, authoring: AuthoringDocument | None = None) -> None:
        """Write as device ``salt`` from now on (with an empty authoring document, or
        the one given)."""
        self.identity = dataclasses.replace(self.identity, device_salt=salt)
        self.actor = actor_id(self.identity.did, salt)
        self.authoring = authoring or AuthoringDocument(self.actor)

    @property
    def key(self) -> tuple[str, bytes]:
        return self.identity.did, self.identity.device_salt


class Writer:
    def __init__(self, channel_id: bytes, device: Device, dag: Dag, clocks: CausalClocks,
                 fold: Fold, group: GroupKeys, keyring: Keyring, receiver: Receiver,
                 out: Outcome) -> None:
        self.channel_id = channel_id
        self.device = device
        self._dag = dag
        self._clocks = clocks
        self._fold = fold
        self._group = group
        self._keyring = keyring
        self._receiver = receiver
        self._out = out
        self._own_devices: dict[bytes, bool] = {}  # owns_device, memoised
        #: after a start that may have lost stored writes (a power cut, say), this
        #: device's chain head is not known until a peer's summary shows it: a write
        #: before that goes to a fresh sub-device, so it can never fork the old chain
        self.head_unsure = False
        #: the highest seq of our device a peer has announced (see :meth:`head_seen`)
        self._head_announced = 0

    @property
    def identity(self) -> Identity:
        return self.device.identity

    def genesis(self, name: str, nonce: bytes, now_ms: int, randbytes: RandomBytes,
                policy: str, dm: str) -> Envelope:
        """Found the channel: write its genesis (in the clear epoch with group keys) and
        apply it; with group keys, distribute the first epoch at once."""
        change = self.device.authoring.genesis({"name": name, "founder": self.identity.did,
                                                "created": now_ms})
        op = {"op": "genesis", "name": name, "nonce": nonce, "ts": now_ms}
        if policy != "history":
            op["policy"] = policy
        if dm:
            op["dm"] = dm
        e2ee = self._keyring.e2ee
        env = self.seal(op, change, randbytes, clear=e2ee)
        result = self._receiver.receive(env, now_ms)
        assert result.applied, "own genesis must apply"
        if e2ee:
            self.rotate(now_ms, randbytes)
        return env

    # --- group keys ---------------------------------------------------------------------

    def key_status(self) -> str:
        """``static`` (a channel from before group keys), ``member`` (holds the keys),
        ``waiting`` (joined, not admitted yet), or ``removed`` (banned or kicked)."""
        if not self._keyring.e2ee:
            return "static"
        view = self._group.view()
        me = self.identity.did
        if me in view.removed:
            return "removed"
        if me not in view.members:
            return "waiting"
        # a member back after a kick holds old epochs only, until a member shares the
        # current ones (any other member without a head epoch rotates away from it)
        if self._group.was_kicked(me) and view.heads and not any(
                me in view.holders.get(h, set()) for h in view.heads):
            return "waiting"
        return "member"

    def _ready_epoch(self, now_ms: int, randbytes: RandomBytes) -> None:
        """Before authoring an encrypted change: rotate if no head epoch may be used."""
        if self._keyring.e2ee and self._group.send_epoch(now_ms) is None:
            view = self._group.view()
            if self.identity.did in view.removed:
                banned = self.identity.did in self._fold.moderation().banned
                raise ValueError(f"you were {'banned' if banned else 'kicked'} from this "
                                 "channel: the members no longer share its keys with you")
            if self.key_status() != "member":
                raise ValueError("not admitted yet: no member has shared the channel's keys "
                                 "with this node (it needs a member online, directly or "
                                 "through a bootstrap server)")
            self.rotate(now_ms, randbytes)

    def rotate(self, now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Distribute a new epoch to every current member (see :mod:`group`)."""
        if not self._keyring.e2ee:
            raise ValueError("this channel has a static key; it cannot rotate")
        self.check_may_write(posting=False)
        group = self._group
        heads = tuple(group.view().heads)
        secret = randbytes(32)
        bundle = seal_bundle(self.identity, self.channel_id, heads, secret,
                             group.rotation_recipients(now_ms), randbytes, now_ms)
        epoch = epoch_id(bundle)
        group.secrets[epoch] = secret
        self._out.new_secrets.append((epoch, secret))
        change = self.writer(randbytes).put_entry("keys", f"epoch:{epoch.hex()}",
                                                  {"by": self.identity.did})
        env = self.author({"op": "bundle", "bundle": bundle, "ts": now_ms}, change, now_ms,
                          randbytes, clear=True)
        group.rotated_for.add(frozenset(heads))
        return env

    def share(self, recipients: list[Prekey], epochs: list[bytes], now_ms: int,
              randbytes: RandomBytes) -> Envelope:
        """A history share: the secrets of ``epochs`` (that we hold) for ``recipients``."""
        held = self._group.secrets
        secrets = {e: held[e] for e in epochs if e in held}
        if not secrets or not recipients:
            raise ValueError("nothing to share")
        self.check_may_write(posting=False)
        raw = seal_share(self.identity, self.channel_id, secrets, recipients, randbytes,
                         now_ms)
        change = self.writer(randbytes).put_entry("keys", f"share:{epoch_id(raw).hex()}",
                                                  {"by": self.identity.did})
        return self.author({"op": "share", "share": raw, "ts": now_ms}, change, now_ms,
                           randbytes, clear=True)

    def join(self, grant: bytes, grant_signature: bytes, proof: bytes, prekey: bytes,
             now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Present an invite's capability (and our prekey) to the members."""
        me = self.identity.did
        change = self.writer(randbytes).put_entry("keys", f"join:{me}:{now_ms}", {"by": me})
        return self.author({"op": "join", "grant": grant, "sig": grant_signature,
                            "proof": proof, "prekey": prekey, "ts": now_ms}, change, now_ms,
                           randbytes, clear=True)

    def request_keys(self, epochs: list[bytes], prekey: bytes, now_ms: int,
                     randbytes: RandomBytes) -> Envelope:
        """Ask members for the secrets of ``epochs`` (sealed to ``prekey``, published here)."""
        epochs = sorted(set(epochs))[:MAX_REQUEST_EPOCHS]
        me = self.identity.did
        change = self.writer(randbytes).put_entry("keys", f"keyreq:{me}:{now_ms}", {"by": me})
        return self.author({"op": "keyreq", "epochs": epochs, "prekey": prekey, "ts": now_ms},
                           change, now_ms, randbytes, clear=True)

    def publish_prekey(self, record: bytes, now_ms: int, randbytes: RandomBytes) -> Envelope:
        """Publish one of this member's signed prekeys, in the clear epoch."""
        try:
            prekey = open_prekey(record, now_ms)
        except KeyError_ as exc:
            raise ValueError(str(exc)) from None
        if prekey.did != self.identity.did:
            raise ValueError("a member publishes only its own prekeys")
        self.check_may_write(posting=False)
        change = self.writer(randbytes).put_entry("keys", prekey_key(prekey.prekey_id),
                                                  {"record": record})
        return self.author({"op": "prekey", "record": record, "ts": now_ms}, change, now_ms,
                           randbytes, clear=True)

    # --- messages -----------------------------------------------------------------------

    def check_post(self, text: str, reply_to: str = "") -> None:
        """Refuse a post that could not count (says why), before it is written."""
        self._check_text(text)
        self.check_may_write()
        if reply_to and reply_to not in self._fold.messages:
            raise ValueError(f"no message {reply_to} to reply to")

    def post(self, text: str, now_ms: int, randbytes: RandomBytes, reply_to: str = ""
             ) -> tuple[Envelope, str]:
        self.check_post(text, reply_to)
        self._ready_epoch(now_ms, randbytes)
        msg_id = make_ulid(now_ms, randbytes(10))
        return self._author_post(msg_id, text, reply_to, now_ms, randbytes), msg_id

    def _author_post(self, msg_id: str, text: str, reply_to: str, now_ms: int,
                     randbytes: RandomBytes) -> Envelope:
        change = self.writer(randbytes).put_entry("messages", msg_id, {
            "author": self.identity.did, "text": text, "reply_to": reply_to, "deleted": False})
        # the text travels once, in the change: the operation names the entry it writes
        return self.author({"op": "post", "id": msg_id, "ts": ulid_ms(msg_id)}, change,
                           now_ms, randbytes, local={"text": text, "reply_to": reply_to})

    def post_room(self, now_ms: int, posts: list[tuple[str, str]]) -> int:
        """How many of ``posts`` ((text, reply_to), in order) the next envelope may
        carry, at least one: up to MAX_POSTS_PER_ENVELOPE, MAX_POSTS_BYTES, and no
        further than the current epoch's routine rotation (then the next one)."""
        room = MAX_POSTS_PER_ENVELOPE
        if self._keyring.e2ee:
            epoch = self._group.send_epoch(now_ms)
            used = 0 if epoch is None else self._group.count.get(epoch, 0)
            room = min(room, ROTATE_EVERY - used)
        size = 0
        for n, (text, reply_to) in enumerate(posts[:room]):
            size += post_bytes(text, reply_to)
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
        if len(posts) > 1 and sum(post_bytes(t, r) for _, t, r in posts) > MAX_POSTS_BYTES:
            raise ValueError(f"posts of more than {MAX_POSTS_BYTES} bytes in one envelope")
        self.check_may_write()
        messages = self._fold.messages
        for msg_id, text, reply_to in posts:
            self._check_text(text)
            if reply_to and reply_to not in messages:
                raise ValueError(f"no message {reply_to} to reply to")
            if msg_id in messages:
                raise ValueError(f"message id {msg_id} already used")
        self._ready_epoch(now_ms, randbytes)
        if len(posts) == 1:
            return self._author_post(*posts[0], now_ms, randbytes)
        me = self.identity.did
        change = self.writer(randbytes).put_entries("messages", [
            (msg_id, {"author": me, "text": text, "reply_to": reply_to, "deleted": False})
            for msg_id, text, reply_to in posts])
        return self.author({"op": "posts", "ids": ids, "ts": ulid_ms(ids[-1])},
                           change, now_ms, randbytes,
                           local={"texts": [(t, r) for _, t, r in posts]})

    def edit(self, msg_id: str, text: str, now_ms: int, randbytes: RandomBytes) -> Envelope:
        self._check_text(text)
        self.check_may_write()
        self._fresh_device_if_unsure(randbytes)
        record = self._own_message(msg_id)
        current = next((t for _, kind, t, _ in reversed(record.ops) if kind == "edit"),
                       record.text)
        if text == current:  # protocol.md §7: an edit must change something
            raise ValueError("nothing to change")
        self._ready_epoch(now_ms, randbytes)
        change = self.device.authoring.update_entry("messages", msg_id,
                                                    {"text": text, "edited": now_ms})
        return self.author({"op": "edit", "id": msg_id, "text": text, "ts": now_ms}, change,
                           now_ms, randbytes)

    def delete(self, msg_id: str, now_ms: int, randbytes: RandomBytes) -> Envelope:
        self.check_may_write(posting=False)
        self._fresh_device_if_unsure(randbytes)
        self._own_message(msg_id)
        self._ready_epoch(now_ms, randbytes)
        change = self.device.authoring.update_entry("messages", msg_id,
                                                    {"text": "", "deleted": True})
        return self.author({"op": "delete", "id": msg_id, "ts": now_ms}, change, now_ms,
                           randbytes)

    def react(self, target: str, emoji: str, on: bool, now_ms: int, randbytes: RandomBytes
              ) -> Envelope:
        if target not in self._fold.messages:
            raise ValueError(f"no message {target}")
        self.check_may_write()
        if not emoji or len(emoji) > MAX_EMOJI_LENGTH or not emoji.isprintable():
            raise ValueError("invalid reaction")
        self._ready_epoch(now_ms, randbytes)
        change = self.writer(randbytes).put_scalar(
            "reactions", reaction_key(target, emoji, self.device.actor), on)
        return self.author({"op": "react", "target": target, "emoji": emoji, "on": on,
                            "ts": now_ms}, change, now_ms, randbytes)

    def moderate(self, action: str, now_ms: int, randbytes: RandomBytes, *, target: str = "",
                 value: str = "", on: bool = True, reason: str = "", check: bool = True
                 ) -> tuple[Envelope, str]:
        """Author a moderation action; refused here if it could not count (says why).

        ``check=False`` publishes it anyway: every replica then records it as invalid,
        with the reason (tests use this to play a hostile or stale author).
        """
        fields = mod_fields(action, target, value, on, reason)
        if isinstance(fields, str):
            raise ValueError(fields)
        if check:
            self.check_may_write(posting=False)
        state = self._fold.moderation()
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
        change = self.writer(randbytes).put_entry("modlog", entry_id, {**fields, "by": me})
        env = self.author({"op": "mod", "id": entry_id, **fields, "ts": now_ms}, change,
                          now_ms, randbytes)
        if action in ("ban", "kick") and self._keyring.e2ee \
                and self._group.send_epoch(now_ms) is None:
            # the removal and the epoch that leaves the member out go out together
            self.rotate(now_ms, randbytes)
        return env, entry_id

    def _check_text(self, text: str) -> None:
        if not text or len(text) > MAX_TEXT_LENGTH:
            raise ValueError(f"message text must be 1..{MAX_TEXT_LENGTH} characters")

    # --- this node's devices (crash recovery, design.md §10.5) --------------------------

    def owns_device(self, salt: bytes) -> bool:
        """Whether ``salt`` is this node's device or one of its sub-devices here."""
        known = self._own_devices.get(salt)
        if known is None:  # asked per own envelope (uploads, DM status): hash each salt once
            base = self.device.base_device
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
        self.device.switch(salt)
        dag, me = self._dag, self.identity.did
        for env_id in dag.log:
            meta = dag.envs[env_id]
            if env_id == dag.genesis_id or (
                    (meta.author, meta.device) == (me, salt)
                    and meta.status is Status.APPLIED):
                _op, change, _header = self._receiver.open(dag.stored(env_id))
                self.device.authoring.apply(change)

    def head_seen(self, announced: int) -> None:
        """A peer's summary announced our current device at seq ``announced``: once we
        hold that much, the chain head is known and writes continue it."""
        self._head_announced = max(self._head_announced, announced)
        if self.head_unsure and self._dag.vector.get(self.device.key, 0) \
                >= self._head_announced:
            self.head_unsure = False

    def _fresh_device_if_unsure(self, randbytes: RandomBytes) -> None:
        """Before authoring: a device whose head is unsure (or that forked) goes on as a
        fresh sub-device, so nothing it writes now can clash with what peers hold."""
        if self._dag.genesis_id is None or not (
                self.head_unsure or self.device.key in self._dag.equivocators):
            return
        self.use_device(sub_device_salt(self.device.base_device, self.channel_id,
                                        randbytes(8)))
        self.head_unsure = False

    def writer(self, randbytes: RandomBytes) -> AuthoringDocument:
        """The authoring document a new change goes on (after a device switch if due)."""
        self._fresh_device_if_unsure(randbytes)
        return self.device.authoring

    def _own_message(self, msg_id: str) -> MessageRecord:
        me = self.identity.did
        posts = self._fold.posts
        record = posts.get((msg_id, me, self.identity.device_salt))
        if record is None:
            if any(k[0] == msg_id and k[1] == me and self.owns_device(k[2]) for k in posts):
                raise ValueError(
                    f"{msg_id} was written on this node's earlier device chain, which it "
                    "left after a restart that may have lost writes (or a fork); it can no "
                    "longer be edited or deleted")
            raise ValueError(f"{msg_id} is not a message of this device")
        if record.deleted_in_chain:
            raise ValueError(f"{msg_id} is deleted")
        return record

    # --- sealing and admitting ----------------------------------------------------------

    def check_may_write(self, posting: bool = True) -> None:
        """Refuse a write that every replica would refuse or hide (says why)."""
        me = self.identity.did
        fold = self._fold
        if not fold.mod_events or me == fold.founder:
            return
        state = fold.moderation()
        if me in state.banned:
            raise ValueError("you are banned from this channel")
        if posting:
            # a post after everything we know: everything valid is in its causal past
            in_past = self._clocks.in_past
            why = mod.hidden_by(me, b"", state, lambda a, b: b == b"" if b"" in (a, b)
                                else in_past(a, b), self._clocks.wrote_before)
            if why:
                raise ValueError(f"your message would be hidden: {why.replace('author', 'you')}")

    def author(self, op: dict[str, Any], change: bytes, now_ms: int,
               randbytes: RandomBytes, clear: bool = False,
               local: dict[str, Any] | None = None) -> Envelope:
        """Seal and apply our own operation. ``local``: fields the fold of our own
        operation may take as given (they are in the change; peers read them back)."""
        env = self.seal(op, change, randbytes, clear, now_ms)
        if local:
            op = {**op, **local}
        # We just made, signed and encrypted it: skip the signature and decryption checks
        # (the rules of the fold still run, so our own invalid operations are caught too).
        result = ReceiveResult()
        header = self._receiver.own_header(change, env.seq)
        self._receiver.admit(env, op, change, header, result, trusted=True)
        envs = self._dag.envs
        if not result.applied or envs[env.id].status is not Status.APPLIED:
            raise RuntimeError(f"own envelope did not apply: {envs[env.id].why}")
        if self._fold.recheck_refused:  # our own unban, say: refused envelopes may apply now
            self._receiver.readmit(ReceiveResult())
        return env

    def seal(self, op: dict[str, Any], change: bytes, randbytes: RandomBytes,
             clear: bool = False, now_ms: int = 0) -> Envelope:
        keyring, dag = self._keyring, self._dag
        epoch = keyring.clear_epoch if clear else keyring.current_epoch
        if epoch is None:
            epoch = self._group.send_epoch(now_ms)
        if epoch is None:
            raise RuntimeError("no epoch key to write with")
        me = self.device.key
        if me in dag.equivocators:
            raise ValueError("this device has forked its own history (restored from an old "
                             "copy of the node home?); it can no longer write to this channel")
        key = keyring.key_for(epoch, me[0])
        assert key is not None
        seq = dag.vector.get(me, 0) + 1
        deps = dag.deps_for_new(me)
        prev = dag.slots[(me[0], me[1], seq - 1)] if seq > 1 else b""
        return seal_envelope(self.identity, channel=self.channel_id, seq=seq, deps=deps,
                             epoch=epoch, key=key, nonce=randbytes(24),
                             plaintext=encode_operation(op, change), prev=prev,
                             prev_epoch=dag.implied_epoch(prev) if prev else b"")
