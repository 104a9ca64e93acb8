"""Simultaneous dials: a connect request succeeds whichever direction's link survives.

The network closes links the QUIC way (``close_drops_unsent``): the bytes a side
queued just before it closed a link never leave, so the loser of a tie can see
its link closed by the peer before its own handshake finished.
"""

from __future__ import annotations

import pytest

from p2pchat.core.events import (
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    Dial,
    SavePeer,
    WantedPeersLoaded,
)
from p2pchat.errors import CloseCode
from tests.unit.corenet import Net, identities_in_order


def two_nodes(latency: float) -> Net:
    net = Net(latency=latency, close_drops_unsent=True)
    small_id, big_id = identities_in_order()
    net.add("small", small_id)
    net.add("big", big_id)
    return net


def assert_one_shared_link(net: Net) -> None:
    for name, other in (("small", "big"), ("big", "small")):
        assert 1 == net.cores[name].link_count(), name
        assert [net.did(other)] == [p.did for p in net.cores[name].peers(net.now)], name
    [small_link] = net.open_links("small")
    [big_link] = net.open_links("big")
    assert ("big", big_link) == net.peer_end("small", small_link), "both keep the same link"


@pytest.mark.parametrize("first", ["small", "big"])
@pytest.mark.parametrize("handshake_between", [False, True])
@pytest.mark.parametrize("latency", [0.0, 0.1])
@pytest.mark.parametrize("stored", [False, True], ids=["fresh", "after-restart"])
def test_both_connect_requests_succeed_whichever_link_wins(
    first: str, handshake_between: bool, latency: float, stored: bool
) -> None:
    net = two_nodes(latency)
    for name, other in (("small", "big"), ("big", "small")):
        if stored:  # after a restart the stored peer is dialled at once; connect joins it
            net.handle(name, WantedPeersLoaded(((net.address_of[other], net.did(other)),)))
        net.handle(name, ConnectRequested(1, net.address_of[other], net.did(other)))
    dials = dict(net.dials)
    for name in (["small", "big"] if first == "small" else ["big", "small"]):
        net.complete_dial(name, dials[name])
        if handshake_between:
            net.settle()
    net.settle()
    net.run_until(net.now + 60)

    assert_one_shared_link(net)
    for name, other in (("small", "big"), ("big", "small")):
        assert [ConnectFinished(1, net.did(other), None)] == net.of(name, ConnectFinished), name
        assert SavePeer(net.address_of[other], net.did(other)) in net.of(name, SavePeer), name
        assert 1 == len(net.of(name, Dial)), f"{name}: no redial, the peer is connected"
        assert [(net.address_of[other], net.did(other))] == net.cores[name].wanted(), name


def test_the_loser_really_saw_its_link_closed_before_it_opened() -> None:
    """The case the fix is for happens here: the big DID's own link is closed by the
    peer as a duplicate while still in its handshake (without the fix, its connect
    would fail with that close reason)."""
    net = two_nodes(0.0)
    for name, other in (("small", "big"), ("big", "small")):
        net.handle(name, ConnectRequested(1, net.address_of[other]))
    dials = dict(net.dials)
    net.complete_dial("small", dials["small"])
    net.settle()  # small -> big is open on both sides
    big_link, _ = net.complete_dial("big", dials["big"])
    net.settle()
    assert big_link not in net.open_links("big")
    assert [CloseCode.DUPLICATE_LINK] == [c.code for c in net.of("small", CloseLink)]
    assert [] == net.of("big", CloseLink), "big's link never opened at big: small closed it"
    assert [False] == [p.outbound for p in net.cores["big"].peers(net.now)], \
        "big kept small's link"
    assert [ConnectFinished(1, net.did("small"), None)] == net.of("big", ConnectFinished)


def second_address(net: Net, name: str) -> tuple[str, int]:
    address = (net.address_of[name][0], 7446)
    net.addresses[address] = name
    return address


def test_older_of_two_own_dials_waits_for_the_newer_one() -> None:
    """Both links dialled by the same side: the peer keeps the newer one and closes the
    older before it opened here; the older's request waits for the newer and succeeds."""
    net = two_nodes(0.0)
    other_address = second_address(net, "big")
    net.handle("small", ConnectRequested(1, net.address_of["big"]))
    net.handle("small", ConnectRequested(2, other_address))
    first, second = [d for _, d in net.dials]
    net.complete_dial("small", first)
    new_link, _ = net.complete_dial("small", second)
    net.settle()

    assert [new_link] == net.open_links("small")
    assert_one_shared_link(net)
    big = net.did("big")
    assert {ConnectFinished(1, big, None), ConnectFinished(2, big, None)} \
        == set(net.of("small", ConnectFinished))
    assert {(net.address_of["big"], big), (other_address, big)} == set(net.cores["small"].wanted())


def test_a_waiting_request_fails_when_no_link_survives() -> None:
    """If the link the peer kept never opens here either, the request fails, with the
    reason its own link was closed."""
    net = two_nodes(0.0)
    other_address = second_address(net, "big")
    net.handle("small", ConnectRequested(1, net.address_of["big"]))
    net.handle("small", ConnectRequested(2, other_address))
    first, second = [d for _, d in net.dials]
    net.complete_dial("small", first)
    net.complete_dial("small", second)
    # once big has opened a link nothing more from it arrives: the Ready of the newer
    # link is lost too, so that link times out here
    net.route = lambda src, dst, data: not (src == "big" and net.cores["big"].peers(net.now))
    net.settle()
    assert [] == net.of("small", ConnectFinished), "request 1 waits for the newer link"
    net.run_until(net.now + net.config.link.handshake_timeout + 1)

    answers = {f.request_id: f for f in net.of("small", ConnectFinished)}
    assert {1, 2} == set(answers)
    assert None is answers[1].did
    assert f"code {int(CloseCode.DUPLICATE_LINK)}" in (answers[1].error or "")
    assert None is answers[2].did
    assert "handshake" in (answers[2].error or "")
    assert [] == net.cores["small"].wanted(), "first connects that failed are forgotten"
