"""The simulator's hostile members (:mod:`p2pchat.testing.sim`): forged and malformed writes.

Owns what :meth:`~p2pchat.testing.sim.SimNetwork.hostile` and
:meth:`~p2pchat.testing.sim.SimNetwork.inject` put on a node's links: forged,
backdated, equivocating (written by a forked copy of the node restored from its
store), garbage and bad-change envelopes, in ``envelopes`` frames as if the
node's core had sent them (:class:`_Hostile`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from p2pchat.channel.ulid import make_ulid
from p2pchat.core import NodeCore
from p2pchat.core.channels import topic_for
from p2pchat.core.events import ChannelAnswer, ChannelsLoaded, PersistEnvelopes, SendRequested
from p2pchat.core.link import Link
from p2pchat.testing.sim_links import _Links
from p2pchat.testing.sim_model import derive_rng
from p2pchat.testing.sim_node import SimNode, stored_channels
from p2pchat.testing.sim_requests import SimRequests
from p2pchat.wire import Envelopes, encode_frame

#: What :meth:`SimNetwork.hostile` can do.
HOSTILE_KINDS = ("forged", "backdated", "equivocate", "garbage", "bad_change")
#: How far in the past a ``backdated`` post is stamped by default (30 days).
BACKDATE_MS = 30 * 24 * 3600 * 1000
#: Size of a ``garbage`` envelope, bytes.
GARBAGE_BYTES = 120


class _Hostile:
    """A network's hostile steps (see the module docstring)."""

    def __init__(self, net: SimRequests, links: _Links) -> None:
        self.net = net
        self.links = links

    def hostile(self, name: str, channel: bytes, kind: str, *, text: str = "hostile",
                to: Sequence[str] | None = None, age_ms: int = BACKDATE_MS) -> str:
        """``name`` misbehaves in ``channel`` (:meth:`SimNetwork.hostile`)."""
        if kind not in HOSTILE_KINDS:
            raise ValueError(f"unknown hostile kind {kind!r} (known: {', '.join(HOSTILE_KINDS)})")
        node = self.net.nodes[name]
        if not node.alive:
            raise self.net.fail(f"{name} is down")
        self.net._note("hostile", name, kind)
        if kind == "backdated":
            self.net.stats.hostile += 1
            return self.net.post(name, channel, text, wall_ms=self.net.wall_ms(name) - age_ms)
        rng = derive_rng(self.net.seed, "hostile", name, self.net.stats.hostile,
                         len(self.net.trace))
        msg_id = ""
        if kind == "garbage":
            raws = [rng.randbytes(GARBAGE_BYTES)]
        elif kind == "bad_change":
            raws = [self._bad_change(node, channel, text, rng)]
        else:
            raws, msg_id = self._fork_post(node, channel, text, rng)
            if kind == "forged":  # only the post, broken: the copy's other writes would fork
                raws = [raws[-1][:-1] + bytes([raws[-1][-1] ^ 0x01])]
            else:
                self.net.post(name, channel, f"{text} (the other branch)")
        self.inject(name, channel, raws, to=to)
        return msg_id

    def inject(self, name: str, channel: bytes, raws: Sequence[bytes],
               to: Sequence[str] | None = None) -> int:
        """Put ``raws`` on the wire from ``name`` (:meth:`SimNetwork.inject`)."""
        sent = 0
        for link_id, link in self._open_links(name):
            peer = self.net._name_by_did(link.peer_did or "")
            if peer is None or (to is not None and peer not in to):
                continue
            end = (name, link_id)
            conn = self.links.conns.get(end)
            if conn is None or end not in conn.open_ends:
                continue
            frame = Envelopes(topic=topic_for(channel, link.session_id), items=tuple(raws))
            self.net.stats.hostile += 1
            self.net._count("hostile", name, peer)
            self.links.transmit(end, encode_frame(frame))
            sent += 1
        return sent

    def _open_links(self, name: str) -> list[tuple[int, Link]]:
        # a hostile peer needs the links' session ids (the per-link channel topics)
        links = self.net.nodes[name].core.links.links()
        return [(i, link) for i, link in sorted(links.items()) if link.is_open]

    def _clone(self, node: SimNode, rng: random.Random) -> NodeCore:
        """A second core of ``node``'s device, restored from its store (a forked copy)."""
        clone = NodeCore(node.identity, self.net.config, rng, agent="sim-clone",
                         bootstrap=tuple(self.net.nodes[s].address for s in node.servers))
        if self.net.on_new_core is not None:
            self.net.on_new_core(node.name, clone)
        stored = stored_channels(node)
        if stored:
            clone.handle(ChannelsLoaded(stored), self.net.clock.now)
        return clone

    def _fork_post(self, node: SimNode, channel: bytes, text: str, rng: random.Random
                   ) -> tuple[list[bytes], str]:
        clone = self._clone(node, rng)
        rid = self.net._request_id()
        effects = clone.handle(SendRequested(rid, channel, text, self.net.wall_ms(node.name)),
                               self.net.clock.now)
        raws = [raw for e in effects if isinstance(e, PersistEnvelopes) and e.channel == channel
                for _, raw in e.items]
        answer = next((e for e in effects if isinstance(e, ChannelAnswer)
                       and e.request_id == rid), None)
        if not raws or answer is None or answer.result is None:
            why = answer.error if answer is not None else "no answer"
            raise self.net.fail(f"{node.name}: a forked copy cannot write: {why}")
        return raws, str(answer.result["id"])

    def _bad_change(self, node: SimNode, channel: bytes, text: str, rng: random.Random
                    ) -> bytes:
        state = self._clone(node, rng).hub.get(channel)
        wall = self.net.wall_ms(node.name)
        op = {"op": "post", "id": make_ulid(wall, rng.randbytes(10)), "text": text,
              "reply_to": "", "ts": wall}
        # ChannelState has no public way to seal an arbitrary change (a hostile peer's
        # whole point); the copy is thrown away.
        env = state.writer.seal(op, rng.randbytes(48), rng.randbytes, now_ms=wall)
        return env.encode()
