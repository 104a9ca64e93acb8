"""A raw aioquic client that speaks (or abuses) the link protocol by hand."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe

from p2pchat.core.link import link_transcript
from p2pchat.crypto import Domain, generate_secret_key
from p2pchat.identity import Identity
from p2pchat.transport.quic import (
    LINK_STREAM_ID,
    cert_fingerprint,
    client_configuration,
    peer_certificate,
    raw_ed25519_key,
)
from p2pchat.wire import Auth, Frame, FrameDecoder, Hello, encode_frame
from tests.integration.nodeproc import patience


def new_identity(name: str = "raw") -> Identity:
    return Identity(generate_secret_key(), os.urandom(16), name)


class RawClient(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.terminated: asyncio.Future[qe.ConnectionTerminated] = \
            asyncio.get_running_loop().create_future()
        self._decoder = FrameDecoder()

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived):
            for frame in self._decoder.feed(event.data):
                self.frames.put_nowait(frame)
        elif isinstance(event, qe.ConnectionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)

    def send_raw(self, data: bytes) -> None:
        self._quic.send_stream_data(LINK_STREAM_ID, data)
        self.transmit()

    def send(self, frame: Frame) -> None:
        self.send_raw(encode_frame(frame))

    async def recv(self, within: float = 5.0) -> Frame:
        return await asyncio.wait_for(self.frames.get(), patience(within))

    async def closed(self, within: float) -> qe.ConnectionTerminated:
        return await asyncio.wait_for(asyncio.shield(self.terminated), patience(within))

    @property
    def server_cert_fp(self) -> bytes:
        cert = peer_certificate(self._quic)
        assert cert is not None
        return cert_fingerprint(cert)

    @property
    def server_key(self) -> bytes:
        cert = peer_certificate(self._quic)
        assert cert is not None
        key = raw_ed25519_key(cert)
        assert key is not None
        return key

    async def authenticate(self, identity: Identity, nonce_c: bytes, server_did: str
                           ) -> tuple[Hello, Auth]:
        """Run the client side of the link handshake; returns (server hello, our proof)."""
        self.send(Hello(did=identity.did, nonce=nonce_c, name="", agent="raw"))
        hello = await self.recv()
        assert isinstance(hello, Hello) and hello.did == server_did
        assert isinstance(await self.recv(), Auth)
        proof = Auth(signature=self.proof(identity, nonce_c, hello.nonce, server_did))
        self.send(proof)
        assert "ready" == (await self.recv()).TAG
        return hello, proof

    def proof(self, identity: Identity, nonce_c: bytes, nonce_s: bytes, server_did: str) -> bytes:
        transcript = link_transcript("client", self.server_cert_fp, nonce_c, nonce_s,
                                     identity.did, server_did)
        return identity.sign(Domain.LINK, transcript)


@contextlib.asynccontextmanager
async def raw_connect(port: int) -> AsyncIterator[RawClient]:
    async with connect("127.0.0.1", port, configuration=client_configuration(idle_timeout=30.0),
                       create_protocol=RawClient) as client:
        assert isinstance(client, RawClient)
        yield client
