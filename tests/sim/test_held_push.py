"""Held writes: a burst of app writes leaves in one ``Envelopes`` frame per link, and a
burst of posts in one multi-post envelope.

Every app write holds its push; the core's write batcher (``p2pchat.core.batching``)
seals and flushes when the turn it was made in is over (``SimNetwork.end_turn``). The
core must keep every other frame in the order it would have had without holding,
never hold more than ``MAX_HELD_PUSH`` envelopes, and seal at most
``MAX_POSTS_PER_ENVELOPE`` posts into one envelope.
"""

from __future__ import annotations

from p2pchat.channel.state import MAX_POSTS_PER_ENVELOPE
from p2pchat.core.channels import MAX_HELD_PUSH
from p2pchat.core.events import (
    Effect,
    MessageOpRequested,
    PingRequested,
    SendRequested,
    Transmit,
)
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


def _held_send(net: SimNetwork, channel: bytes, rid: int, text: str, *, same_turn: bool = True,
               lagging: bool = False) -> list[Effect]:
    """A post in the turn of the one before (``same_turn``): batched. The first post of
    a turn is batched only while a peer lags (``lagging``) or a seal is pending."""
    return net.request("a", SendRequested(rid, channel, text, net.wall_ms("a"),
                                          lagging=lagging), same_turn=same_turn)


def _held_react(net: SimNetwork, channel: bytes, rid: int, target: str, emoji: str
                ) -> list[Effect]:
    return net.request("a", MessageOpRequested(rid, channel, "react", target,
                                               net.wall_ms("a"), emoji=emoji),
                       same_turn=True)


def _message_id(net: SimNetwork, rid: int) -> str:
    """The id of the message that request ``rid`` wrote, from its answer."""
    result = net.answers[rid].result
    assert result is not None
    message_id = result["id"]
    assert isinstance(message_id, str)
    return message_id


def test_a_held_burst_of_posts_goes_out_as_one_envelope_on_flush() -> None:
    seed = seed_from_env(41)
    net, channel = _pair(seed)
    for i in range(5):
        effects = _held_send(net, channel, 1000 + i, f"m{i}", same_turn=i > 0, lagging=i == 0)
        assert [] == _pushes(effects), f"seed={seed}"
    assert not any(1000 + i in net.answers for i in range(5)), "answered before sealing"
    assert [1] == _pushes(net.end_turn("a")), f"seed={seed}"
    assert [] == _pushes(net.end_turn("a")), f"seed={seed}: pushed twice"
    ids = [_message_id(net, 1000 + i) for i in range(5)]
    assert ids == sorted(ids), "ids of one burst keep the order of the sends"
    net.run_until_quiet()
    assert [f"m{i}" for i in range(5)] == [m.text for m in net.history("b", channel)]
    assert ids == [m.id for m in net.history("b", channel)]
    net.assert_converged(channel)


def test_any_other_event_pushes_what_is_held_first() -> None:
    seed = seed_from_env(42)
    net, channel = _pair(seed)
    _held_send(net, channel, 2000, "held", same_turn=False)
    effects = net.request("a", PingRequested(2001, net.did("b")), same_turn=True)
    frames = _frames(effects)
    assert ["Envelopes", "Ping"] == [type(f).__name__ for f in frames], f"seed={seed}"
    # queued posts are sealed and pushed (one frame) before any other event's frames
    _held_send(net, channel, 2002, "held too", same_turn=False)
    _held_send(net, channel, 2003, "held three")
    assert 2003 not in net.answers, "queued"
    effects = net.request("a", PingRequested(2004, net.did("b")), same_turn=True)
    assert [2] == _pushes(effects), f"seed={seed}"
    assert ["Envelopes", "Ping"] == [type(f).__name__ for f in _frames(effects)]
    net.run_until_quiet()
    assert ["held", "held too", "held three"] == [m.text for m in net.history("b", channel)]


def test_a_post_in_a_turn_of_its_own_is_sealed_at_once_its_push_held() -> None:
    seed = seed_from_env(47)
    net, channel = _pair(seed)
    assert [] == _pushes(_held_send(net, channel, 1100, "m0", same_turn=False))
    assert net.answers[1100].result is not None, "answered at once"
    assert [1] == _pushes(net.end_turn("a")), "pushed when the turn is over"
    # a post while a peer lags queues; the next one of its turn joins it (order is kept)
    _held_send(net, channel, 1200, "queued", same_turn=False, lagging=True)
    _held_send(net, channel, 1201, "joins it")
    assert 1200 not in net.answers and 1201 not in net.answers
    assert [1] == _pushes(net.end_turn("a")), "sealed into one envelope, one push"
    assert 1200 in net.answers and 1201 in net.answers
    net.run_until_quiet()
    assert ["m0", "queued", "joins it"] == [m.text for m in net.history("b", channel)]


def test_a_message_op_seals_the_posts_before_it() -> None:
    seed = seed_from_env(44)
    net, channel = _pair(seed)
    _held_send(net, channel, 2100, "first", same_turn=False, lagging=True)
    _held_send(net, channel, 2101, "second")
    assert 2100 not in net.answers
    _held_react(net, channel, 2102, "0" * 26, "+1")
    assert 2100 in net.answers and 2101 in net.answers, "the posts were sealed first"
    assert net.answers[2102].error, "a reaction to an unknown message is refused"
    first = _message_id(net, 2100)
    _held_react(net, channel, 2103, first, "+1")
    net.end_turn("a")
    net.run_until_quiet()
    assert ["first", "second"] == [m.text for m in net.history("b", channel)]
    net.assert_converged(channel)


def test_holding_stops_at_the_limit() -> None:
    seed = seed_from_env(43)
    net, channel = _pair(seed)
    target = net.post("a", channel, "react to me")
    net.run_until_quiet()
    sizes = [_pushes(_held_react(net, channel, 3000 + i, target, f"e{i}"))
             for i in range(MAX_HELD_PUSH + 1)]
    assert [[]] * (MAX_HELD_PUSH - 1) + [[MAX_HELD_PUSH], []] == sizes, f"seed={seed}"
    assert [1] == _pushes(net.end_turn("a")), f"seed={seed}"
    net.run_until_quiet()
    net.assert_converged(channel)


def test_a_burst_longer_than_one_envelope_is_sealed_in_several() -> None:
    seed = seed_from_env(45)
    net, channel = _pair(seed)
    count = MAX_POSTS_PER_ENVELOPE + 1
    for i in range(count - 1):
        _held_send(net, channel, 4000 + i, f"m{i}", same_turn=i > 0, lagging=i == 0)
    assert all(4000 + i in net.answers for i in range(count - 1)), "sealed at the limit"
    _held_send(net, channel, 4000 + count - 1, "last")
    assert [2] == _pushes(net.end_turn("a")), f"seed={seed}"
    net.run_until_quiet()
    assert [f"m{i}" for i in range(count - 1)] + ["last"] == \
        [m.text for m in net.history("b", channel)]
    net.assert_converged(channel)


def test_a_burst_of_long_posts_arrives_whole() -> None:
    """64 posts of 1,000 characters do not fit one change (64 KiB): the burst is cut
    by size, and every post arrives."""
    seed = seed_from_env(46)
    net, channel = _pair(seed)
    texts = [f"{i} " + "x" * 1_000 for i in range(MAX_POSTS_PER_ENVELOPE)]
    ids = net.post_burst("a", channel, texts)
    net.run_until_quiet()
    assert ids == [m.id for m in net.history("b", channel)], f"seed={seed}"
    assert 1 < len({net.core("b").hub.get(channel).messages[i].env for i in ids}) < 64
