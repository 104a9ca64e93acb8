"""Channel benchmarks in one process: reconciliation cost and apply cost vs channel size.

Reconcile
---------
Two real :class:`~p2pchat.core.NodeCore` instances joined by an in-memory link
(no QUIC: the figures are the replication protocol's own). The network moves in
*flights*: every byte one core transmitted in flight k is delivered to the other
in flight k+1, both directions at once, so a request/response exchange takes two
flights and the round trips are ``flights / 2``.

1. A creates a channel and B joins it (the invite's key; no dial); a first link
   syncs the genesis envelope and ``shared`` messages posted by A; the link is
   then lost on both sides.
2. Offline, A posts ``diverged`` messages and B posts ``diverged`` messages.
3. A second link opens (the link handshake: Hello/Auth/Ready) and the flights
   run until neither side has anything left to send.

Counted from that second link: every channel frame (``Subscribe``, ``Summary``,
``Envelopes``) in both directions, with its encoded size (length prefix
included), and the flights that carried any. The envelopes "themselves" are
the encoded envelopes each side lacked; the overhead is channel-frame bytes over
those bytes, minus one. The run fails unless both replicas end with the same
history (same ids, same order) and every message.

Apply cost vs channel size
--------------------------
One replica (a ``ChannelState`` of a non-author) grows by receiving real
envelopes from one author (:class:`~p2pchat.bench.pipeline.FastAuthor`, whose
output is what ``ChannelState.post`` produces; it only saves the authoring
side's time). At ``small`` and again at ``big`` messages, a second author's
``samples`` fresh envelopes (authored beforehand, untimed) are applied one by
one, each timed around ``ChannelState.receive_bytes`` (decode, verify, decrypt,
checks, Automerge apply, fold). A second replica built to ``small`` after the
big measurement gives a second small sample set, so drift in machine speed
during the long build shows up instead of skewing the ratio: the budget compares
the big p50 with the p50 of both small sets pooled.
"""

from __future__ import annotations

import gc
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, assert_never

from p2pchat.bench.pipeline import FastAuthor, bench_text, wall_ms
from p2pchat.bench.server import bench_identity
from p2pchat.bench.stats import summarize
from p2pchat.channel.state import ChannelState, epoch_id_for
from p2pchat.core import NodeConfig, NodeCore
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    CloseLink,
    ConnectFinished,
    DataReceived,
    Dial,
    DisconnectFinished,
    Effect,
    Event,
    JoinRequested,
    LinkEstablished,
    LinkLost,
    Notice,
    Persistence,
    PingFinished,
    SendRequested,
    TimerExpired,
    Transmit,
)
from p2pchat.errors import LocalError
from p2pchat.identity import Identity
from p2pchat.wire import Envelopes, FrameDecoder, Subscribe, Summary, encode_frame

CHANNEL_FRAMES = (Subscribe, Summary, Envelopes)
_NOW = 1000.0  # the cores' clock; only the write batcher's ticks (deadline = now) fire


# --- reconcile ---------------------------------------------------------------------------


@dataclass
class _Side:
    name: str
    core: NodeCore
    link_id: int = 0
    outbox: list[bytes] = field(default_factory=list)
    answers: dict[int, ChannelAnswer] = field(default_factory=dict)
    decoder: FrameDecoder = field(default_factory=FrameDecoder)
    requests: int = 0
    driver: Driver[Event, Effect] = field(init=False)

    def __post_init__(self) -> None:
        self.driver = Driver(self.core, self._carry_out, lambda deadline: None, TimerExpired,
                             self._spun)

    def _spun(self, what: str) -> None:
        raise LocalError(f"{self.name}: {what}")

    def handle(self, event: Event) -> None:
        self.end_turn()  # each event in a turn of its own, as in the runtime
        self.driver.dispatch(event, _NOW)

    def end_turn(self) -> None:
        """Fire the ticks due now: the write batcher seals and pushes what it holds."""
        self.driver.fire_due(_NOW)

    def _carry_out(self, effect: Effect) -> None:
        if isinstance(effect, Persistence | Notice):
            return  # nothing is stored (the replica measures the receive path alone)
        match effect:
            case Transmit():
                if effect.link_id == self.link_id:
                    self.outbox.append(effect.data)
            case ChannelAnswer():
                self.answers[effect.request_id] = effect
            case CloseLink() | Dial() | ConnectFinished() | PingFinished() \
                    | DisconnectFinished():
                pass  # one in-memory link, never closed or redialled by the replicas
            case _:
                assert_never(effect)

    def request(self, make: Callable[[int], Event]) -> dict[str, object]:
        self.requests += 1
        self.handle(make(self.requests))
        if self.requests not in self.answers:
            self.end_turn()  # batched: answered at its seal
        answer = self.answers.pop(self.requests, None)
        if answer is None or answer.result is None:
            raise LocalError(f"{self.name}: request failed: "
                             f"{answer.error if answer else 'no answer'}")
        return answer.result


@dataclass
class _Flights:
    flights: int = 0
    channel_flights: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    frame_bytes: dict[str, int] = field(default_factory=dict)
    envelope_items: int = 0


class _Pair:
    def __init__(self) -> None:
        rng = random.Random(7)
        self.a = _Side("A", NodeCore(bench_identity("replica-a"), NodeConfig(),
                                     random.Random(rng.random()), agent="bench"))
        self.b = _Side("B", NodeCore(bench_identity("replica-b"), NodeConfig(),
                                     random.Random(rng.random()), agent="bench"))
        self._next_link = 0

    def connect(self) -> None:
        """A dials B over a fresh in-memory link (queues A's Hello)."""
        self._next_link += 1
        self.a.link_id = self.b.link_id = self._next_link
        self.a.decoder, self.b.decoder = FrameDecoder(), FrameDecoder()
        fingerprint = os.urandom(32)
        self.b.handle(LinkEstablished(self.b.link_id, False, ("127.0.0.1", 40000 + self._next_link),
                                      fingerprint))
        self.a.handle(LinkEstablished(self.a.link_id, True, ("127.0.0.1", 7445), fingerprint,
                                      peer_cert_key=self.b.core.identity.public_key.raw))

    def disconnect(self) -> None:
        for side in (self.a, self.b):
            side.handle(LinkLost(side.link_id, "benchmark: link lost"))
            side.outbox.clear()
            side.link_id = -1

    def run(self, limit: int = 100) -> _Flights:
        """Deliver flights until both sides are quiet."""
        stats = _Flights()
        while True:
            self.a.end_turn()  # held pushes leave when their turn is over
            self.b.end_turn()
            if not (self.a.outbox or self.b.outbox):
                break
            if stats.flights >= limit:
                raise LocalError(f"replicas still talking after {limit} flights")
            moving = [(self.a, self.b, b"".join(self.a.outbox)),
                      (self.b, self.a, b"".join(self.b.outbox))]
            self.a.outbox, self.b.outbox = [], []
            stats.flights += 1
            carried = False
            for src, dst, data in moving:
                if not data:
                    continue
                for frame in src.decoder.feed(data):
                    if isinstance(frame, CHANNEL_FRAMES):
                        carried = True
                        name = type(frame).__name__
                        stats.frames[name] = stats.frames.get(name, 0) + 1
                        stats.frame_bytes[name] = (stats.frame_bytes.get(name, 0)
                                                   + len(encode_frame(frame)))
                        if isinstance(frame, Envelopes):
                            stats.envelope_items += len(frame.items)
                dst.handle(DataReceived(dst.link_id, data))
            stats.channel_flights += carried
        return stats


def _state(side: _Side, channel: bytes) -> ChannelState:
    return side.core.hub.get(channel)


def _send(channel: bytes, text: str) -> Callable[[int], Event]:
    return lambda request_id: SendRequested(request_id, channel, text, wall_ms())


def _post(side: _Side, channel: bytes, count: int, first: int) -> None:
    for i in range(first, first + count):
        side.request(_send(channel, bench_text(i, 0)))


def bench_reconcile(shared: int, diverged: int) -> dict[str, Any]:
    """Two replicas diverged by ``diverged`` messages each, after ``shared`` in common."""
    pair = _Pair()
    created = pair.a.request(lambda r: ChannelCreateRequested(r, "reconcile", wall_ms()))
    channel = created["channel"]
    assert isinstance(channel, bytes)
    inv = pair.a.core.hub.invite_for(channel, wall_ms())
    pair.b.request(lambda r: JoinRequested(r, channel, "reconcile", (), wall_ms(), inv.cap,
                                           inv.grant, inv.grant_signature, inv.genesis))
    pair.connect()
    pair.run()
    _post(pair.a, channel, shared, 0)
    pair.run()
    a_state, b_state = _state(pair.a, channel), _state(pair.b, channel)
    if len(b_state.messages) != shared:
        raise LocalError(f"B got {len(b_state.messages)} of {shared} shared messages")
    pair.disconnect()
    _post(pair.a, channel, diverged, shared)
    _post(pair.b, channel, diverged, shared + diverged)
    a_only = set(a_state.envs) - set(b_state.envs)
    b_only = set(b_state.envs) - set(a_state.envs)
    needed = len(a_only) + len(b_only)
    needed_bytes = (sum(len(a_state.raw[i]) for i in a_only)
                    + sum(len(b_state.raw[i]) for i in b_only))

    began = time.perf_counter()
    pair.connect()
    stats = pair.run()
    cpu_s = time.perf_counter() - began

    total = shared + 2 * diverged
    a_ids = [v.id for v in a_state.history()]
    if len(a_ids) != total or a_ids != [v.id for v in b_state.history()]:
        raise LocalError(f"replicas did not converge: A shows {len(a_ids)}, B shows "
                         f"{len(b_state.history())} of {total} messages")
    channel_bytes = sum(stats.frame_bytes.values())
    return {
        "shared": shared,
        "diverged_each": diverged,
        "flights": stats.flights,
        "channel_flights": stats.channel_flights,
        "round_trips": stats.channel_flights / 2,
        "envelopes_needed": needed,
        "envelopes_sent": stats.envelope_items,
        "envelope_bytes": needed_bytes,
        "channel_bytes": channel_bytes,
        "overhead": round(channel_bytes / needed_bytes - 1.0, 4),
        "frames": stats.frames,
        "frame_bytes": stats.frame_bytes,
        "seconds": round(cpu_s, 4),
    }


# --- apply cost vs size ------------------------------------------------------------------------


class _Replica:
    """A reader's replica fed by one history author; grows on demand."""

    def __init__(self) -> None:
        founder = bench_identity("apply-founder")
        self.key = os.urandom(32)
        founder_state, self.genesis = ChannelState.create(founder, "apply", self.key, wall_ms(),
                                                          os.urandom)
        self.channel = founder_state.channel_id
        self.epoch = epoch_id_for(self.key)
        self.state = ChannelState(self.channel, bench_identity("apply-reader"),
                                  lambda e: self.key if e == self.epoch else None)
        self.state.current_epoch = self.epoch
        self.state.receive(self.genesis, wall_ms())
        self._history = self.author(founder)
        self._next = 0

    def author(self, identity: Identity) -> FastAuthor:
        return FastAuthor(identity, channel=self.channel, key=self.key, epoch=self.epoch,
                          genesis=self.genesis)

    def grow(self, size: int) -> None:
        now = wall_ms()
        while len(self.state.messages) < size:
            raw, _ = self._history.post(bench_text(self._next, 0), now)
            self._next += 1
            result = self.state.receive_bytes(raw, now)
            if not result.applied:
                raise LocalError("a history envelope did not apply")

    def timed(self, samples: int) -> tuple[list[float], int]:
        """Apply ``samples`` fresh envelopes of a new author; seconds each, size before."""
        writer = self.author(bench_identity("apply-writer"))
        now = wall_ms()
        fresh = [writer.post(bench_text(i, 0), now)[0] for i in range(samples)]
        before = len(self.state.messages)
        gc.collect()
        times = []
        for raw in fresh:
            start = time.perf_counter()
            result = self.state.receive_bytes(raw, now)
            times.append(time.perf_counter() - start)
            if not result.applied:
                raise LocalError("a measured envelope did not apply")
        return times, before


def bench_apply_cost(small: int, big: int, samples: int) -> dict[str, Any]:
    replica = _Replica()
    replica.grow(small)
    small_first, small_at = replica.timed(samples)
    began = time.perf_counter()
    replica.grow(big)
    build_s = time.perf_counter() - began
    big_times, big_at = replica.timed(samples)
    del replica
    gc.collect()
    again = _Replica()
    again.grow(small)
    small_again, _ = again.timed(samples)
    del again
    gc.collect()

    small_all = summarize(small_first + small_again).scaled(1e6)
    big_sum = summarize(big_times).scaled(1e6)
    return {
        "small": small,
        "big": big,
        "samples": samples,
        "small_at": small_at,
        "big_at": big_at,
        "small_p50_us": round(small_all.p50, 2),
        "small_first_p50_us": round(summarize(small_first).scaled(1e6).p50, 2),
        "small_again_p50_us": round(summarize(small_again).scaled(1e6).p50, 2),
        "big_p50_us": round(big_sum.p50, 2),
        "ratio": round(big_sum.p50 / small_all.p50, 3),
        "small_us": small_all.to_json(2),
        "big_us": big_sum.to_json(2),
        "build_s": round(build_s, 2),
        "build_rate": round((big - small - samples) / build_s, 1) if build_s > 0 else None,
    }

