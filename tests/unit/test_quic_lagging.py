"""QuicTransport.lagging over a real loopback QUIC link: a peer that has not acknowledged
what was sent to it longer ago than its round trip plus LAG_SLACK lags; one that has
acknowledged everything does not. (The runtime lets a burst of posts wait for such a
peer so the posts share an envelope.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from p2pchat.transport.quic import QuicTransport
from tests.unit.corenet import make_identity


class _Sink:
    def __init__(self, changed: asyncio.Event) -> None:
        self.links: dict[int, asyncio.Event] = {}
        self.received: dict[int, int] = {}
        self.changed = changed  # shared by both ends: anything happened

    def established(self, link_id: int, outbound: bool, address: object,
                    cert_fingerprint: bytes, peer_cert_key: bytes | None,
                    dial_id: int | None) -> None:
        self.links[link_id] = asyncio.Event()
        self.changed.set()

    def data(self, link_id: int, data: bytes) -> None:
        self.received[link_id] = self.received.get(link_id, 0) + len(data)
        self.changed.set()

    def lost(self, link_id: int, reason: str) -> None:
        self.changed.set()


async def _until(sink: _Sink, predicate: Callable[[], object], within: float = 5.0
                 ) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            sink.changed.clear()
            await sink.changed.wait()


def test_a_peer_lags_until_it_acknowledges() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        a_sink, b_sink = _Sink(changed), _Sink(changed)
        a = QuicTransport(make_identity(1, "a"), a_sink, handshake_timeout=5.0,
                          idle_timeout=30.0)
        b = QuicTransport(make_identity(2, "b"), b_sink, handshake_timeout=5.0,
                          idle_timeout=30.0)
        try:
            address = await b.listen("127.0.0.1", 0)
            a.dial(1, address, 5.0, lambda *args: None)
            await _until(a_sink, lambda: a_sink.links and b_sink.links)
            [link] = a_sink.links
            assert not a.lagging(loop.time()), "nothing sent yet"
            a.send(link, b"x" * 2_000)
            a.flush()
            # not acknowledged yet (b's side has not run): lagging once the slack is over
            now = loop.time()
            assert not a.lagging(now)
            assert a.lagging(now + 1.0)
            await _until(b_sink, lambda: sum(b_sink.received.values()) >= 2_000)

            # every datagram A takes (ACKs included) is an event: look again after each
            proto = a._links[link]
            take = proto.datagram_received

            def taken(data: bytes | str, addr: object) -> None:
                take(data, addr)
                changed.set()

            proto.datagram_received = taken  # type: ignore[method-assign]
            await _until(a_sink, lambda: not a.lagging(loop.time() + 1.0))
            assert not a.lagging(loop.time() + 1.0), "everything was acknowledged"
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())
