"""Hostile clients against a real node process, with a well-behaved peer alongside.

Each hostile client must get its link closed with a reason within the node's
configured timeout, and the node must keep serving the good peer throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable

import msgpack
import pytest

from p2pchat.errors import CloseCode
from p2pchat.wire import MAX_FRAME_SIZE, Auth, Hello, Ping
from tests.integration.nodeproc import NodeProcess, patience
from tests.integration.rawclient import RawClient, new_identity, raw_connect

pytestmark = pytest.mark.integration

#: handshake_timeout in FAST_CONFIG is 2.0 s; allow scheduling slack on a busy CI box.
CLOSE_WITHIN = 2.0 + 3.0


@pytest.fixture
def pair(spawn: Callable[..., NodeProcess]) -> tuple[NodeProcess, NodeProcess]:
    """(server, good peer): the good peer is connected to the server."""
    server = spawn("S")
    good = spawn("G")
    assert 0 == good.cli("connect", f"{server.did}@127.0.0.1:{server.port}").returncode
    return server, good


def _good_peer_still_served(server: NodeProcess, good: NodeProcess) -> None:
    result = good.cli("ping", server.did, "--json")
    assert 0 == result.returncode, result.stderr
    assert json.loads(result.stdout)["rtt_ms"] > 0
    peers = json.loads(server.cli("peers", "--json").stdout)
    assert [good.did] == [p["did"] for p in peers]


async def _expect_close(client: RawClient, code: CloseCode | set[CloseCode], text: str) -> str:
    codes = code if isinstance(code, set) else {code}
    event = await client.closed(CLOSE_WITHIN)
    assert event.error_code in {int(c) for c in codes}, event
    assert text in event.reason_phrase, event.reason_phrase
    return event.reason_phrase


def _run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(coro_fn())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "payload", "code", "text"),
    [
        ("random bytes", os.urandom(512), {CloseCode.PROTOCOL_ERROR, CloseCode.FRAME_TOO_LARGE},
         "bad frame"),
        ("random frame body", struct.pack(">I", 508) + os.urandom(508), CloseCode.PROTOCOL_ERROR,
         "bad frame"),
        ("oversized length prefix", struct.pack(">I", MAX_FRAME_SIZE + 1) + b"x" * 64,
         CloseCode.FRAME_TOO_LARGE, "length prefix"),
        ("unknown frame type", None, CloseCode.PROTOCOL_ERROR, "unknown frame type"),
        ("valid frame before authenticating", None, CloseCode.PROTOCOL_ERROR,
         "before authentication"),
    ],
)
def test_hostile_input_closes_link_with_reason(
    pair: tuple[NodeProcess, NodeProcess], name: str, payload: bytes | None,
    code: CloseCode | set[CloseCode], text: str,
) -> None:
    server, good = pair
    if name == "unknown frame type":
        body = msgpack.packb({"v": 1, "t": "launch-missiles"})
        payload = struct.pack(">I", len(body)) + body
    elif name == "valid frame before authenticating":
        from p2pchat.wire import encode_frame

        payload = encode_frame(Ping(nonce=1))
    assert payload is not None
    data = payload

    async def attack() -> None:
        async with raw_connect(server.port) as client:
            client.send_raw(data)
            await _expect_close(client, code, text)

    _run(attack)
    server.wait_log("closing link", timeout=5)
    _good_peer_still_served(server, good)


def test_stall_after_tls_is_closed_at_handshake_timeout(
    pair: tuple[NodeProcess, NodeProcess],
) -> None:
    server, good = pair

    async def stall() -> None:
        async with raw_connect(server.port) as client:
            await _expect_close(client, CloseCode.HANDSHAKE_TIMEOUT, "handshake not finished")

    _run(stall)
    _good_peer_still_served(server, good)


def test_stall_mid_handshake_is_closed_at_handshake_timeout(
    pair: tuple[NodeProcess, NodeProcess],
) -> None:
    server, good = pair
    me = new_identity()

    async def stall() -> None:
        async with raw_connect(server.port) as client:
            client.send(Hello(did=me.did, nonce=os.urandom(32), name="", agent="raw"))
            assert isinstance(await client.recv(), Hello)
            assert isinstance(await client.recv(), Auth)
            # ...and never send our Auth
            reason = await _expect_close(client, CloseCode.HANDSHAKE_TIMEOUT, "await-auth")
            assert "2 s" in reason

    _run(stall)
    _good_peer_still_served(server, good)


def test_stall_in_tls_handshake_is_dropped(pair: tuple[NodeProcess, NodeProcess]) -> None:
    """A client that sends one QUIC Initial and then goes silent."""
    server, good = pair
    from aioquic.quic.connection import QuicConnection

    from p2pchat.transport.quic import client_configuration

    conn = QuicConnection(configuration=client_configuration(idle_timeout=30.0))
    conn.connect(("127.0.0.1", server.port), now=0.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for datagram, addr in conn.datagrams_to_send(now=0.0):
            sock.sendto(datagram, addr)
        sock.settimeout(patience(CLOSE_WITHIN))
        assert sock.recv(65536)  # the server answered our Initial...
        # ...and, with no reply from us, gives the connection up at the handshake timeout.
        server.wait_log("TLS handshake not done within 2 s", timeout=CLOSE_WITHIN)
    _good_peer_still_served(server, good)


def test_replayed_proof_is_rejected(pair: tuple[NodeProcess, NodeProcess]) -> None:
    """A proof captured from one session and replayed into another fails."""
    server, good = pair
    me = new_identity("replayer")
    nonce_c = os.urandom(32)

    async def replay() -> None:
        async with raw_connect(server.port) as first:
            # the genuine proof works in its own session
            hello, captured = await first.authenticate(me, nonce_c, server.did)
        async with raw_connect(server.port) as second:
            second.send(Hello(did=me.did, nonce=nonce_c, name="", agent="raw"))
            hello2 = await second.recv()
            assert isinstance(hello2, Hello)
            assert hello2.nonce != hello.nonce
            await second.recv()
            second.send(captured)  # same client nonce, same DID: only the session differs
            await _expect_close(second, CloseCode.AUTH_FAILED, "does not verify")

    _run(replay)
    _good_peer_still_served(server, good)


def test_unexpected_stream_is_refused(pair: tuple[NodeProcess, NodeProcess]) -> None:
    server, good = pair

    async def other_stream() -> None:
        async with raw_connect(server.port) as client:
            client._quic.send_stream_data(4, b"hello?")
            client.transmit()
            await _expect_close(client, CloseCode.PROTOCOL_ERROR, "unexpected stream")

    _run(other_stream)
    _good_peer_still_served(server, good)
