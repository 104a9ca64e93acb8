"""Property tests of NodeCore over the in-memory network (tests/unit/corenet.py).

State-by-input sampling in the h2 style: the handshake must succeed however the
stream is chunked and whatever the seeds; anything injected at any point of the
handshake must end in a clean close or be answered, never in an exception;
simultaneous dials and reconnect backoff keep their invariants under random timing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat.core import NodeConfig
from p2pchat.core.events import (
    CloseLink,
    ConnectFinished,
    ConnectRequested,
    DataReceived,
    Effect,
    PeerConnected,
    WantedPeersLoaded,
)
from p2pchat.errors import CloseCode
from p2pchat.wire import Frame, encode_frame
from tests.unit.corenet import Net, Solo, identities_in_order, make_identity, only
from tests.unit.wirefields import any_frame

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
#: Codes a link may close with after a peer sent something odd (or stalled because of it).
ALLOWED_CODES = {CloseCode.PROTOCOL_ERROR, CloseCode.AUTH_FAILED, CloseCode.FRAME_TOO_LARGE,
                 CloseCode.REFUSED, CloseCode.RATE_LIMITED, CloseCode.HANDSHAKE_TIMEOUT,
                 CloseCode.IDLE_TIMEOUT}


def drawn_chunker(data: st.DataObject) -> Callable[[bytes], list[bytes]]:
    """Split each delivery at points Hypothesis chooses (and shrinks)."""

    def chunk(payload: bytes) -> list[bytes]:
        cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=6), label="cuts")
        bounds = [0, *sorted(set(cuts)), len(payload)]
        return [payload[a:b] for a, b in itertools.pairwise(bounds)]

    return chunk


@SETTINGS
@given(
    data=st.data(),
    client_seed=st.integers(0, 2**32),
    server_seed=st.integers(0, 2**32),
    ids=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)).filter(lambda t: t[0] != t[1]),
    latency=st.sampled_from([0.0, 0.001, 0.05, 0.5]),
)
def test_handshake_succeeds_for_any_chunking_and_seed(
    data: st.DataObject, client_seed: int, server_seed: int, ids: tuple[int, int],
    latency: float,
) -> None:
    net = Net(latency=latency, chunker=drawn_chunker(data))
    net.add("client", make_identity(ids[0], "client"), seed=client_seed)
    net.add("server", make_identity(ids[1], "server"), seed=server_seed)
    net.handle("client", ConnectRequested(1, net.address_of["server"], net.did("server")))
    [(_, dial)] = net.dials
    net.complete_dial("client", dial)
    net.run_until(net.now + 30)

    assert [] == net.of("client", CloseLink) + net.of("server", CloseLink)
    assert [net.did("server")] == [e.did for e in net.of("client", PeerConnected)]
    assert [net.did("client")] == [e.did for e in net.of("server", PeerConnected)]
    assert [ConnectFinished(1, net.did("server"), None)] == net.of("client", ConnectFinished)


@SETTINGS
@given(
    data=st.data(),
    steps=st.integers(0, 12),
    to_server=st.booleans(),
    injected=st.one_of(any_frame().map(encode_frame), st.binary(min_size=1, max_size=80)),
)
def test_anything_injected_during_the_handshake_ends_cleanly(
    data: st.DataObject, steps: int, to_server: bool, injected: bytes
) -> None:
    net = Net(chunker=drawn_chunker(data))
    net.add("client")
    net.add("server")
    client_link, server_link = net.establish("client", "server")
    net.step(steps)  # somewhere in the handshake (or after it)
    target, link = ("server", server_link) if to_server else ("client", client_link)
    net.handle(target, DataReceived(link, injected))
    net.run_until(net.now + 60)

    closed = False
    for name in ("client", "server"):
        for close in net.of(name, CloseLink):
            closed = True
            assert close.code in ALLOWED_CODES, close
            assert close.reason
        assert len(net.open_links(name)) == net.cores[name].link_count(), "no leaked link"
    if not closed:
        assert [net.did("server")] == [e.did for e in net.of("client", PeerConnected)]
        assert [net.did("client")] == [e.did for e in net.of("server", PeerConnected)]


@SETTINGS
@given(frames=st.lists(any_frame(), min_size=1, max_size=5), data=st.data())
def test_arbitrary_frames_from_a_client_never_authenticate(
    frames: list[Frame], data: st.DataObject
) -> None:
    solo = Solo()
    solo.accept()
    stream = b"".join(encode_frame(f) for f in frames)
    effects: list[Effect] = []
    for chunk in drawn_chunker(data)(stream):
        effects += solo.feed(1, chunk)
    assert [] == only(effects, PeerConnected)
    assert [] == solo.core.peers(solo.now)


@SETTINGS
@given(
    first=st.sampled_from(["small", "big"]),
    gap=st.sampled_from([0.0, 0.0005, 0.001, 0.002, 0.01, 0.1, 1.0]),
    latency=st.sampled_from([0.0, 0.001, 0.01]),
    seeds=st.tuples(st.integers(0, 1000), st.integers(0, 1000)),
    data=st.data(),
)
def test_simultaneous_dials_always_converge(
    first: str, gap: float, latency: float, seeds: tuple[int, int], data: st.DataObject
) -> None:
    net = Net(latency=latency, chunker=drawn_chunker(data))
    small_id, big_id = identities_in_order()
    net.add("small", small_id, seed=seeds[0])
    net.add("big", big_id, seed=seeds[1])
    net.handle("small", ConnectRequested(1, net.address_of["big"]))
    net.handle("big", ConnectRequested(1, net.address_of["small"]))
    dials = dict(net.dials)
    second = "big" if first == "small" else "small"
    net.complete_dial(first, dials[first])
    net.run_until(net.now + gap)
    net.complete_dial(second, dials[second])
    net.run_until(net.now + 120)

    [small_link] = net.open_links("small")
    [big_link] = net.open_links("big")
    assert ("big", big_link) == net.peer_end("small", small_link)
    for name, other in (("small", "big"), ("big", "small")):
        assert 1 == net.cores[name].link_count()
        assert [net.did(other)] == [p.did for p in net.cores[name].peers(net.now)]
        assert {CloseCode.DUPLICATE_LINK} >= {c.code for c in net.of(name, CloseLink)}


@SETTINGS
@given(
    seed=st.integers(0, 2**32),
    base=st.sampled_from([0.01, 0.5, 1.0, 3.0]),
    factor=st.sampled_from([1, 2, 10, 100]),
    attempts=st.integers(1, 12),
)
def test_backoff_stays_within_its_bounds(
    seed: int, base: float, factor: int, attempts: int
) -> None:
    cap = base * factor
    net = Net(NodeConfig(reconnect_base=base, reconnect_max=cap))
    net.add("a", seed=seed)
    net.handle("a", WantedPeersLoaded(((("192.0.2.1", 7445), make_identity(9).did),)))
    for attempt in range(1, attempts + 1):
        [(name, dial)] = net.dials
        net.fail_dial(name, dial)
        deadline = net.cores["a"].next_deadline()
        assert deadline is not None
        bound = min(cap, base * 2 ** (attempt - 1))
        assert bound / 2 <= deadline - net.now <= bound
        net.fire("a")
