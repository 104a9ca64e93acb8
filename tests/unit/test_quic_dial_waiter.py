"""A dial that stopped waiting for its handshake leaves no "Future exception was never
retrieved" behind when aioquic later fails the shielded connect waiter."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from p2pchat.transport.quic import abandon_connect_waiter


class _Protocol:
    """What aioquic's QuicConnectionProtocol holds while a dial waits (the private
    attribute abandon_connect_waiter reaches for)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._connected_waiter: asyncio.Future[None] | None = loop.create_future()


def _unretrieved(abandon: bool) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: reports.append(context))
        proto = _Protocol(loop)
        if abandon:
            abandon_connect_waiter(proto)  # type: ignore[arg-type]
        waiter = proto._connected_waiter
        assert waiter is not None
        proto._connected_waiter = None
        waiter.set_exception(ConnectionError)  # as aioquic does on ConnectionTerminated
        turn = loop.create_future()  # queued after the waiter's done callbacks (FIFO)
        loop.call_soon(turn.set_result, None)
        await turn
        del waiter, proto
        gc.collect()

    asyncio.run(main())
    return reports


def test_abandoned_waiter_is_retrieved() -> None:
    assert [] == _unretrieved(abandon=True)


def test_without_it_asyncio_complains() -> None:
    assert any("never retrieved" in str(r.get("message")) for r in _unretrieved(abandon=False))
