"""Held pushes: a burst of app writes leaves in one ``Envelopes`` frame per link.

The runtime marks its writes ``hold=True`` and sends ``FlushHeld`` once the burst
is over; the core must keep every other frame in the order it would have had
without holding, and never hold more than ``MAX_HELD_PUSH`` envelopes.
"""

from __future__ import annotations

from p2pchat.core.channels import MAX_HELD_PUSH
from p2pchat.core.events import Effect, FlushHeld, PingRequested, SendRequested, Transmit
from p2pchat.testing import SimNetwork, seed_from_env
from p2pchat.wire import Envelopes, Frame, FrameDecoder


def _frames(effects: list[Effect]) -> list[Frame]:
    return [f for e in effects if isinstance(e, Transmit) for f in FrameDecoder().feed(e.data)]


def _pushes(effects: list[Effect]) -> list[int]:
    """Items per ``Envelopes`` frame in ``effects``."""
    return [len(f.items) for f in _frames(effects) if isinstance(f, Envelopes)]


def _pair(seed: int) -> tuple[SimNetwork, bytes]:
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "held")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel), what="b to sync")
    net.run_until_quiet()
    return net, channel


def _held_send(net: SimNetwork, channel: bytes, rid: int, text: str) -> list[Effect]:
    return net.request("a", SendRequested(rid, channel, text, net.wall_ms("a"), hold=True))


def test_a_held_burst_goes_out_as_one_frame_on_flush() -> None:
    seed = seed_from_env(41)
    net, channel = _pair(seed)
    for i in range(5):
        assert [] == _pushes(_held_send(net, channel, 1000 + i, f"m{i}")), f"seed={seed}"
    assert [5] == _pushes(net.request("a", FlushHeld())), f"seed={seed}"
    assert [] == _pushes(net.request("a", FlushHeld())), f"seed={seed}: pushed twice"
    net.run_until_quiet()
    assert [f"m{i}" for i in range(5)] == [m.text for m in net.history("b", channel)]
    net.assert_converged(channel)


def test_any_other_event_pushes_what_is_held_first() -> None:
    seed = seed_from_env(42)
    net, channel = _pair(seed)
    _held_send(net, channel, 2000, "held")
    effects = net.request("a", PingRequested(2001, net.did("b")))
    frames = _frames(effects)
    assert ["Envelopes", "Ping"] == [type(f).__name__ for f in frames], f"seed={seed}"
    # a write that is not held pushes the held ones, then its own
    _held_send(net, channel, 2002, "held too")
    plain = net.request("a", SendRequested(2003, channel, "plain", net.wall_ms("a")))
    assert [1, 1] == _pushes(plain), f"seed={seed}"
    net.run_until_quiet()
    assert ["held", "held too", "plain"] == [m.text for m in net.history("b", channel)]


def test_holding_stops_at_the_limit() -> None:
    seed = seed_from_env(43)
    net, channel = _pair(seed)
    sizes = [_pushes(_held_send(net, channel, 3000 + i, f"m{i}"))
             for i in range(MAX_HELD_PUSH + 1)]
    assert [[]] * (MAX_HELD_PUSH - 1) + [[MAX_HELD_PUSH], []] == sizes, f"seed={seed}"
    assert [1] == _pushes(net.request("a", FlushHeld())), f"seed={seed}"
    net.run_until_quiet()
    net.assert_converged(channel)
    assert MAX_HELD_PUSH + 1 == len(net.history("b", channel))
