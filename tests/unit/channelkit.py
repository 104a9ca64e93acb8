"""Helpers for channel-core tests: seeded identities, replicas, hand-made envelopes, snapshots.

Everything is real (Ed25519, XChaCha20-Poly1305, automerge); randomness comes from a seeded
``random.Random`` and clocks are integer milliseconds, so every test is reproducible.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Any

import msgpack
from automerge.core import ROOT, ObjType, ScalarType

from p2pchat.channel.doc import AuthoringDocument
from p2pchat.channel.envelope import Envelope, actor_id, channel_topic, seal_envelope
from p2pchat.channel.state import (
    ChannelState,
    ReceiveResult,
    decode_operation,
    encode_operation,
    epoch_id_for,
)
from p2pchat.channel.ulid import make_ulid
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity

T0 = 1_700_000_000_000  # a fixed "now" in milliseconds

#: channel ids by topic (an envelope names its topic, not its channel), for open_op
_CHANNELS: dict[bytes, bytes] = {}
#: envelopes sealed by hand, by (author, device, seq): their successors' implicit dep
_SLOTS: dict[tuple[str, bytes, int], bytes] = {}


def know_channel(channel: bytes) -> bytes:
    _CHANNELS[channel_topic(channel)] = channel
    return channel


class Kit:
    """One seeded world: a channel key, identities and replicas built from one RNG."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.key = self.rng.randbytes(32)
        self.epoch = epoch_id_for(self.key)

    def rb(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def identity(self, name: str) -> Identity:
        return Identity(secret_key_from_seed(self.rb(32)), self.rb(16), name)

    def keys(self, epoch: bytes) -> bytes | None:
        return self.key if epoch == self.epoch else None

    def found(self, identity: Identity, name: str = "general", now: int = T0
              ) -> tuple[ChannelState, Envelope]:
        state, genesis = ChannelState.create(identity, name, self.key, now, self.rb)
        know_channel(state.channel_id)
        return state, genesis

    def replica(self, channel_id: bytes, identity: Identity, genesis: Envelope | None = None,
                now: int = T0) -> ChannelState:
        state = ChannelState(channel_id, identity, self.keys)
        know_channel(channel_id)
        state.current_epoch = self.epoch
        if genesis is not None:
            assert state.receive(genesis, now).applied == [genesis]
        return state

    def seal(self, identity: Identity, channel: bytes, seq: int, deps: Iterable[bytes],
             op: dict[str, Any], change: bytes, *, key: bytes | None = None,
             epoch: bytes | None = None, prev: bytes | None = None) -> Envelope:
        """An envelope built by hand: any op, any change, any deps (all of them: the
        device's previous envelope, implicit on the wire, is ``prev`` or found among
        ``deps``)."""
        return seal_raw(identity, channel, seq, tuple(deps), encode_operation(op, change),
                        self.rb(24), key=key or self.key, epoch=epoch or self.epoch, prev=prev)


def seal_raw(identity: Identity, channel: bytes, seq: int, deps: tuple[bytes, ...],
             plaintext: bytes, nonce: bytes, *, key: bytes, epoch: bytes,
             prev: bytes | None = None) -> Envelope:
    know_channel(channel)
    if prev is None and seq > 1:
        known = [d for d in deps if _SLOTS.get((identity.did, identity.device_salt, seq - 1))
                 == d]
        if not known and len(deps) != 1:
            raise ValueError("say which dep is the device's previous envelope (prev=)")
        prev = known[0] if known else deps[0]
    env = seal_envelope(identity, channel=channel, seq=seq, deps=deps, epoch=epoch, key=key,
                        nonce=nonce, plaintext=plaintext, prev=prev or b"")
    _SLOTS[(identity.did, identity.device_salt, seq)] = env.id
    return env


def open_op(env: Envelope, key: bytes) -> dict[str, Any]:
    """The decrypted operation of ``env`` (with its raw change under ``"change"``)."""
    op, change = decode_operation(env.decrypt(key, _CHANNELS[env.topic]))
    return {**op, "change": change}


def change_of(env: Envelope, key: bytes) -> bytes:
    change: bytes = open_op(env, key)["change"]
    return change


def authoring_for(identity: Identity, changes: Iterable[bytes]) -> AuthoringDocument:
    """A private authoring document of ``identity``'s device holding ``changes`` (in order)."""
    doc = AuthoringDocument(actor_id(identity.did, identity.device_salt))
    for raw in changes:
        doc.apply(raw)
    return doc


def replace_top(doc: AuthoringDocument, top: str, key: str, fields: dict[str, Any]) -> bytes:
    """Overwrite ``top`` (a top-level map) with a fresh map holding ``{key: fields}``."""
    before = doc.doc.get_heads()
    with doc.doc.transaction() as tx:
        parent = tx.put_object(ROOT, top, ObjType.Map)
        obj = tx.put_object(parent, key, ObjType.Map)
        for k, v in fields.items():
            if isinstance(v, bool):
                tx.put(obj, k, ScalarType.Boolean, v)
            else:
                tx.put(obj, k, ScalarType.Str, v)
    changes = doc.doc.get_changes(before)
    assert 1 == len(changes)
    return bytes(changes[0].raw_bytes)


def deliver(state: ChannelState, envs: Iterable[Envelope], now: int = T0) -> list[ReceiveResult]:
    return [state.receive(env, now) for env in envs]


def sync_into(dst: ChannelState, src: ChannelState, now: int = T0) -> list[bytes]:
    """Send ``dst`` what ``src.missing_for(dst.vector)`` says it lacks; returns those ids."""
    ids = src.missing_for(dst.vector)
    for env_id in ids:
        dst.receive_bytes(src.raw[env_id], now)
    return ids


def history_bytes(state: ChannelState, now_ms: int | None = None) -> bytes:
    views = [dataclasses.asdict(v) for v in state.history(now_ms=now_ms)]
    return msgpack.packb(views, use_bin_type=True)  # type: ignore[no-any-return]


def history_texts(state: ChannelState) -> list[tuple[str, str]]:
    return [(v.author, v.text) for v in state.history()]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    history: bytes
    vector: dict[tuple[str, bytes], int]
    heads: frozenset[bytes]
    doc: bytes
    envs: frozenset[bytes]
    pending: frozenset[bytes]
    log: tuple[bytes, ...]
    messages: tuple[tuple[object, ...], ...]
    reactions: tuple[object, ...]
    authoring: bytes
    bookkeeping: tuple[object, ...]


def snapshot(state: ChannelState) -> Snapshot:
    """Everything observable about a replica, to check that a rejection changed nothing."""
    return Snapshot(
        history_bytes(state), dict(state.vector), frozenset(state.heads), state.doc.save(),
        frozenset(state.envs), frozenset(state.pending), tuple(state.log),
        tuple(sorted((m.id, *state.visible(m)) for m in state.messages.values())),
        tuple(sorted(state.reactions.items())),
        state.authoring.save(),
        (dict(state.slots), dict(state.equivocators), dict(state.raw),
         state.genesis_id, state.genesis_hash, state.name, state.founder, state.created),
    )


class Forger:
    """A device that hand-crafts its own envelopes: any op, any change, any deps.

    Its changes are made on a private authoring document seeded with ``base`` changes
    (normally just genesis), so they chain correctly unless a test says otherwise.
    """

    def __init__(self, kit: Kit, identity: Identity, channel: bytes, base: Iterable[bytes]) -> None:
        self.kit = kit
        self.identity = identity
        self.channel = channel
        self.doc = authoring_for(identity, base)
        self.seq = 0

    def envelope(self, op: dict[str, Any], change: bytes, deps: Iterable[bytes], *,
                 seq: int | None = None) -> Envelope:
        if seq is None:
            self.seq += 1
            seq = self.seq
        return self.kit.seal(self.identity, self.channel, seq, deps, op, change)

    def post(self, deps: Iterable[bytes], text: str, ts: int, *, msg_id: str | None = None,
             declared: str | None = None) -> tuple[Envelope, str]:
        msg_id = msg_id or make_ulid(ts, self.kit.rb(10))
        change = self.doc.put_entry("messages", msg_id, {
            "author": self.identity.did, "text": text, "reply_to": "", "deleted": False})
        op = {"op": "post", "id": msg_id, "text": text if declared is None else declared,
              "reply_to": "", "ts": ts}
        return self.envelope(op, change, deps), msg_id

    def edit_foreign(self, deps: Iterable[bytes], msg_id: str, text: str, ts: int) -> Envelope:
        """Claim to edit ``msg_id``: the key is created here, as we cannot see its object."""
        change = self.doc.put_entry("messages", msg_id, {"text": text, "edited": ts})
        return self.envelope({"op": "edit", "id": msg_id, "text": text, "ts": ts}, change, deps)

    def delete_foreign(self, deps: Iterable[bytes], msg_id: str, ts: int) -> Envelope:
        change = self.doc.put_entry("messages", msg_id, {"text": "", "deleted": True})
        return self.envelope({"op": "delete", "id": msg_id, "ts": ts}, change, deps)

    def react(self, deps: Iterable[bytes], target: str, emoji: str, on: bool, ts: int) -> Envelope:
        actor = actor_id(self.identity.did, self.identity.device_salt)
        change = self.doc.put_scalar("reactions", f"{target}:{emoji}:{actor.hex()}", on)
        return self.envelope({"op": "react", "target": target, "emoji": emoji, "on": on,
                              "ts": ts}, change, deps)

    def unknown(self, deps: Iterable[bytes], name: str, ts: int) -> Envelope:
        change = self.doc.put_scalar("keys", f"junk-{ts}", "x")
        return self.envelope({"op": name, "ts": ts}, change, deps)
