"""Sync progress of a channel (``ChannelHub.sync_progress``): what a node still lacks of
what its peers' summaries announced, and how much of that it received since."""

from __future__ import annotations

from p2pchat.core.channels import SyncProgress
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    Effect,
    JoinRequested,
    SendRequested,
    SyncChanged,
)
from tests.unit.corenet import Net

WALL = 1_800_000_000_000
MESSAGES = 300
TEXT = "y" * 1_000  # ~1.3 KB envelopes: several 64 KiB frames, each a step of progress
LONG = "z" * 15_000  # ~15 KB envelopes: several sync windows (SYNC_WINDOW_BYTES)


def _channel_with_messages(net: Net, name: str, text: str = TEXT) -> bytes:
    created = net.handle(name, ChannelCreateRequested(1, "big", WALL))
    answer = next(e for e in created if isinstance(e, ChannelAnswer))
    assert answer.result is not None
    channel = answer.result["channel"]
    assert isinstance(channel, bytes)
    for i in range(MESSAGES):
        net.handle(name, SendRequested(10 + i, channel, f"{i} {text}", WALL + i))
    return channel


def _join(net: Net, inviter: str, joiner: str, channel: bytes) -> None:
    inv = net.cores[inviter].hub.invite_for(channel, WALL)
    net.handle(joiner, JoinRequested(2, channel, "big", (), WALL, inv.cap, inv.grant,
                                     inv.grant_signature, inv.genesis))


CHUNK = 8 * 1024  # stream reads: a frame of 64 KiB arrives in pieces, as over QUIC


class _Watched(Net):
    """A network that notes ``watched``'s progress of ``channel`` after every event it
    handles that changed it (the core's ``SyncChanged`` effects)."""

    def __init__(self) -> None:
        super().__init__(chunker=lambda data: [data[i:i + CHUNK]
                                               for i in range(0, len(data), CHUNK)])
        self.watched = ("", b"")
        self.seen: list[SyncProgress | None] = []

    def handled(self, name: str, effects: list[Effect]) -> None:
        who, channel = self.watched
        if name != who:
            return
        for effect in effects:
            if isinstance(effect, SyncChanged) and effect.channel == channel:
                self.seen.append(effect.progress)

    def record(self, name: str, channel: bytes) -> list[SyncProgress | None]:
        """Settle the network; ``name``'s progress of ``channel`` meanwhile."""
        self.watched, self.seen = (name, channel), []
        self.settle()
        return self.seen


def _counts_up(seen: list[SyncProgress | None]) -> None:
    received = [p.received for p in seen if p is not None]
    assert received == sorted(received), "received went backwards"
    assert all(p.behind > 0 for p in seen if p is not None)


def test_a_joiner_counts_up_to_what_the_peer_announced_then_is_done() -> None:
    net = _Watched()
    net.add("a", seed=1)
    net.add("b", seed=2)
    channel = _channel_with_messages(net, "a")
    held = len(net.cores["a"].hub.channels[channel].log)  # genesis + the messages
    _join(net, "a", "b", channel)
    assert net.cores["b"].hub.sync_progress(channel) is None
    net.establish("b", "a")
    seen = net.record("b", channel)
    progress = [p for p in seen if p is not None]
    # b holds the genesis (from the invite): it lacks the rest of what a announced
    assert SyncProgress(0, held - 1) == progress[0]
    assert {held - 1} == {p.expected for p in progress}
    _counts_up(seen)
    assert len({p.received for p in progress if 0 < p.received}) >= 3, progress
    assert seen[-1] is None  # done: nothing announced is missing
    assert net.cores["b"].hub.sync_progress(channel) is None
    assert MESSAGES == len(net.cores["b"].hub.channels[channel].history())
    # a learnt of b's join envelope from b's summary: one envelope, then done
    assert net.cores["a"].hub.sync_progress(channel) is None


def test_a_lost_link_ends_the_sync_and_a_new_one_resumes_from_what_is_left() -> None:
    net = _Watched()
    net.add("a", seed=1)
    net.add("b", seed=2)
    channel = _channel_with_messages(net, "a", LONG)
    held = len(net.cores["a"].hub.channels[channel].log)
    _join(net, "a", "b", channel)
    lb, _ = net.establish("b", "a")
    hub = net.cores["b"].hub
    for _ in range(10_000):
        assert net.step(1) == 1
        progress = hub.sync_progress(channel)
        if progress is not None and progress.received > 0:
            break
    else:
        raise AssertionError("no progress")
    net.watched, net.seen = ("b", channel), []
    net.sever(("b", lb))
    assert hub.sync_progress(channel) is None  # nothing announced is coming any more
    assert [None] == net.seen, "the end of the sync is told"
    have = len(hub.channels[channel].log)
    net.establish("b", "a")
    seen = net.record("b", channel)
    first = next(p for p in seen if p is not None)
    # own join envelope and the genesis are b's besides what it received
    assert 0 == first.received and first.behind <= held - (have - 1)
    _counts_up(seen)
    assert seen[-1] is None
    assert MESSAGES == len(hub.channels[channel].history())


def test_two_peers_announcing_the_same_envelopes_count_once() -> None:
    net = _Watched()
    for i, name in enumerate("acb"):
        net.add(name, seed=i + 1)
    channel = _channel_with_messages(net, "a")
    _join(net, "a", "c", channel)
    net.establish("c", "a")
    net.settle()
    state_a, state_c = (net.cores[n].hub.channels[channel] for n in "ac")
    assert set(state_a.log) == set(state_c.log)
    held = len(state_a.log)
    _join(net, "a", "b", channel)
    net.establish("b", "a")
    net.establish("b", "c")
    seen = net.record("b", channel)
    progress = [p for p in seen if p is not None]
    assert progress
    # both announce the same held - 1 envelopes b lacks: counted once, not twice
    assert {held - 1} == {p.expected for p in progress}
    _counts_up(seen)
    assert seen[-1] is None
    assert MESSAGES == len(net.cores["b"].hub.channels[channel].history())
