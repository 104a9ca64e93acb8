"""Transport conformance: every adapter of :class:`p2pchat.transport.port.Transport` keeps
the contract in that module's docstring, over real loopback sockets.

Each test runs once per adapter in :data:`ADAPTERS` (aioquic today; the next speed
work adds qh3). Nothing sleeps to see whether something happened: a test waits,
with a deadline, until what it expects has been reported (:meth:`Peer.until`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from p2pchat.core.events import Address
from p2pchat.crypto import public_key_from_bytes
from p2pchat.errors import CloseCode, LocalError
from p2pchat.identity import Identity, did_from_public_key
from p2pchat.transport.port import Transport, TransportFactory
from p2pchat.transport.quic import QuicTransport
from p2pchat.wire import MAX_FRAME_SIZE
from tests.unit.corenet import make_identity

T = TypeVar("T")
ADAPTERS: dict[str, TransportFactory] = {"aioquic": QuicTransport}
#: how long a test waits for what it expects (generous: the machine may be loaded)
WITHIN = 10.0


@dataclass
class Established:
    link_id: int
    outbound: bool
    address: Address
    cert_fingerprint: bytes
    peer_cert_key: bytes | None
    dial_id: int | None


@dataclass
class Peer:
    """One transport and everything it reported, with a way to wait for more."""

    identity: Identity
    changed: asyncio.Event
    transport: Transport = field(init=False)
    address: Address = ("", 0)
    links: list[Established] = field(default_factory=list)
    received: dict[int, bytearray] = field(default_factory=dict)
    lost: dict[int, list[str]] = field(default_factory=dict)
    failed: list[tuple[int, str]] = field(default_factory=list)

    # LinkEvents
    def established(self, link_id: int, outbound: bool, address: Address,
                    cert_fingerprint: bytes, peer_cert_key: bytes | None,
                    dial_id: int | None) -> None:
        self.links.append(Established(link_id, outbound, address, cert_fingerprint,
                                      peer_cert_key, dial_id))
        self.changed.set()

    def data(self, link_id: int, data: bytes) -> None:
        self.received.setdefault(link_id, bytearray()).extend(data)
        self.changed.set()

    def lost_link(self, link_id: int, reason: str) -> None:
        self.lost.setdefault(link_id, []).append(reason)
        self.changed.set()

    def dial_failed(self, dial_id: int, reason: str) -> None:
        self.failed.append((dial_id, reason))
        self.changed.set()

    async def until(self, predicate: Callable[[], object], what: str) -> None:
        """Wait until ``predicate()`` holds, looking again after every report of any peer
        sharing this one's ``changed`` event."""
        try:
            async with asyncio.timeout(WITHIN):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {WITHIN:g} s: {what}") from None

    def link(self) -> int:
        [link] = self.links
        return link.link_id


class _Sink:
    """The LinkEvents a transport is given (``lost`` is a method name on Peer too)."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer

    def established(self, link_id: int, outbound: bool, address: Address,
                    cert_fingerprint: bytes, peer_cert_key: bytes | None,
                    dial_id: int | None) -> None:
        self.peer.established(link_id, outbound, address, cert_fingerprint, peer_cert_key,
                              dial_id)

    def data(self, link_id: int, data: bytes) -> None:
        self.peer.data(link_id, data)

    def lost(self, link_id: int, reason: str) -> None:
        self.peer.lost_link(link_id, reason)


@pytest.fixture(params=sorted(ADAPTERS))
def factory(request: pytest.FixtureRequest) -> TransportFactory:
    return ADAPTERS[str(request.param)]


@asynccontextmanager
async def peers(factory: TransportFactory, count: int = 2, *, listen: bool = True,
                handshake_timeout: float = 5.0) -> AsyncIterator[list[Peer]]:
    changed = asyncio.Event()  # shared: any report wakes every waiter
    made = []
    for i in range(count):
        peer = Peer(make_identity(i + 1, f"peer{i}"), changed)
        peer.transport = factory(peer.identity, _Sink(peer), handshake_timeout=handshake_timeout,
                                 idle_timeout=30.0)
        made.append(peer)
    try:
        if listen:
            for peer in made:
                peer.address = await peer.transport.listen("127.0.0.1", 0)
        yield made
    finally:
        for peer in made:
            await peer.transport.stop()


async def linked(a: Peer, b: Peer, dial_id: int = 1) -> tuple[int, int]:
    """Dial b from a; the link id at each end once both have it."""
    a.transport.dial(dial_id, b.address, 5.0, a.dial_failed)
    await a.until(lambda: (a.links and b.links) or a.failed, "a link at both ends")
    assert [] == a.failed
    return a.link(), b.link()


def run(factory: TransportFactory, body: Callable[[list[Peer]], Awaitable[T]],
        count: int = 2) -> T:
    async def main() -> T:
        async with peers(factory, count) as made:
            return await body(made)

    return asyncio.run(main())


# --- links ---------------------------------------------------------------------------------


def test_a_dial_establishes_a_link_at_both_ends(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        a, b = made
        await linked(a, b, dial_id=7)
        [out], [inc] = a.links, b.links
        assert (True, 7, b.address) == (out.outbound, out.dial_id, out.address)
        assert (False, None, None) == (inc.outbound, inc.dial_id, inc.peer_cert_key)
        assert "127.0.0.1" == inc.address[0] and isinstance(inc.address[1], int)
        assert out.cert_fingerprint == inc.cert_fingerprint, "both bind to b's certificate"
        assert len(out.cert_fingerprint) == 32
        assert [] == a.failed

    run(factory, body)


def test_the_dialer_learns_the_listeners_key_so_a_wrong_did_shows(
        factory: TransportFactory) -> None:
    """The key the handshake proved names the listener: a dial that expected another
    DID at that address sees the mismatch (the core then closes, UNEXPECTED_PEER)."""
    async def body(made: list[Peer]) -> None:
        a, b, c = made
        await linked(a, b)
        a.transport.dial(2, c.address, 5.0, a.dial_failed)
        await a.until(lambda: len(a.links) == 2 and c.links, "a second link")
        for link, listener, other in ((a.links[0], b, c), (a.links[1], c, b)):
            assert link.peer_cert_key is not None
            did = did_from_public_key(public_key_from_bytes(link.peer_cert_key))
            assert listener.identity.did == did
            assert other.identity.did != did
        assert a.links[0].cert_fingerprint != a.links[1].cert_fingerprint
        assert a.links[0].link_id != a.links[1].link_id

    run(factory, body, count=3)


def test_bytes_flow_both_ways_in_order(factory: TransportFactory) -> None:
    chunks = [bytes([i % 251]) * (1 + (i * 37) % 3000) for i in range(300)]

    async def body(made: list[Peer]) -> None:
        a, b = made
        at_a, at_b = await linked(a, b)
        a.transport.send(at_a, b"hello")  # the dialer speaks first
        a.transport.flush()
        await b.until(lambda: at_b in b.received, "the dialer's first bytes")
        for i, chunk in enumerate(chunks):
            a.transport.send(at_a, chunk)
            b.transport.send(at_b, chunk[::-1])
            if i % 7 == 0:  # flushes of one frame and of many
                a.transport.flush()
                b.transport.flush()
        a.transport.flush()
        b.transport.flush()
        size = sum(map(len, chunks))
        await a.until(lambda: len(b.received.get(at_b, b"")) >= size + 5
                      and len(a.received.get(at_a, b"")) >= size, "every byte both ways")
        assert b"hello" + b"".join(chunks) == bytes(b.received[at_b])
        assert b"".join(c[::-1] for c in chunks) == bytes(a.received[at_a])

    run(factory, body)


def test_a_frame_at_the_size_limit_arrives_whole(factory: TransportFactory) -> None:
    frame = MAX_FRAME_SIZE.to_bytes(4, "big") + bytes(range(256)) * (
        MAX_FRAME_SIZE // 256)

    async def body(made: list[Peer]) -> None:
        a, b = made
        at_a, at_b = await linked(a, b)
        a.transport.send(at_a, frame)
        a.transport.send(at_a, b"after")
        backlog = a.transport.backlog(at_a)
        assert backlog is not None and backlog >= len(frame), "queued bytes count"
        a.transport.flush()
        await b.until(lambda: len(b.received.get(at_b, b"")) >= len(frame) + 5,
                      "the whole frame")
        assert frame + b"after" == bytes(b.received[at_b])

    run(factory, body)


# --- closing -------------------------------------------------------------------------------


def test_a_close_reason_reaches_the_peer_and_the_closer_hears_nothing(
        factory: TransportFactory) -> None:
    async def main() -> tuple[Peer, Peer, int, int]:
        async with peers(factory) as (a, b):
            at_a, at_b = await linked(a, b)
            a.transport.close(at_a, CloseCode.DUPLICATE_LINK, "duplicate link, keeping the other")
            await b.until(lambda: at_b in b.lost, "b told of the close")
            a.transport.send(at_a, b"ignored")  # a send on a closed link is ignored
            a.transport.flush()
            assert None is a.transport.backlog(at_a)
            return a, b, at_a, at_b

    a, b, _, at_b = asyncio.run(main())
    [reason] = b.lost[at_b]
    assert "duplicate link, keeping the other" in reason
    assert {} == a.lost, "the closer is not told of its own close, even after stop"
    assert b"ignored" not in b.received.get(at_b, b"")


def test_stop_closes_every_link_and_peers_hear_it(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        a, b, c = made
        await linked(b, a)
        c.transport.dial(1, a.address, 5.0, c.dial_failed)
        await a.until(lambda: len(a.links) == 2 and c.links, "two links to a")
        await a.transport.stop()
        await a.until(lambda: b.lost and c.lost, "both peers told")
        assert all(len(reasons) == 1 for reasons in [*b.lost.values(), *c.lost.values()])
        assert {} == a.lost

    run(factory, body, count=3)


def test_sends_to_unknown_links_are_ignored(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        [a] = made
        a.transport.send(99, b"nobody")
        a.transport.flush()
        a.transport.close(99, CloseCode.NORMAL, "nobody")
        assert None is a.transport.backlog(99)
        assert not a.transport.lagging(asyncio.get_running_loop().time() + 60.0)

    run(factory, body, count=1)


# --- failing dials and listens -------------------------------------------------------------


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dial_to_a_closed_port_fails_once(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        [a] = made
        a.transport.dial(3, ("127.0.0.1", _free_udp_port()), 5.0, a.dial_failed)
        await a.until(lambda: a.failed, "the dial reported failed")
        [(dial_id, reason)] = a.failed
        assert 3 == dial_id and reason
        assert [] == a.links

    run(factory, body, count=1)


def test_a_dial_nobody_answers_fails_at_its_timeout(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        [a] = made
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            loop = asyncio.get_running_loop()
            started = loop.time()
            a.transport.dial(4, ("127.0.0.1", silent.getsockname()[1]), 0.3, a.dial_failed)
            await a.until(lambda: a.failed, "the dial reported failed")
            assert loop.time() - started >= 0.3
        [(dial_id, reason)] = a.failed
        assert 4 == dial_id and reason
        assert [] == a.links

    run(factory, body, count=1)


def test_a_dial_to_an_unresolvable_name_fails(factory: TransportFactory) -> None:
    async def body(made: list[Peer]) -> None:
        [a] = made
        a.transport.dial(5, ("no-such-host.invalid", 7445), 5.0, a.dial_failed)
        await a.until(lambda: a.failed, "the dial reported failed")
        assert 5 == a.failed[0][0] and a.failed[0][1]

    run(factory, body, count=1)


def test_listening_on_a_taken_port_is_a_local_error(factory: TransportFactory) -> None:
    async def main() -> None:
        async with peers(factory, 1) as [a], peers(factory, 1, listen=False) as [b]:
            with pytest.raises(LocalError, match="cannot listen on"):
                await b.transport.listen(*a.address)

    asyncio.run(main())
