"""Group-key figures (issue 6): building and opening a 128-member bundle, and what the
signed, encrypted envelope adds to the bare Automerge change of a typical post."""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack

from p2pchat.bench.stats import summarize
from p2pchat.channel.envelope import Envelope
from p2pchat.channel.invite import make_grant, make_proof
from p2pchat.channel.keys import make_prekey, open_bundle, open_prekey, seal_bundle
from p2pchat.channel.state import ChannelState
from p2pchat.crypto import generate_secret_key
from p2pchat.identity import Identity

#: A typical chat line for the overhead figure (60 characters).
TYPICAL_TEXT = "hello world, this is a fairly ordinary chat message, ok? :-)"
#: Posts in the overhead figure: more than one routine rotation's worth.
OVERHEAD_POSTS = 150
CONVERSATION_TURNS = 40
INVITE_TTL_MS = 24 * 3600 * 1000


def _identity(name: str) -> Identity:
    return Identity(generate_secret_key(), os.urandom(16), name)


def bench_group_keys(members: int = 128, samples: int = 30) -> dict[str, Any]:
    distributor = _identity("distributor")
    now = int(time.time() * 1000)
    recipients, privates = [], {}
    for i in range(members):
        member = _identity(f"m{i}")
        record, private = make_prekey(member, os.urandom, now)
        prekey = open_prekey(record, now)
        recipients.append(prekey)
        privates[prekey.prekey_id] = (member.did, private)
    channel = os.urandom(32)
    builds, opens, size = [], [], 0
    for _ in range(samples):
        secret = os.urandom(32)
        start = time.perf_counter()
        bundle = seal_bundle(distributor, channel, (os.urandom(32),), secret, recipients,
                             os.urandom, now)
        builds.append(time.perf_counter() - start)
        size = len(bundle)
        did, private = privates[recipients[-1].prekey_id]
        start = time.perf_counter()
        _, opened = open_bundle(bundle, did, {recipients[-1].prekey_id: private}.get)
        opens.append(time.perf_counter() - start)
        assert opened == secret
    # overhead of a post's envelope over its bare change, in a channel with group keys:
    # one author's stream, long enough to cross a routine rotation (ROTATE_EVERY)
    author = _identity("author")
    state, _ = ChannelState.create(author, "bench", None, now, os.urandom)
    overheads = [_overhead(state, state.post(TYPICAL_TEXT, now + i, os.urandom).envelope)
                 for i in range(OVERHEAD_POSTS)]
    talk = _conversation(state, author, now)
    return {
        "members": members,
        "bundle_build_ms_p50": round(summarize(builds).p50 * 1000, 3),
        "bundle_open_ms_p50": round(summarize(opens).p50 * 1000, 3),
        "bundle_bytes": size,
        "post_text_chars": len(TYPICAL_TEXT),
        "envelope_overhead_bytes": max(overheads),
        "envelope_overhead_p50_bytes": summarize([float(o) for o in overheads]).p50,
        "envelope_overhead_posts": len(overheads),
        "conversation_overhead_p50_bytes": summarize([float(o) for o in talk]).p50
        if talk else None,
    }


def _conversation(state: ChannelState, author: Identity, now: int) -> list[int]:
    """Overheads of a conversation: a second member admitted to ``state``'s channel and
    the two taking turns, so every post also names the other's last envelope (one
    explicit dependency, 33 bytes)."""
    other = _identity("other")
    keyring: dict[bytes, bytes] = {}
    peer = ChannelState(state.channel_id, other, private_for=keyring.get)
    assert state.genesis_id is not None
    peer.receive_bytes(state.raw[state.genesis_id], now)
    record, private_key = make_prekey(other, os.urandom, now)
    keyring[open_prekey(record, now).prekey_id] = private_key
    cap = os.urandom(32)
    grant, signature = make_grant(author, state.channel_id, cap, now + INVITE_TTL_MS)
    peer.join(grant, signature, make_proof(cap, state.channel_id, other.did), record, now,
              os.urandom)
    _copy(peer, state, now)
    their_prekey = state.prekey_of(other.did, now)
    assert their_prekey is not None
    state.share([their_prekey], list(state.group.secrets), now, os.urandom)
    _copy(state, peer, now)
    talk: list[int] = []
    for i in range(CONVERSATION_TURNS):
        speaker, listener = (state, peer) if i % 2 else (peer, state)
        if speaker is peer and peer.key_status() != "member":
            break  # not admitted: no conversation figure
        env, _ = speaker.post(TYPICAL_TEXT, now + 1000 + i, os.urandom)
        listener.receive(listener.decode(env.encode()), now + 1000 + i)
        talk.append(_overhead(speaker, env))
    return talk


def _copy(src: ChannelState, dst: ChannelState, now: int) -> None:
    for env_id in src.log:
        if not dst.is_known(env_id):
            dst.receive_bytes(src.raw[env_id], now)


def _overhead(state: ChannelState, env: Envelope) -> int:
    key = state.keyring.key_for(env.epoch, env.author)
    assert key is not None
    change = msgpack.unpackb(env.decrypt(key, state.channel_id), raw=False)[0]
    return len(env.encode()) - len(change)
