"""The fold: validate each applied envelope's declared operation against the document,
and keep the index it builds (posts, reactions, moderation entries, prekeys, key
material, the channel's own metadata).

Theory of operation
-------------------
By the time :meth:`Fold.fold` runs, the envelope's change is in the document. Its
operation says what the change does ("post this id", "ban that member"); the fold
reads the document *at the change's own heads* and checks the two agree, then checks
the operation's rules against the envelope's causal past only (a reaction's target,
an id not used before, a key bundle naming known epochs...). Every verdict depends only
on the envelope and its causal past, so every replica reaches the same one; an
operation that fails is ``invalid`` (its reason is returned), never shown.

Reads at given heads are pure functions of those heads (change hashes commit to their
whole history), so they go through the replica's memo (see :mod:`p2pchat.channel.memo`).

What the fold indexes that changes a message's view is reported in the call's
:class:`~p2pchat.channel.records.Outcome` (``changed``); key material goes to
:class:`~p2pchat.channel.group.GroupKeys`, which recomputes its view on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

from p2pchat.channel import moderation as mod
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.doc import SharedDocument
from p2pchat.channel.envelope import Envelope, actor_id
from p2pchat.channel.group import (
    MAX_REQUEST_EPOCHS,
    EpochInfo,
    GroupKeys,
    JoinInfo,
    RequestInfo,
    ShareInfo,
)
from p2pchat.channel.invite import check_grant, check_proof
from p2pchat.channel.keyring import Keyring
from p2pchat.channel.keys import (
    BundleHeader,
    KeyError_,
    Prekey,
    epoch_id,
    open_prekey,
    read_bundle,
    read_share,
)
from p2pchat.channel.memo import ReceiveMemo
from p2pchat.channel.moderation import ModEvent, ModState
from p2pchat.channel.operation import mod_fields, prekey_key, reaction_key
from p2pchat.channel.records import MessageRecord, Outcome, Status
from p2pchat.channel.ulid import is_ulid, ulid_ms

#: Longest message text, in characters.
MAX_TEXT_LENGTH = 16_000
MAX_EMOJI_LENGTH = 32


class Fold:
    def __init__(self, channel_id: bytes, dag: Dag, clocks: CausalClocks, group: GroupKeys,
                 keyring: Keyring, memo: ReceiveMemo, out: Outcome) -> None:
        self.channel_id = channel_id
        self._dag = dag
        self._clocks = clocks
        self._group = group
        self._keyring = keyring
        self.memo = memo
        self._out = out
        self.doc = SharedDocument()
        self.name = ""
        self.founder = ""
        self.created = 0
        #: "history" (joiners get past epochs) or "ephemeral" (old secrets are deleted)
        self.policy = "history"
        #: in a direct-message channel, the other member's DID (named by the genesis)
        self.dm_peer = ""
        #: published prekeys by member: prekey id -> Prekey (valid when published)
        self.prekeys: dict[str, dict[bytes, Prekey]] = {}
        #: every post, by (ulid, author, device); two only share a ulid if concurrent
        self.posts: dict[tuple[str, str, bytes], MessageRecord] = {}
        #: one post per ulid, for lookups (reply and reaction targets); views show every
        #: post, so a concurrent claim on someone's ulid cannot hide their message
        self.messages: dict[str, MessageRecord] = {}
        #: every claim of an id that was claimed more than once (concurrently)
        self._collided: dict[str, list[MessageRecord]] = {}
        #: every post in display order (hidden ones too), built on demand by views and
        #: dropped when a post is added
        self.order: list[MessageRecord] | None = None
        #: (target, emoji, author, device) -> [(seq, on)] in the device's seq order
        self.reactions: dict[tuple[str, str, str, bytes], list[tuple[int, bool]]] = {}
        #: well-formed modlog entries (authority is decided by the fold, over all of them)
        self.mod_events: list[ModEvent] = []
        self._mod_state: ModState | None = None
        #: a moderation entry was folded while envelopes were refused: they may apply now
        self.recheck_refused = False

    def moderation(self) -> ModState:
        """The moderation fold over every modlog entry applied here (cached)."""
        if self._mod_state is None:
            self._mod_state = mod.fold(self.founder, self.mod_events, self._clocks.in_past)
        return self._mod_state

    def prekey_of(self, did: str, now_ms: int) -> Prekey | None:
        """The member's published prekey that lives longest, if any is still valid."""
        live = [p for p in self.prekeys.get(did, {}).values() if p.expires_ms > now_ms]
        return max(live, key=lambda p: (p.expires_ms, p.prekey_id), default=None)

    def device_forked(self, device: tuple[str, bytes]) -> None:
        """``device`` was marked forked: its posts' views change."""
        self._out.changed += [m.id for m in self.posts.values()
                              if (m.author, m.device) == device]

    # --- posts by id ------------------------------------------------------------------

    def claims(self, msg_id: str) -> list[MessageRecord]:
        """Every post with this id (one, unless someone reused the id concurrently)."""
        collided = self._collided.get(msg_id)
        if collided is not None:
            return collided
        first = self.messages.get(msg_id)
        return [first] if first is not None else []

    def add_claim(self, record: MessageRecord) -> None:
        shown = self.messages.get(record.id)
        if shown is not None:
            self._collided.setdefault(record.id, [shown]).append(record)
        if shown is None or record.env < shown.env:
            self.messages[record.id] = record

    # --- the fold -----------------------------------------------------------------------

    def fold(self, env: Envelope, op: dict[str, Any], change_hash: bytes, eff: int,
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
        clear_epoch = self._keyring.clear_epoch
        if self._keyring.e2ee and env.epoch == clear_epoch \
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
            self._group.changed()
            return self._fold_prekey(env, op, heads)
        if kind in ("bundle", "share", "join", "keyreq"):
            if env.epoch != clear_epoch:
                return f"{kind} outside the clear epoch"
            why = getattr(self, f"_fold_{kind}")(env, op, heads)
            self._group.changed()
            return str(why)
        if kind == "react":
            target, emoji, on = op.get("target"), op.get("emoji"), op.get("on")
            if not isinstance(target, str) or type(emoji) is not str \
                    or not 0 < len(emoji) <= MAX_EMOJI_LENGTH or type(on) is not bool:
                return "malformed reaction"
            if not any(r.id == target and self._dag.in_causal_past(r.env, env.deps)
                       for r in self.claims(target)):
                return "reaction to a message outside its causal past"
            key = reaction_key(target, emoji, actor_id(env.author, env.device))
            if self._read_scalar("reactions", key, heads) is not on:
                return "document does not match the reaction"
            self.reactions.setdefault((target, emoji, env.author, env.device), []).append(
                (env.seq, on))
            self._out.changed.append(target)
            return ""
        return f"unknown operation {kind[:32]!r}"

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
        if any(self._dag.in_causal_past(r.env, env.deps) for r in self.claims(msg_id)):
            return "message id already used"
        return MessageRecord(msg_id, env.author, env.device, text, reply_to, ulid_ms(msg_id),
                             env.id, env.seq, (eff, depth, msg_id))

    def _add_post(self, record: MessageRecord) -> None:
        self.posts[(record.id, record.author, record.device)] = record
        self.order = None
        self.add_claim(record)  # a concurrent claim on the same id: both posts are shown
        self._out.changed.append(record.id)

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
        if self._read_map("keys", prekey_key(prekey.prekey_id), heads) != {"record": record}:
            return "document does not match the prekey"
        self.prekeys.setdefault(env.author, {})[prekey.prekey_id] = prekey
        return ""

    def _read_map(self, top: str, key: str, heads: list[bytes]) -> dict[str, Any] | None:
        """``self.doc.read_map``, through the memo: the heads are change hashes, so every
        replica holding them reads the same entry. The caller must not change the dict
        it gets."""
        return self._read(self.doc.read_map, top, key, heads)  # type: ignore[no-any-return]

    def _read_scalar(self, top: str, key: str, heads: list[bytes]) -> Any:
        """``self.doc.read_scalar``, through the memo as :meth:`_read_map` is."""
        return self._read(self.doc.read_scalar, top, key, heads)

    def _read(self, read: Callable[[str, str, list[bytes]], Any], top: str, key: str,
              heads: list[bytes]) -> Any:
        return self.memo.read((read.__name__, top, key, tuple(heads)),
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
            header = self.memo.header(kind, raw, lambda: read(raw))
        except KeyError_ as exc:
            return f"invalid {kind}: {exc}"
        if header.channel != self.channel_id:
            return f"{kind} of another channel"
        if header.distributor != env.author:
            return f"{kind} signed by someone other than the envelope's author"
        named = [self._group.epochs.get(e) for e in header.parents]
        if None in named or not self._dag.all_in_causal_past(
                {i.env for i in named if i is not None}, env.deps):
            return f"{kind} names an epoch outside its causal past"
        return header

    def _fold_bundle(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        header = self._key_material(env, op, "bundle", read_bundle)
        if isinstance(header, str):
            return header
        group = self._group
        if header.epoch in group.epochs:
            return "epoch already distributed"
        if not self._doc_says(f"epoch:{header.epoch.hex()}", env.author, heads):
            return "document does not match the bundle"
        group.epochs[header.epoch] = EpochInfo(
            header.epoch, env.id, env.author, header.parents, header.recipients,
            header.created_ms, header.commitment)
        group.commitments[header.epoch] = header.commitment
        return ""

    def _fold_share(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        header = self._key_material(env, op, "share", read_share)
        if isinstance(header, str):
            return header
        assert isinstance(op["share"], bytes)
        if not self._doc_says(f"share:{epoch_id(op['share']).hex()}", env.author, heads):
            return "document does not match the share"
        self._group.shares.append(ShareInfo(env.id, env.author, header.parents,
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
        self._group.joins.setdefault(env.author, []).append(
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
        self._group.requests.append(RequestInfo(env.id, env.author, tuple(epochs)))
        return ""

    def _add_prekey(self, env: Envelope, record: bytes, ts: int) -> str:
        try:
            prekey = open_prekey(record, ts)
        except KeyError_ as exc:
            return f"invalid prekey: {exc}"
        if prekey.did != env.author:
            return "prekey of another member"
        self.prekeys.setdefault(env.author, {})[prekey.prekey_id] = prekey
        self._group.changed()
        return ""

    def _fold_mod(self, env: Envelope, op: dict[str, Any], heads: list[bytes]) -> str:
        entry_id, action = op.get("id"), op.get("action")
        if not is_ulid(entry_id) or type(action) is not str:
            return "malformed moderation entry"
        assert isinstance(entry_id, str)
        if ulid_ms(entry_id) != op["ts"]:
            return "entry id time does not match the operation's time"
        fields = mod_fields(action, op.get("target", ""), op.get("value", ""),
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
        self._clocks.watch(env.author, fields.get("target", ""))
        self._mod_state = None
        self._group.changed()
        self.recheck_refused = any(m.status is Status.REFUSED
                                   for m in self._dag.envs.values())
        # visibility may change for the target's posts (or everyone's, for a mode)
        self._out.changed += [r.id for r in self.posts.values()
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
        self._out.changed.append(msg_id)
        return ""
