"""The simulator's node bookkeeping (:mod:`p2pchat.testing.sim`): :class:`SimNode` and its disk.

Owns what the network keeps per node: its identity, address, clock skew, current
core and driver, incarnation and liveness (:class:`SimNode`), and the perfect
in-memory "disk" of what it persisted (``_Disk``: channels, envelopes, peers,
epoch keys, cursors, prekeys) with the two ways a restart reads it back
(:func:`stored_channels`) or a crash loses from it (:func:`lose_own`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

from p2pchat.channel.envelope import channel_topic, decode_envelope
from p2pchat.core import NodeCore
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    Address,
    Effect,
    Event,
    ForgetEpochKey,
    ForgetPeer,
    PersistChannel,
    PersistCursor,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    SavePeer,
    StoredChannel,
)
from p2pchat.errors import RemoteProtocolError
from p2pchat.identity import Identity
from p2pchat.testing.blindstore import BlindStore

#: The effects that write a node's disk (:meth:`_Disk.keep`).
Persist = (PersistChannel | PersistEpochKey | ForgetEpochKey | PersistEnvelopes | PersistCursor
           | PersistPrekey | SavePeer | ForgetPeer)


@dataclass
class _Disk:
    """What a node persisted: enough to restart it as the runtime would."""

    channels: dict[bytes, tuple[str, bytes]] = field(default_factory=dict)
    envelopes: dict[bytes, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    envelope_ids: dict[bytes, set[bytes]] = field(default_factory=dict)
    peers: dict[Address, str] = field(default_factory=dict)
    secrets: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    #: bootstrap server cursors: (server DID, server topic) -> seq
    cursors: dict[tuple[str, bytes], int] = field(default_factory=dict)
    #: prekeys: id -> (record, private key, expiry ms)
    prekeys: dict[bytes, tuple[bytes, bytes, int]] = field(default_factory=dict)

    def keep(self, effect: Persist) -> None:
        """Carry out one write of the node's store."""
        match effect:
            case PersistChannel():
                self.channels[effect.channel] = (effect.name, effect.key)
            case PersistEpochKey():
                self.secrets.setdefault(effect.channel, {})[effect.epoch] = effect.secret
            case ForgetEpochKey():
                self.secrets.get(effect.channel, {}).pop(effect.epoch, None)
            case PersistEnvelopes():
                ids = self.envelope_ids.setdefault(effect.channel, set())
                log = self.envelopes.setdefault(effect.channel, [])
                for env_id, raw in effect.items:
                    if env_id not in ids:
                        ids.add(env_id)
                        log.append((env_id, raw))
            case PersistCursor():
                self.cursors[(effect.server_did, effect.topic)] = effect.cursor
            case PersistPrekey():
                self.prekeys[effect.prekey_id] = (effect.record, effect.private,
                                                  effect.expires_ms)
            case SavePeer():
                self.peers[effect.address] = effect.did
            case ForgetPeer():
                self.peers.pop(effect.address, None)
            case _:
                assert_never(effect)


@dataclass
class SimNode:
    """One simulated node: its identity, address, current core and persisted state."""

    name: str
    identity: Identity
    address: Address
    skew_ms: int
    core: NodeCore
    incarnation: int = 0
    #: its last crash lost stored writes: the next start has its chain heads unsure
    lost_writes: bool = False
    alive: bool = True
    deadline: float | None = None
    #: the shared driver loop around ``core`` (made anew with each core)
    driver: Driver[Event, Effect] | None = None
    next_link_id: int = 1
    disk: _Disk = field(default_factory=_Disk)
    #: the bootstrap servers (node names) this node uses
    servers: tuple[str, ...] = ()
    #: a bootstrap server's blind store (None: an ordinary node)
    store: BlindStore | None = None

    @property
    def did(self) -> str:
        return self.identity.did

    @property
    def is_server(self) -> bool:
        return self.store is not None


def stored_channels(node: SimNode) -> tuple[StoredChannel, ...]:
    """The channels ``node`` persisted, as the runtime loads them at start."""
    disk = node.disk
    return tuple(
        StoredChannel(channel=cid, name=cname, key=key,
                      envelopes=tuple(raw for _, raw in disk.envelopes.get(cid, ())),
                      secrets=tuple(sorted(disk.secrets.get(cid, {}).items())))
        for cid, (cname, key) in sorted(disk.channels.items()))


def lose_own(node: SimNode, count: int) -> dict[bytes, int]:
    """Drop the newest ``count`` envelopes ``node`` authored from each channel's log
    on its disk (the genesis stays); returns how many each channel lost (if any)."""
    me, device = node.identity.public_key.raw, node.identity.device_salt
    lost: dict[bytes, int] = {}
    for cid in sorted(node.disk.envelopes):
        log = node.disk.envelopes[cid]
        topic = channel_topic(cid)
        own = [i for i, (_, raw) in enumerate(log) if i > 0
               and _authored_by(raw, topic, me, device)]
        drop = set(own[-count:])
        if not drop:
            continue
        for i in sorted(drop):
            node.disk.envelope_ids[cid].discard(log[i][0])
        node.disk.envelopes[cid] = [e for i, e in enumerate(log) if i not in drop]
        lost[cid] = len(drop)
    return lost


def _authored_by(raw: bytes, topic: bytes, author_key: bytes, device: bytes) -> bool:
    """Whether the stored envelope ``raw`` was written by that author's device."""
    try:
        env = decode_envelope(raw, topic)
    except RemoteProtocolError:
        return False
    return env.author_key == author_key and env.device == device
