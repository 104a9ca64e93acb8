"""The floor: plain aioquic with p2pchat's TLS settings and nothing on top.

The server echoes every 4-byte-length-prefixed frame it receives on a stream
back on the same stream. The client dials the way the node's transport does
(fresh ``QuicConnection`` and a connected UDP socket per dial; TLS settings from
:mod:`p2pchat.transport.quic`) and drives the connection the same way too:
``send_stream_data`` + ``transmit()`` directly on the protocol, no aioquic stream
reader/writer objects. So the difference to the node is exactly the node's
work: the link DID proof, the core state machine, the msgpack frame codec and
the runtime's effect pump.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection

from p2pchat.core.events import Address
from p2pchat.errors import LocalError
from p2pchat.transport.quic import abandon_connect_waiter, client_configuration

#: The stream the client uses (its first bidirectional stream, like a link).
STREAM_ID = 0
LENGTH_PREFIX = 4
#: Refuse frames above this (the echo server only ever sees bench frames).
MAX_ECHO_FRAME = 64 * 1024


def make_frame(total_size: int) -> bytes:
    """A frame of ``total_size`` bytes on the wire, length prefix included."""
    if total_size < LENGTH_PREFIX:
        raise ValueError("frame smaller than its length prefix")
    body = bytes(i % 251 for i in range(total_size - LENGTH_PREFIX))
    return len(body).to_bytes(LENGTH_PREFIX, "big") + body


def take_frames(buffer: bytearray) -> list[bytes]:
    """Remove and return the complete frames (prefix included) at the head of ``buffer``."""
    frames = []
    while len(buffer) >= LENGTH_PREFIX:
        size = int.from_bytes(buffer[:LENGTH_PREFIX], "big")
        if size > MAX_ECHO_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds the echo limit")
        end = LENGTH_PREFIX + size
        if len(buffer) < end:
            break
        frames.append(bytes(buffer[:end]))
        del buffer[:end]
    return frames


class EchoServerProtocol(QuicConnectionProtocol):
    """Server side: echo each whole frame back on the stream it came from."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            buffer = self._buffers.setdefault(event.stream_id, bytearray())
            buffer += event.data
            try:
                frames = take_frames(buffer)
            except ValueError as exc:
                self.close(error_code=1, reason_phrase=str(exc))
                return
            for frame in frames:
                self._quic.send_stream_data(event.stream_id, frame)
            # QuicConnectionProtocol.datagram_received transmits after this returns.
        elif isinstance(event, qe.ConnectionTerminated):
            self._buffers.clear()


class EchoClientProtocol(QuicConnectionProtocol):
    """Client side: one outstanding echo at a time."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self.terminated: str | None = None

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived) and event.stream_id == STREAM_ID:
            self._buffer += event.data
            frames = take_frames(self._buffer)
            if frames and self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(frames[-1])
        elif isinstance(event, qe.ConnectionTerminated):
            self.terminated = event.reason_phrase or f"error code {event.error_code}"
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(
                    LocalError(f"raw aioquic echo connection closed: {self.terminated}"))

    async def echo(self, frame: bytes) -> bytes:
        """Send ``frame`` and wait for the echoed frame."""
        if self.terminated is not None:
            raise LocalError(f"raw aioquic echo connection closed: {self.terminated}")
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        self._waiter = waiter
        try:
            self._quic.send_stream_data(STREAM_ID, frame)
            self.transmit()
            return await waiter
        finally:
            self._waiter = None


P = TypeVar("P", bound=QuicConnectionProtocol)


async def dial_protocol(address: Address, factory: Callable[[QuicConnection], P], *,
                        idle_timeout: float, limit: float = 10.0
                        ) -> tuple[asyncio.DatagramTransport, P]:
    """A new QUIC connection on a new UDP socket, once its TLS handshake completed."""
    loop = asyncio.get_running_loop()
    conn = QuicConnection(configuration=client_configuration(idle_timeout=idle_timeout))
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: factory(conn), local_addr=("127.0.0.1", 0), remote_addr=address)
    try:
        protocol.connect(address)
        async with asyncio.timeout(limit):
            await protocol.wait_connected()
    except (TimeoutError, ConnectionError) as exc:
        abandon_connect_waiter(protocol)
        transport.close()
        raise LocalError(f"raw aioquic handshake with {address[0]}:{address[1]} failed: "
                         f"{type(exc).__name__}") from None
    except BaseException:
        abandon_connect_waiter(protocol)
        transport.close()
        raise
    return transport, protocol


class RawClient:
    """One raw aioquic client connection with its own UDP socket."""

    def __init__(self, transport: asyncio.DatagramTransport,
                 protocol: EchoClientProtocol) -> None:
        self.transport = transport
        self.protocol = protocol

    @classmethod
    async def dial(cls, address: Address, *, idle_timeout: float,
                   limit: float = 10.0) -> RawClient:
        """Connect and return once the TLS handshake completed (``wait_connected``)."""
        transport, protocol = await dial_protocol(address, EchoClientProtocol,
                                                  idle_timeout=idle_timeout, limit=limit)
        return cls(transport, protocol)

    async def close(self, limit: float = 2.0) -> None:
        """Close the connection, wait for it to drain (bounded) and release the socket."""
        try:
            self.protocol.close()
            async with asyncio.timeout(limit):
                await self.protocol.wait_closed()
        except TimeoutError:
            pass
        finally:
            self.transport.close()


async def timed_dial(address: Address, *, idle_timeout: float) -> tuple[RawClient, float]:
    """Dial and return the client with the handshake time in seconds."""
    start = time.perf_counter()
    client = await RawClient.dial(address, idle_timeout=idle_timeout)
    return client, time.perf_counter() - start
