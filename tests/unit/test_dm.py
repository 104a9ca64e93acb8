"""Direct messages between NodeCores: a two-member invite-only channel made on first
use, offered over the link, joined by the peer through its identity key."""

from __future__ import annotations

import pytest

from p2pchat.core.events import ChannelAnswer, DmRequested, Started
from p2pchat.errors import RemoteProtocolError
from p2pchat.wire import Offer
from tests.unit.corenet import Net

WALL = 1_800_000_000_000


def _net() -> Net:
    net = Net()
    for i, name in enumerate(("a", "b", "c")):
        net.add(name, seed=i + 1)
        net.handle(name, Started(net.address_of[name], WALL))
    return net


def _dm(net: Net, sender: str, to: str, text: str, rid: int) -> ChannelAnswer:
    effects = net.handle(sender, DmRequested(rid, net.did(to), text, WALL + rid))
    return next(e for e in effects if isinstance(e, ChannelAnswer) and e.request_id == rid)


def test_a_dm_reaches_the_peer_which_answers_in_the_same_channel() -> None:
    net = _net()
    first = _dm(net, "a", "b", "hello b", 1)  # b not connected yet: the offer waits
    assert first.error is None and first.result is not None and first.result["new"]
    channel = first.result["channel"]
    assert isinstance(channel, bytes)
    net.establish("b", "a")
    net.settle()
    b = net.cores["b"].hub
    assert b.dm_channel(net.did("a")) == channel
    state = b.channels[channel]
    assert ["hello b"] == [m.text for m in state.history()]
    assert "member" == state.key_status() and state.moderation().modes.get("invite-only")
    answer = _dm(net, "b", "a", "hi a", 2)
    assert answer.result is not None and answer.result["channel"] == channel
    assert not answer.result["new"]
    net.settle()
    a_state = net.cores["a"].hub.channels[channel]
    assert ["hello b", "hi a"] == [m.text for m in a_state.history()]
    # a third node never gets it: not offered, and not a member of the invite-only channel
    assert channel not in net.cores["c"].hub.channels
    assert a_state.may_sync(net.did("b")) and not a_state.may_sync(net.did("c"))


def test_dm_requests_are_checked() -> None:
    net = _net()
    assert "not a DID" in (_dm_error(net, "did:key:nope"))
    assert "own DID" in _dm_error(net, net.did("a"))


def _dm_error(net: Net, did: str) -> str:
    effects = net.handle("a", DmRequested(9, did, "x", WALL))
    answer = next(e for e in effects if isinstance(e, ChannelAnswer))
    return answer.error or ""


def test_an_offer_that_is_not_the_senders_own_dm_closes_the_link() -> None:
    net = _net()
    first = _dm(net, "a", "c", "for c only", 1)
    assert first.result is not None
    invite = net.cores["a"].hub._dm_offers[net.did("c")]
    la, _ = net.establish("b", "a")
    net.settle()
    # b forwards a's offer for c to a third party: not b's own invite
    hub_c = net.cores["c"].hub
    lc_link = net.establish("c", "b")[0]
    net.settle()
    lc = hub_c._links[lc_link]
    with pytest.raises(RemoteProtocolError, match="own invite"):
        hub_c._on_offer(lc, Offer(invite=invite), WALL)
    # and a's genuine offer to b (whose genesis names c) is refused by b
    lb_c = net.cores["b"].hub._links[la]
    with pytest.raises(RemoteProtocolError, match="not a direct-message channel"):
        net.cores["b"].hub._on_offer(lb_c, Offer(invite=invite), WALL)
    assert first.result["channel"] not in net.cores["b"].hub.channels
