"""Snapshots of a replica: everything but the envelope bytes and the pending buffer.

A snapshot is one msgpack map (version :data:`SNAPSHOT_VERSION`): both Automerge
documents, the device written as, the DAG's metadata in log order, the fold's index
(posts, reactions, equivocators, moderation entries, prekeys, channel metadata) and the
group keys' folded material. :func:`load` rebuilds a fresh replica's parts from it plus
the stored bytes of every envelope it covers; it raises ``ValueError`` when the
snapshot cannot be this replica's (another device, an envelope the store lacks).
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2pchat.channel.authoring import Device, Writer
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.doc import AuthoringDocument, SharedDocument
from p2pchat.channel.fold import Fold
from p2pchat.channel.group import EpochInfo, GroupKeys, JoinInfo, RequestInfo, ShareInfo
from p2pchat.channel.keys import Prekey
from p2pchat.channel.moderation import ModEvent
from p2pchat.channel.records import EnvMeta, MessageRecord, Status

SNAPSHOT_VERSION = 7


def dump(dag: Dag, fold: Fold, device: Device, group: GroupKeys) -> bytes:
    envs = [[i, m.author, m.device, m.seq, list(m.deps), m.change_hash, m.status.value,
             m.eff, m.depth, m.why, m.epoch] for i in dag.log for m in (dag.envs[i],)]
    g = group
    posts = [[r.id, r.author, r.device, r.text, r.reply_to, r.ts, r.env, r.seq,
              list(r.key), [list(o) for o in r.ops]] for r in fold.posts.values()]
    return msgpack.packb({  # type: ignore[no-any-return]
        "v": SNAPSHOT_VERSION, "doc": fold.doc.save(), "authoring": device.authoring.save(),
        "device": device.identity.device_salt,
        "name": fold.name, "founder": fold.founder, "created": fold.created,
        "genesis": [dag.genesis_id, dag.genesis_hash], "envs": envs,
        "posts": posts,
        "reactions": [[t, e, a, d, [list(x) for x in states]]
                      for (t, e, a, d), states in fold.reactions.items()],
        "equivocators": [[a, d, s] for (a, d), s in dag.equivocators.items()],
        "mod": [[e.env, e.ulid, e.author, e.action, e.target, e.value, e.on, e.reason, e.ts,
                 e.device, e.seq] for e in fold.mod_events],
        "prekeys": [[p.did, p.prekey_id, p.public, p.expires_ms]
                    for keys in fold.prekeys.values() for p in keys.values()],
        "policy": fold.policy, "dm": fold.dm_peer,
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
        "unreadable": sorted(dag.unreadable),
    }, use_bin_type=True)


def load(data: bytes, raw: dict[bytes, bytes], dag: Dag, clocks: CausalClocks, fold: Fold,
         writer: Writer, group: GroupKeys) -> None:
    """Fill a fresh replica's parts from :func:`dump` output and the envelopes' bytes."""
    snap: dict[str, Any] = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if snap.get("v") != SNAPSHOT_VERSION:
        raise ValueError("unknown snapshot version")
    fold.doc = SharedDocument.load(snap["doc"])
    device = writer.device
    salt = snap.get("device", device.identity.device_salt)  # the device it wrote as
    if type(salt) is not bytes or not writer.owns_device(salt):
        raise ValueError("snapshot names a device that is not this node's")
    if salt != device.identity.device_salt:
        device.switch(salt)
    device.authoring = AuthoringDocument.load(device.actor, snap["authoring"])
    fold.name, fold.founder, fold.created = snap["name"], snap["founder"], snap["created"]
    dag.genesis_id, dag.genesis_hash = snap["genesis"]
    fold.doc.genesis = dag.genesis_hash
    for env_id, author, dev, seq, deps, change_hash, status, eff, depth, why, ep \
            in snap["envs"]:
        if env_id not in raw:
            raise ValueError("snapshot covers an envelope the store does not have")
        meta = EnvMeta(author, dev, seq, tuple(deps), change_hash, Status(status),
                       len(dag.log), eff, depth, why, ep)
        dag.envs[env_id] = meta
        if meta.status is Status.SEALED:
            dag.sealed.add(env_id)
        dag.raw[env_id] = raw[env_id]
        dag.log.append(env_id)
        dag.slots.setdefault((author, dev, seq), env_id)
        dag.heads.difference_update(meta.deps)
        dag.heads.add(env_id)
    for (author, dev, _), _id in sorted(dag.slots.items()):
        device_key = (author, dev)
        seq = dag.vector.get(device_key, 0)
        while (author, dev, seq + 1) in dag.slots:
            seq += 1
        dag.vector[device_key] = seq
    for mid, author, dev, text, reply_to, ts, env, seq, key, ops in snap["posts"]:
        record = MessageRecord(mid, author, dev, text, reply_to, ts, env, seq,
                               (key[0], key[1], key[2]),
                               [(o[0], o[1], o[2], o[3]) for o in ops])
        fold.posts[(mid, author, dev)] = record
        fold.add_claim(record)
    fold.reactions = {(t, e, a, d): [(x[0], x[1]) for x in states]
                      for t, e, a, d, states in snap["reactions"]}
    dag.equivocators = {(a, d): s for a, d, s in snap["equivocators"]}
    fold.mod_events = [ModEvent(*row) for row in snap["mod"]]
    for did, prekey_id, public, expires in snap["prekeys"]:
        fold.prekeys.setdefault(did, {})[prekey_id] = Prekey(did, prekey_id, public, expires)
    for e in fold.mod_events:
        clocks.watch(e.author, e.target)
    g = group
    fold.policy, fold.dm_peer = snap["policy"], snap["dm"]
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
    dag.unreadable = set(snap["unreadable"])
