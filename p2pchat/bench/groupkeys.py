"""Group-key figures (issue 6): building and opening a 128-member bundle, and what the
signed, encrypted envelope adds to the bare Automerge change of a typical post."""

from __future__ import annotations

import os
import time
from typing import Any

import msgpack

from p2pchat.bench.stats import summarize
from p2pchat.channel.keys import make_prekey, open_bundle, open_prekey, seal_bundle
from p2pchat.channel.state import ChannelState
from p2pchat.crypto import generate_secret_key
from p2pchat.identity import Identity

#: A typical chat line for the overhead figure (60 characters).
TYPICAL_TEXT = "hello world, this is a fairly ordinary chat message, ok? :-)"


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
    # overhead of a post's envelope over its bare change, in a channel with group keys
    author = _identity("author")
    state, _ = ChannelState.create(author, "bench", None, now, os.urandom)
    overheads = []
    for i in range(samples):
        env, _ = state.post(TYPICAL_TEXT, now + i, os.urandom)
        key = state._key_for(env.epoch, author.did)
        assert key is not None
        change = msgpack.unpackb(env.decrypt(key), raw=False)["change"]
        overheads.append(len(env.encode()) - len(change))
    return {
        "members": members,
        "bundle_build_ms_p50": round(summarize(builds).p50 * 1000, 3),
        "bundle_open_ms_p50": round(summarize(opens).p50 * 1000, 3),
        "bundle_bytes": size,
        "post_text_chars": len(TYPICAL_TEXT),
        "envelope_overhead_bytes": max(overheads),
    }
