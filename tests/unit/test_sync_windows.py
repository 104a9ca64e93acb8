"""Sync windows overlap in flight, and no envelope crosses a link twice."""

from __future__ import annotations

from p2pchat.core.channels import SYNC_WINDOW_BYTES
from p2pchat.core.events import ChannelAnswer, ChannelCreateRequested, JoinRequested, SendRequested
from p2pchat.wire import Envelopes, Summary
from tests.unit.corenet import Net, sent_frames

WALL = 1_800_000_000_000
TEXT = "x" * 15_000  # ~15 KB envelopes: a few hundred fill several windows


def test_a_large_backlog_arrives_once_with_overlapping_windows() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    created = net.handle("a", ChannelCreateRequested(1, "big", WALL))
    answer = next(e for e in created if isinstance(e, ChannelAnswer))
    assert answer.result is not None
    channel = answer.result["channel"]
    assert isinstance(channel, bytes)
    for i in range(450):
        net.handle("a", SendRequested(10 + i, channel, f"{i} {TEXT}", WALL + i))
    state_a = net.cores["a"].hub.channels[channel]
    total = sum(len(state_a.raw[i]) for i in state_a.log)
    assert total > 3 * SYNC_WINDOW_BYTES  # several windows
    inv = net.cores["a"].hub.invite_for(channel, WALL)
    net.handle("b", JoinRequested(2, channel, "big", (), WALL, inv.cap, inv.grant,
                                  inv.grant_signature, inv.genesis))
    la, lb = net.establish("b", "a")
    net.settle()
    state_b = net.cores["b"].hub.channels[channel]
    assert set(state_a.log) == set(state_b.log)
    assert [m.text for m in state_a.history()] == [m.text for m in state_b.history()]
    sent = [f for f in sent_frames(net.effects["a"], lb) if isinstance(f, Envelopes)]
    items = [raw for f in sent for raw in f.items]
    assert len(items) == len(set(items)), "an envelope was sent twice"
    own_b = {state_b.raw[i] for i in state_b.log if state_b.envs[i].author == net.did("b")}
    genesis = state_a.raw[state_a.log[0]]  # b had it from the invite
    assert {state_a.raw[i] for i in state_a.log} - own_b - {genesis} == set(items)
    # ``more`` marks the first frame of every window that is not the last one
    flagged = [i for i, f in enumerate(sent) if f.more]
    assert len(flagged) >= 3 and 0 == flagged[0]
    asked = [f for f in sent_frames(net.effects["b"], la) if isinstance(f, Summary)]
    assert len(asked) == len(flagged) + 1  # the first summary, then one per flagged frame


def test_a_channel_joined_after_the_peer_announced_it_is_shared_on_the_same_link() -> None:
    """A creates a channel on an open link (its Subscribe reaches B before B holds the
    channel); B then joins: the channel is shared at once, without closing the link."""
    net = Net()
    net.add("a", seed=1)
    net.add("b", seed=2)
    la, lb = net.establish("b", "a")
    net.settle()
    created = net.handle("a", ChannelCreateRequested(1, "late", WALL))
    answer = next(e for e in created if isinstance(e, ChannelAnswer))
    assert answer.result is not None
    channel = answer.result["channel"]
    assert isinstance(channel, bytes)
    net.settle()  # a's Subscribe with the new topic is in; b does not hold it yet
    inv = net.cores["a"].hub.invite_for(channel, WALL)
    net.handle("b", JoinRequested(2, channel, "late", (), WALL, inv.cap, inv.grant,
                                  inv.grant_signature, inv.genesis))
    net.settle()
    assert [la] == net.open_links("b") and [lb] == net.open_links("a")
    state_b = net.cores["b"].hub.channels[channel]
    assert "member" == state_b.key_status()  # admitted over that link
    net.handle("a", SendRequested(3, channel, "over the same link", WALL + 1))
    net.settle()
    assert ["over the same link"] == [m.text for m in state_b.history()]
