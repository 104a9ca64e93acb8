"""The simulator's request API (:mod:`p2pchat.testing.sim`): what a node's user asks.

Owns the user's and runtime's side of a :class:`~p2pchat.testing.sim.SimNetwork`:
handing a request to a core in an event-loop turn of its own
(:meth:`SimRequests.request`, :meth:`SimRequests.end_turn`), numbering requests
and waiting for their answers, and the calls built on that -- connect, create a
channel, join, post (one or a burst), edit/delete/react, rotate a group key,
moderate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2pchat.core.events import (
    ChannelCreateRequested,
    ConnectRequested,
    Effect,
    Event,
    JoinRequested,
    MessageOpRequested,
    ModRequested,
    SendRequested,
)
from p2pchat.testing.sim_loop import SimLoop
from p2pchat.testing.sim_model import derive_rng


class SimRequests(SimLoop):
    """A node's user's requests on top of the kernel (see the module docstring)."""

    def request(self, name: str, event: Event, *, same_turn: bool = False) -> list[Effect]:
        """Hand ``event`` to ``name``'s core now, as its user or runtime would.

        A request comes in an event-loop turn of its own: the node's ticks still due
        at this instant (``deadline == now``: the turn it asked to see end, as its
        write batcher does) run first, unless ``same_turn`` (a burst: see
        :meth:`post_burst`)."""
        node = self.nodes[name]
        if not node.alive:
            raise self.fail(f"{name} is down")
        self._last_activity = self.clock.now
        if not same_turn:
            self.end_turn(name)
        return self._handle(node, event)

    def end_turn(self, name: str) -> list[Effect]:
        """Run ``name``'s timers that are due now (its ticks), as the runtime's event loop
        does on its next iteration: e.g. the write batcher's seal and flush. Returns
        their effects."""
        node = self.nodes[name]
        effects: list[Effect] = []
        while node.alive and node.deadline is not None and node.deadline <= self.clock.now:
            effects += self._fire(node)
        return effects

    def _request_id(self) -> int:
        rid = self._next_request
        self._next_request += 1
        return rid

    def _answer(self, name: str, event: Event, request_id: int) -> dict[str, Any]:
        self.request(name, event)
        if request_id not in self.answers:  # batched: answered when its seal comes
            self.end_turn(name)
        answer = self.answers.get(request_id)
        if answer is None:
            raise self.fail(f"{name} did not answer {type(event).__name__} {request_id}")
        if answer.error is not None or answer.result is None:
            raise self.fail(f"{name}: {type(event).__name__} failed: {answer.error}")
        return answer.result

    def connect(self, a: str, b: str) -> int:
        """``a``'s user asks to connect to ``b`` (``ConnectRequested``); returns the request id.

        Once that succeeds, ``a`` keeps redialling ``b`` whenever the link is lost.
        """
        rid = self._request_id()
        self.request(a, ConnectRequested(rid, self.nodes[b].address, self.nodes[b].did))
        return rid

    def create_channel(self, name: str, channel_name: str) -> bytes:
        rid = self._request_id()
        result = self._answer(name, ChannelCreateRequested(rid, channel_name, self.wall_ms(name)),
                              rid)
        channel = result["channel"]
        assert isinstance(channel, bytes)
        self.founders[channel] = name
        return channel

    def join(self, name: str, channel: bytes, via: str | Sequence[str] | None = None) -> None:
        """``name`` joins ``channel`` with an invite naming ``via`` (default: the founder)."""
        founder = self.nodes[self.founders[channel]]
        hub = founder.core.hub
        vias = [self.founders[channel]] if via is None else [via] if isinstance(via, str) \
            else list(via)
        peers = tuple((self.nodes[v].did, self.nodes[v].address) for v in vias)
        invite = hub.invite_for(channel, self.wall_ms(self.founders[channel]))
        rid = self._request_id()
        self._answer(name, JoinRequested(rid, channel, invite.name, peers, self.wall_ms(name),
                                         invite.cap, invite.grant, invite.grant_signature,
                                         invite.genesis), rid)

    def post(self, name: str, channel: bytes, text: str, *, wall_ms: int | None = None) -> str:
        """``name`` posts ``text`` (stamped ``wall_ms``, default its clock); returns the
        message id."""
        rid = self._request_id()
        wall = self.wall_ms(name) if wall_ms is None else wall_ms
        result = self._answer(name, SendRequested(rid, channel, text, wall), rid)
        msg_id = result["id"]
        assert isinstance(msg_id, str)
        return msg_id

    def post_burst(self, name: str, channel: bytes, texts: Sequence[str]) -> list[str]:
        """``name`` posts ``texts`` in one event-loop turn (a script calling ``send`` in a
        loop, pipelined control requests): its write batcher seals them together (up to
        MAX_POSTS_PER_ENVELOPE per envelope) when the turn ends. Returns the message ids;
        a refused post fails the run with its reason."""
        rids = []
        for i, text in enumerate(texts):
            rids.append(self._request_id())
            self.request(name, SendRequested(rids[-1], channel, text, self.wall_ms(name)),
                         same_turn=i > 0)
        self.end_turn(name)
        ids: list[str] = []
        for rid in rids:
            answer = self.answers.get(rid)
            if answer is None or answer.error is not None or answer.result is None:
                why = "no answer" if answer is None else answer.error
                raise self.fail(f"{name}: SendRequested failed: {why}")
            ids.append(str(answer.result["id"]))
        return ids

    def flush(self, name: str) -> list[Effect]:
        """End ``name``'s turn now: held writes are pushed (one frame per link) once its
        write batcher's cork sees the burst is over, at this instant."""
        return self.end_turn(name)

    def message_op(self, name: str, channel: bytes, op: str, msg_id: str, *, text: str = "",
                   emoji: str = "", on: bool = True) -> None:
        """``name`` edits (``op="edit"``, ``text``) or deletes one of its messages, or reacts
        (``op="react"``, ``emoji``, ``on``) to any message."""
        rid = self._request_id()
        self._answer(name, MessageOpRequested(rid, channel, op, msg_id, self.wall_ms(name),
                                              text, emoji, on), rid)

    def rotate(self, name: str, channel: bytes) -> None:
        """``name`` rotates ``channel``'s group key now, as its hub does after a removal or
        every ``ROTATE_EVERY`` envelopes (there is no user request for it): the bundle is
        stored and pushed like any local write."""
        node = self.nodes[name]
        if not node.alive:
            raise self.fail(f"{name} is down")
        hub = node.core.hub
        state = hub.get(channel)
        before = len(state.log)
        rng = derive_rng(self.seed, "rotate", name, node.incarnation, before)
        try:
            hub._took(state, state.rotate(self.wall_ms(name), rng.randbytes))
        except ValueError as exc:
            raise self.fail(f"{name}: rotate failed: {exc}") from exc
        self._note("rotate", name, channel.hex()[:12])
        effects = hub._after_local(state, before)  # the hub's own path for local writes
        for effect in effects:
            self._carry_out(node, effect)
        self._driver(node).rearm()

    def moderate(self, name: str, channel: bytes, action: str, target: str = "", *,
                 value: str = "", on: bool = True, reason: str = "") -> str:
        """``name`` publishes a moderation action (``target``: a node name); returns its id."""
        rid = self._request_id()
        did = self.nodes[target].did if target else ""
        result = self._answer(name, ModRequested(rid, channel, action, self.wall_ms(name), did,
                                                 value, on, reason), rid)
        entry = result["id"]
        assert isinstance(entry, str)
        return entry
