"""NodeCore over an in-memory network: liveness, duplicates, reconnects, shutdown."""

from __future__ import annotations

import itertools

import pytest

from p2pchat.core import LinkConfig, NodeConfig
from p2pchat.core.events import (
    Address,
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    Dial,
    DialFailed,
    DisconnectFinished,
    DisconnectRequested,
    ForgetPeer,
    LinkEstablished,
    PeerConnected,
    PeerDisconnected,
    PingFinished,
    PingRequested,
    SavePeer,
    ShutdownRequested,
    Transmit,
    WantedPeersLoaded,
)
from p2pchat.errors import CloseCode
from p2pchat.wire import Ping
from tests.unit.corenet import START, Net, identities_in_order, make_identity, only, sent_frames


def connected(
    config: NodeConfig | None = None, *, seed: int = 0, **net_options: object
) -> tuple[Net, int, int]:
    """Nodes a and b, with a link a -> b dialled through ConnectRequested."""
    net = Net(config, **net_options)  # type: ignore[arg-type]
    net.add("a", seed=seed)
    net.add("b")
    net.handle("a", ConnectRequested(1, net.address_of["b"]))
    [(_, dial)] = net.dials
    a_link, b_link = net.complete_dial("a", dial)
    net.settle()
    assert [net.did("b")] == [p.did for p in net.cores["a"].peers(net.now)]
    return net, a_link, b_link


def codes(net: Net, name: str) -> list[CloseCode]:
    return [c.code for c in net.of(name, CloseLink)]


# --- keepalive, RTT and idle timeout ---------------------------------------------------------


def test_keepalive_keeps_a_quiet_link_open() -> None:
    net, _, _ = connected()
    net.run_until(START + 300)
    assert [] == codes(net, "a") + codes(net, "b")
    assert 1 == len(net.cores["a"].peers(net.now))
    assert 300.0 == net.cores["a"].peers(net.now)[0].connected_for


def test_keepalive_pings_are_spaced_by_the_interval() -> None:
    net, _, _ = connected()
    times: list[float] = []

    def record_pings(src: str, dst: str, data: bytes) -> bool:
        if src == "a" and any(isinstance(f, Ping) for f in sent_frames([Transmit(0, data)])):
            times.append(net.now)
        return True

    net.route = record_pings
    net.run_until(START + 60)
    interval = net.config.link.keepalive_interval
    assert len(times) >= 60 // interval - 1
    assert [interval] * (len(times) - 1) == [b - a for a, b in itertools.pairwise(times)]


def test_keepalive_measures_the_round_trip_time() -> None:
    net, _, _ = connected(latency=0.25)
    net.run_until(START + 30)  # several keepalive round trips
    for name in ("a", "b"):
        [peer] = net.cores[name].peers(net.now)
        assert 0.5 == peer.rtt


def test_ping_request_is_answered_with_the_rtt() -> None:
    net, _, _ = connected(latency=0.125)
    net.handle("a", PingRequested(7, net.did("b")))
    net.settle()
    assert [PingFinished(7, 0.25, None)] == net.of("a", PingFinished)


def test_ping_to_an_unknown_peer_fails_at_once() -> None:
    net, _, _ = connected()
    other = make_identity(99).did
    effects = net.handle("a", PingRequested(8, other))
    assert [PingFinished(8, None, f"not connected to {other}")] == effects


def test_idle_timeout_closes_a_link_that_hears_nothing() -> None:
    net, a_link, _ = connected()
    idle = net.config.link.idle_timeout
    net.route = lambda src, dst, data: src != "b"  # b's frames (pongs) are lost from now on
    net.run_until(START + idle - 0.001)
    assert [] == codes(net, "a")
    net.run_until(START + idle)
    [close] = net.of("a", CloseLink)
    assert (a_link, CloseCode.IDLE_TIMEOUT) == (close.link_id, close.code)
    assert f"nothing received for {idle:g} s" == close.reason
    assert [net.did("b")] == [e.did for e in net.of("a", PeerDisconnected)]
    net.settle()
    assert [net.did("a")] == [e.did for e in net.of("b", PeerDisconnected)]


def test_idle_timeout_is_configurable() -> None:
    config = NodeConfig(link=LinkConfig(keepalive_interval=1.0, idle_timeout=3.0))
    net, _, _ = connected(config)
    net.route = lambda src, dst, data: False
    net.run_until(START + 2.999)
    assert [] == codes(net, "a") + codes(net, "b")
    net.run_until(START + 3.0)
    assert CloseCode.IDLE_TIMEOUT in codes(net, "a") + codes(net, "b")


# --- connect requests ---------------------------------------------------------------------


def test_connect_saves_the_peer_and_answers_after_the_handshake() -> None:
    net, _, _ = connected()
    assert [SavePeer(net.address_of["b"], net.did("b"))] == net.of("a", SavePeer)
    assert [ConnectFinished(1, net.did("b"), None)] == net.of("a", ConnectFinished)
    assert [(net.address_of["b"], net.did("b"))] == net.cores["a"].wanted()
    assert [] == net.of("b", SavePeer), "an inbound peer is not redialled"


def test_connect_to_a_connected_address_answers_at_once() -> None:
    net, _, _ = connected()
    effects = net.handle("a", ConnectRequested(2, net.address_of["b"]))
    assert [ConnectFinished(2, net.did("b"), None)] == effects


def test_connect_expecting_another_did_at_a_connected_address_fails() -> None:
    net, _, _ = connected()
    other = make_identity(99).did
    [finished] = net.handle("a", ConnectRequested(2, net.address_of["b"], other))
    assert isinstance(finished, ConnectFinished)
    assert finished.did is None
    assert net.did("b") in str(finished.error)
    assert other in str(finished.error)


def test_concurrent_connects_share_one_dial() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    net.handle("a", ConnectRequested(1, net.address_of["b"]))
    assert [] == net.handle("a", ConnectRequested(2, net.address_of["b"]))
    [(_, dial)] = net.dials
    net.complete_dial("a", dial)
    net.settle()
    assert [1, 2] == sorted(f.request_id for f in net.of("a", ConnectFinished))
    assert {net.did("b")} == {f.did for f in net.of("a", ConnectFinished)}


def test_too_many_wanted_peers() -> None:
    net = Net(NodeConfig(max_wanted_peers=1))
    net.add("a")
    net.handle("a", ConnectRequested(1, ("192.0.2.1", 1)))
    effects = net.handle("a", ConnectRequested(2, ("192.0.2.2", 1)))
    assert [ConnectFinished(2, None, "too many peers configured")] == effects


def test_first_failed_connect_is_forgotten() -> None:
    net = Net()
    net.add("a")
    net.handle("a", ConnectRequested(1, ("192.0.2.1", 7445)))
    [(_, dial)] = net.dials
    net.fail_dial("a", dial, "connection refused")
    assert [ConnectFinished(1, None, "cannot reach 192.0.2.1:7445: connection refused")] == \
        net.of("a", ConnectFinished)
    assert [] == net.cores["a"].wanted()
    assert net.cores["a"].next_deadline() is None
    net.run_until(START + 3600)
    assert 1 == len(net.of("a", Dial)), "no redial"


def test_link_for_a_stale_dial_is_closed() -> None:
    net = Net()
    a = net.add("a")
    effects = a.handle(LinkEstablished(5, True, ("192.0.2.1", 1), b"\x00" * 32,
                                       peer_cert_key=make_identity(9).public_key.raw,
                                       dial_id=77), net.now)
    assert [CloseCode.NORMAL] == [e.code for e in only(effects, CloseLink)]
    assert 0 == a.link_count()


def test_max_links_refuses_further_links() -> None:
    net = Net(NodeConfig(max_links=1))
    net.add("a")
    net.add("b")
    net.add("c")
    net.establish("b", "a")
    net.settle()
    net.establish("c", "a")
    net.settle()
    [refused] = net.of("a", CloseLink)
    assert (CloseCode.REFUSED, "too many links") == (refused.code, refused.reason)
    assert [net.did("b")] == [p.did for p in net.cores["a"].peers(net.now)]


# --- duplicate links -------------------------------------------------------------------------


def assert_one_link_each(net: Net, small: str, big: str) -> None:
    for name in (small, big):
        core = net.cores[name]
        other = big if name == small else small
        assert 1 == core.link_count(), name
        assert [net.did(other)] == [p.did for p in core.peers(net.now)], name
        assert 1 == len(net.open_links(name)), name
    [small_link] = net.open_links(small)
    [big_link] = net.open_links(big)
    assert (big, big_link) == net.peer_end(small, small_link), "both keep the same link"


@pytest.mark.parametrize("first", ["small", "big"])
@pytest.mark.parametrize("handshake_between", [False, True])
@pytest.mark.parametrize("latency", [0.0, 0.1])
def test_both_dial_each_other_converges_to_one_link(
    first: str, handshake_between: bool, latency: float
) -> None:
    net = Net(latency=latency)
    small_id, big_id = identities_in_order()
    net.add("small", small_id)
    net.add("big", big_id)
    net.handle("small", ConnectRequested(1, net.address_of["big"]))
    net.handle("big", ConnectRequested(1, net.address_of["small"]))
    dials = dict(net.dials)
    order = ["small", "big"] if first == "small" else ["big", "small"]
    for name in order:
        net.complete_dial(name, dials[name])
        if handshake_between:
            net.settle()
    net.settle()
    net.run_until(net.now + 120)

    assert_one_link_each(net, "small", "big")
    [kept] = net.open_links("small")
    assert "small" == net.dialler("small", kept), "the link dialled by the smaller DID wins"
    for name, other in (("small", "big"), ("big", "small")):
        assert [ConnectFinished(1, net.did(other), None)] == net.of(name, ConnectFinished)
        assert {CloseCode.DUPLICATE_LINK} >= set(codes(net, name))
        assert 1 == len(net.of(name, Dial)), "no redial after the duplicate is dropped"
        connects = len(net.of(name, PeerConnected))
        disconnects = len(net.of(name, PeerDisconnected))
        assert 1 == connects - disconnects, "the peer ends up connected exactly once"


def test_second_link_from_the_same_dialler_replaces_the_first() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    net.establish("a", "b")
    net.settle()
    new_a, new_b = net.establish("a", "b")
    net.settle()
    assert_one_link_each(net, "a", "b")
    assert [new_a] == net.open_links("a")
    assert [new_b] == net.open_links("b")
    closed = net.of("a", CloseLink) + net.of("b", CloseLink)
    assert {CloseCode.DUPLICATE_LINK} == {c.code for c in closed}
    assert 1 == len(net.of("a", PeerConnected)), "the peer stays connected throughout"
    assert [] == net.of("a", PeerDisconnected) + net.of("b", PeerDisconnected)


# --- reconnect with backoff --------------------------------------------------------------------

BASE, CAP = 1.0, 8.0


def backoff_bound(attempt: int) -> float:
    return min(CAP, BASE * 2.0 ** (attempt - 1))


def redial_delays(net: Net, name: str, attempts: int) -> list[float]:
    """Let ``attempts`` redials fail in a row; the delay before each one."""
    delays = []
    for _ in range(attempts):
        deadline = net.cores[name].next_deadline()
        assert deadline is not None
        delays.append(deadline - net.now)
        net.fire(name)
        [(_, dial)] = [d for d in net.dials if d[0] == name]
        net.fail_dial(name, dial)
    return delays


@pytest.mark.parametrize("seed", range(5))
def test_lost_link_is_redialled_with_jittered_exponential_backoff(seed: int) -> None:
    config = NodeConfig(reconnect_base=BASE, reconnect_max=CAP)
    net = Net(config)
    net.add("a", seed=seed)
    net.add("b")
    net.handle("a", ConnectRequested(1, net.address_of["b"]))
    [(_, dial)] = net.dials
    a_link, _ = net.complete_dial("a", dial)
    net.settle()

    net.sever(("a", a_link))
    assert [net.did("b")] == [e.did for e in net.of("a", PeerDisconnected)]
    delays = redial_delays(net, "a", 7)
    for attempt, delay in enumerate(delays, start=1):
        bound = backoff_bound(attempt)
        assert bound / 2 <= delay <= bound, (attempt, delay)
    assert sorted(delays[:4]) == delays[:4], "the delay grows until it reaches the cap"
    assert 8 == len(net.of("a", Dial))
    assert [(net.address_of["b"], net.did("b"))] == net.cores["a"].wanted()


def test_backoff_is_jittered_across_seeds() -> None:
    first_delays = set()
    for seed in range(6):
        net, a_link, _ = connected(NodeConfig(reconnect_base=BASE, reconnect_max=CAP), seed=seed)
        net.sever(("a", a_link))
        deadline = net.cores["a"].next_deadline()
        assert deadline is not None
        first_delays.add(deadline - net.now)
    assert len(first_delays) > 1


def test_successful_redial_resets_the_backoff() -> None:
    net, a_link, _ = connected(NodeConfig(reconnect_base=BASE, reconnect_max=CAP))
    net.sever(("a", a_link))
    redial_delays(net, "a", 4)
    net.fire("a")
    [(_, dial)] = net.dials
    a_link, _ = net.complete_dial("a", dial)
    net.settle()
    assert 2 == len(net.of("a", PeerConnected))
    assert net.now + net.config.link.keepalive_interval == net.cores["a"].next_deadline()
    net.sever(("a", a_link))
    deadline = net.cores["a"].next_deadline()
    assert deadline is not None
    assert BASE / 2 <= deadline - net.now <= BASE


def test_reconnect_reaches_the_peer_again() -> None:
    net, a_link, _ = connected()
    net.auto_dial = True
    net.sever(("a", a_link))
    net.run_until(net.now + 60)
    assert 2 == len(net.of("a", PeerConnected))
    assert [net.did("b")] == [p.did for p in net.cores["a"].peers(net.now)]


def test_inbound_peer_is_not_redialled() -> None:
    net, _, b_link = connected()
    net.sever(("b", b_link))
    assert [net.did("a")] == [e.did for e in net.of("b", PeerDisconnected)]
    assert net.cores["b"].next_deadline() is None
    assert [] == net.of("b", Dial)


def test_stored_peers_are_dialled_at_once_and_redialled() -> None:
    config = NodeConfig(reconnect_base=BASE, reconnect_max=CAP)
    net = Net(config)
    net.add("a")
    stored: tuple[tuple[Address, str], ...] = (
        (("192.0.2.1", 7445), make_identity(21).did),
        (("192.0.2.2", 7445), make_identity(22).did),
    )
    effects = net.handle("a", WantedPeersLoaded(stored))
    assert [a for a, _ in stored] == [d.address for d in only(effects, Dial)]
    for name, dial in list(net.dials):
        net.fail_dial(name, dial)
    assert [] == net.of("a", ConnectFinished)
    assert sorted(stored) == net.cores["a"].wanted(), "stored peers are kept after a failure"
    deadline = net.cores["a"].next_deadline()
    assert deadline is not None
    assert BASE / 2 <= deadline - net.now <= BASE
    net.run_until(net.now + BASE)
    assert 4 == len(net.of("a", Dial))


def test_stored_peer_with_a_new_identity_is_refused_and_retried() -> None:
    net = Net()
    net.add("a")
    net.add("b")
    stale = make_identity(50).did
    net.handle("a", WantedPeersLoaded(((net.address_of["b"], stale),)))
    [(_, dial)] = net.dials
    net.complete_dial("a", dial)
    net.settle()
    assert [CloseCode.UNEXPECTED_PEER] == codes(net, "a")
    assert net.cores["a"].next_deadline() is not None, "a stored peer is retried"
    assert [] == net.of("a", PeerConnected)


def test_loaded_peers_are_not_duplicated() -> None:
    net = Net()
    net.add("a")
    peer = (("192.0.2.1", 7445), make_identity(21).did)
    net.handle("a", WantedPeersLoaded((peer,)))
    assert [] == net.handle("a", WantedPeersLoaded((peer,)))


# --- disconnect and shutdown ---------------------------------------------------------------


def test_disconnect_closes_and_forgets_the_peer() -> None:
    net, _, _ = connected()
    effects = net.handle("a", DisconnectRequested(5, did=net.did("b")))
    assert [CloseCode.NORMAL] == [c.code for c in only(effects, CloseLink)]
    assert [ForgetPeer(net.address_of["b"])] == only(effects, ForgetPeer)
    assert [DisconnectFinished(5, 1, (net.address_of["b"],))] == only(effects, DisconnectFinished)
    assert [] == net.cores["a"].wanted()
    net.run_until(net.now + 600)
    assert 1 == len(net.of("a", Dial)), "a disconnected peer is not redialled"


def test_shutdown_closes_every_link_and_answers_pending_requests() -> None:
    net = Net()
    for name in ("a", "b", "c", "d"):
        net.add(name)
    net.establish("a", "b")
    net.establish("c", "a")
    net.settle()
    net.route = lambda src, dst, data: src != "d"
    net.establish("d", "a")  # still handshaking at shutdown
    net.handle("a", ConnectRequested(9, ("192.0.2.200", 7445)))  # dial outstanding
    [(_, pending_dial)] = [d for d in net.dials if d[0] == "a"]
    assert 3 == net.cores["a"].link_count()

    effects = net.handle("a", ShutdownRequested("bye"))
    closes = only(effects, CloseLink)
    assert 3 == len(closes)
    assert {(CloseCode.SHUTDOWN, "bye")} == {(c.code, c.reason) for c in closes}
    assert [ConnectFinished(9, None, "bye")] == only(effects, ConnectFinished)
    assert 0 == net.cores["a"].link_count()
    assert [] == net.cores["a"].peers(net.now)
    assert net.cores["a"].next_deadline() is None

    # Nothing new starts afterwards.
    net.fail_dial("a", pending_dial)
    assert net.cores["a"].next_deadline() is None
    late = net.cores["a"].handle(LinkEstablished(900, False, ("192.0.2.3", 1), b"\x00" * 32),
                                 net.now)
    assert [CloseCode.SHUTDOWN] == [c.code for c in only(late, CloseLink)]
    assert [ConnectFinished(10, None, "node shutting down")] == net.cores["a"].handle(
        ConnectRequested(10, net.address_of["b"]), net.now)
    net.settle()
    net.run_until(net.now + 600)
    assert 1 == len(net.of("a", Dial))


def test_shutdown_stops_stored_peer_redials() -> None:
    net = Net()
    net.add("a")
    net.handle("a", WantedPeersLoaded(((("192.0.2.1", 7445), make_identity(21).did),)))
    [(_, dial)] = net.dials
    net.fail_dial("a", dial)
    assert net.cores["a"].next_deadline() is not None
    net.handle("a", ShutdownRequested())
    assert net.cores["a"].next_deadline() is None


def test_peer_sees_the_shutdown_reason() -> None:
    net, _, _ = connected()
    net.handle("a", ShutdownRequested("maintenance"))
    net.settle()
    [gone] = net.of("b", PeerDisconnected)
    assert net.did("a") == gone.did
    assert "maintenance" in gone.reason


def test_dial_failure_for_an_unknown_dial_is_ignored() -> None:
    net = Net()
    net.add("a")
    assert [] == net.handle("a", DialFailed(12345, "whatever"))
