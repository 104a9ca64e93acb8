"""The channel floor: the envelope pipeline on raw aioquic, with no node around it.

DESIGN §13 asks for the node's channel throughput and latency as ratios to "a
minimal two-process prototype (sign + encrypt + frame + aioquic + verify +
decrypt + automerge apply)" measured in the same run. This module is that
prototype, built from the :mod:`p2pchat.channel` primitives:

sender (:class:`FloorClient`, one aioquic client connection), per message
    :class:`FastAuthor` makes the Automerge change on the device's authoring
    document (``AuthoringDocument.put_entry``, as ``ChannelState.post`` does),
    packs the operation, encrypts it (XChaCha20-Poly1305, header as associated
    data) and signs it: a real envelope, byte for byte what the node sends. The
    envelope goes out in a length-prefixed frame (``send_stream_data`` +
    ``transmit()``), then the loop yields once to the event loop (as the node
    benchmark does after each ``Node.send``).
sink (:class:`FloorSinkProtocol`, in the benchmark server process), per frame
    ``decode_envelope``, Ed25519 verification (the author's key is parsed from
    its DID once and cached), decryption, msgpack, and one
    ``SharedDocument.apply`` of the change.

What the floor leaves out is exactly the node's extra work: the core, link and
frame codec, the author receiving (verifying and applying) its own envelope,
the replica's checks (change header, actor binding, causality, duplicates,
equivocation) and the fold that validates each operation against the document.

Wire format between :class:`FloorClient` and :class:`FloorSinkProtocol`, on
stream 0: frames of 4-byte big-endian length + 1 kind byte + payload.
``SETUP`` (msgpack ``[key, genesis envelope, expected count, channel id]``) is answered by
``READY``; then ``ENVELOPE`` frames; once the sink has applied the expected
count it sends ``REPORT`` (msgpack map: ``count``, ``first_ns``, ``last_ns``,
``latencies_ns``). Timestamps are ``time.monotonic_ns()``: CLOCK_MONOTONIC is
one clock for every process on the machine, so a send time the sender wrote
into the message text can be subtracted from the sink's apply time.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic import events as qe
from aioquic.quic.connection import QuicConnection

from p2pchat.bench.rawquic import STREAM_ID, dial_protocol
from p2pchat.channel.change import parse_change
from p2pchat.channel.doc import AuthoringDocument, SharedDocument
from p2pchat.channel.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    actor_id,
    associated_data,
    channel_topic,
    decode_envelope,
    envelope_id,
)
from p2pchat.channel.state import decode_operation
from p2pchat.channel.ulid import make_ulid
from p2pchat.core.events import Address
from p2pchat.crypto import Domain, PublicKey, seal, verify
from p2pchat.errors import LocalError
from p2pchat.identity import Identity, public_key_from_did

#: Characters in every benchmark message text (``"<seq> <sent_ns> "`` + filler).
TEXT_LENGTH = 64
LENGTH_PREFIX = 4
MAX_PIPELINE_FRAME = 16 * 1024 * 1024
SETUP, READY, ENVELOPE, REPORT = 1, 2, 3, 4

RandomBytes = Callable[[int], bytes]


# --- message texts ---------------------------------------------------------------------


def bench_text(seq: int, sent_ns: int) -> str:
    """A message text carrying its sequence number and send time (monotonic ns)."""
    head = f"{seq} {sent_ns} "
    return head + "x" * max(TEXT_LENGTH - len(head), 1)


def parse_bench_text(text: str) -> tuple[int, int] | None:
    """``(seq, sent_ns)`` from a :func:`bench_text`, or None for any other text."""
    parts = text.split(" ", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1])


def wall_ms() -> int:
    return int(time.time() * 1000)


def open_op(env: Envelope, key: bytes, channel: bytes) -> dict[str, Any]:
    """The decrypted operation of ``env`` (its raw change under ``"change"``)."""
    try:
        op, change = decode_operation(env.decrypt(key, channel))
    except Exception as exc:
        raise LocalError(f"benchmark envelope carries no change: {exc}") from None
    return {**op, "change": change}


# --- authoring ---------------------------------------------------------------------------


class FastAuthor:
    """Authors ``post`` envelopes for one device from the channel primitives.

    The envelopes are what ``ChannelState.post`` produces (same operation, same
    change, same sealing and signing) with two shortcuts a minimal sender may
    take: the device's DID string is computed once, and the author does not
    verify and apply its own envelope afterwards. Its dependencies are its own
    previous envelope (the genesis envelope for its first), a valid choice.
    """

    def __init__(self, identity: Identity, *, channel: bytes, key: bytes, epoch: bytes,
                 genesis: Envelope, randbytes: RandomBytes = os.urandom) -> None:
        self._identity = identity
        self._did = identity.did
        self._device = identity.device_salt
        self._channel = channel
        self._key = key
        self._epoch = epoch
        self._rand = randbytes
        self._doc = AuthoringDocument(actor_id(self._did, self._device))
        self._doc.apply(open_op(genesis, key, channel)["change"])
        self._topic = channel_topic(channel)
        self._author_key = identity.public_key.raw
        self._prev = genesis.id
        self._prev_epoch = genesis.epoch
        self._seq: int | None = None

    def post(self, text: str, now_ms: int) -> tuple[bytes, bytes]:
        """A new message: ``(encoded envelope, envelope id)``."""
        msg_id = make_ulid(now_ms, self._rand(10))
        change = self._doc.put_entry("messages", msg_id, {
            "author": self._did, "text": text, "reply_to": "", "deleted": False})
        if self._seq is None:
            self._seq = parse_change(change).seq
        else:
            self._seq += 1
        # the text rides in the operation too, so the sink reads the send time cheaply
        plaintext = msgpack.packb([change, {"op": "post", "id": msg_id, "text": text,
                                            "ts": now_ms}], use_bin_type=True)
        # wire v2: the previous envelope is the implicit dependency (the genesis, for
        # the first, is named explicitly); the epoch is elided once it repeats
        first = self._seq == 1
        deps: tuple[bytes, ...] = (self._prev,) if first else ()
        epoch = self._epoch if first or self._epoch != self._prev_epoch else None
        nonce = self._rand(24)
        aad = associated_data(self._channel, self._author_key, self._device, self._seq, deps,
                              epoch)
        ciphertext = seal(self._key, nonce, plaintext, aad)
        signed: bytes = msgpack.packb([ENVELOPE_VERSION, self._author_key, self._device,
                                       self._seq, list(deps), epoch, nonce, ciphertext],
                                      use_bin_type=True)
        signature = self._identity.sign(Domain.ENVELOPE, self._topic + signed)
        self._prev = envelope_id(self._topic, signed)
        self._prev_epoch = self._epoch
        return signed + signature, self._prev


# --- pacing ------------------------------------------------------------------------------


async def drive(count: int, send_one: Callable[[int], Awaitable[None]],
                rate: float | None = None, window: int = 1) -> float:
    """Call ``send_one(0..count-1)``; returns the seconds it took.

    ``rate=None``: back to back, yielding to the event loop once after each
    message (so the transport can take its acknowledgements). Otherwise open
    loop at ``rate`` messages per second: message i is due at ``start + i/rate``
    and goes at once if the loop is behind; nothing is skipped. ``window``: how
    many calls may be in flight at once (1: each is awaited before the next, as
    a script calling ``send`` in a loop; more: as an app that does not wait for
    one message to be stored before it hands over the next).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    interval = 0.0 if rate is None else 1.0 / rate
    slots = asyncio.Semaphore(window)
    running: set[asyncio.Task[None]] = set()

    async def windowed(i: int) -> None:
        try:
            await send_one(i)
        finally:
            slots.release()

    try:
        for i in range(count):
            if rate is not None:
                delay = start + i * interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if window == 1:
                await send_one(i)
            else:
                await slots.acquire()
                task = asyncio.create_task(windowed(i))
                running.add(task)
                task.add_done_callback(running.discard)
            if rate is None:
                await asyncio.sleep(0)
        await asyncio.gather(*running)  # a failed send fails the run
    finally:
        for task in running:
            task.cancel()
    return loop.time() - start


# --- framing -------------------------------------------------------------------------------


def pipeline_frame(kind: int, payload: bytes) -> bytes:
    return (len(payload) + 1).to_bytes(LENGTH_PREFIX, "big") + bytes((kind,)) + payload


def take_pipeline_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Remove and return the complete ``(kind, payload)`` frames at the head of ``buffer``."""
    frames = []
    while len(buffer) >= LENGTH_PREFIX:
        size = int.from_bytes(buffer[:LENGTH_PREFIX], "big")
        if not 1 <= size <= MAX_PIPELINE_FRAME:
            raise ValueError(f"pipeline frame of {size} bytes")
        end = LENGTH_PREFIX + size
        if len(buffer) < end:
            break
        frames.append((buffer[LENGTH_PREFIX], bytes(buffer[LENGTH_PREFIX + 1:end])))
        del buffer[:end]
    return frames


# --- sink (server side) ----------------------------------------------------------------------


class _Sink:
    """One run's receiving state: verify, decrypt, apply; record apply times."""

    def __init__(self, key: bytes, genesis: bytes, expected: int, channel: bytes) -> None:
        self.key = key
        self.expected = expected
        self.doc = SharedDocument()
        self.authors: dict[str, PublicKey] = {}
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies: list[int] = []
        self.channel = channel
        self.topic = channel_topic(channel)
        env = self.verified(genesis)
        self.doc.apply(open_op(env, key, channel)["change"])

    def verified(self, data: bytes) -> Envelope:
        env = decode_envelope(data, self.topic)
        public = self.authors.get(env.author)
        if public is None:
            public = self.authors[env.author] = public_key_from_did(env.author)
        if not verify(public, Domain.ENVELOPE, self.topic + env.signed, env.signature):
            raise ValueError("envelope signature does not verify")
        return env

    def apply(self, data: bytes) -> bool:
        """Apply one envelope; True once the expected count is reached."""
        env = self.verified(data)
        change, op = msgpack.unpackb(env.decrypt(self.key, self.channel), raw=False)
        self.doc.apply(change)
        now = time.monotonic_ns()
        self.count += 1
        if self.count == 1:
            self.first_ns = now
        self.last_ns = now
        parsed = parse_bench_text(op.get("text", ""))
        if parsed is not None:
            self.latencies.append(now - parsed[1])
        return self.count == self.expected

    def report(self) -> bytes:
        data: bytes = msgpack.packb({"count": self.count, "first_ns": self.first_ns,
                                     "last_ns": self.last_ns, "latencies_ns": self.latencies})
        return data


class FloorSinkProtocol(QuicConnectionProtocol):
    """Server side of the floor: applies envelopes, reports when it has them all."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._buffer = bytearray()
        self._sink: _Sink | None = None

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if not isinstance(event, qe.StreamDataReceived) or event.stream_id != STREAM_ID:
            return
        self._buffer += event.data
        try:
            for kind, payload in take_pipeline_frames(self._buffer):
                self._on_frame(kind, payload)
        except Exception as exc:  # a broken run: tell the client why, not the server's log
            self.close(error_code=1, reason_phrase=f"{type(exc).__name__}: {exc}"[:200])
        # QuicConnectionProtocol.datagram_received transmits after this returns.

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind == ENVELOPE:
            if self._sink is None:
                raise ValueError("envelope before setup")
            if self._sink.apply(payload):
                self._quic.send_stream_data(STREAM_ID, pipeline_frame(REPORT, self._sink.report()))
        elif kind == SETUP:
            key, genesis, expected, channel = msgpack.unpackb(payload, raw=False)
            self._sink = _Sink(key, genesis, expected, channel)
            self._quic.send_stream_data(STREAM_ID, pipeline_frame(READY, b""))
        else:
            raise ValueError(f"unexpected pipeline frame kind {kind}")


# --- sender (client side) ----------------------------------------------------------------------


class _FloorClientProtocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._buffer = bytearray()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.report: asyncio.Future[dict[str, Any]] = self._loop.create_future()

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.StreamDataReceived) and event.stream_id == STREAM_ID:
            self._buffer += event.data
            for kind, payload in take_pipeline_frames(self._buffer):
                if kind == READY and not self.ready.done():
                    self.ready.set_result(None)
                elif kind == REPORT and not self.report.done():
                    self.report.set_result(msgpack.unpackb(payload, raw=False))
        elif isinstance(event, qe.ConnectionTerminated):
            error = LocalError("floor sink closed the connection: "
                               f"{event.reason_phrase or event.error_code}")
            for future in (self.ready, self.report):
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: whoever awaits it still gets it


class FloorClient:
    """One floor run over a fresh raw aioquic connection."""

    def __init__(self, transport: Any, protocol: _FloorClientProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    @classmethod
    async def dial(cls, address: Address, *, idle_timeout: float) -> FloorClient:
        transport, protocol = await dial_protocol(address, _FloorClientProtocol,
                                                  idle_timeout=idle_timeout)
        return cls(transport, protocol)

    def _send(self, kind: int, payload: bytes) -> None:
        self._protocol._quic.send_stream_data(STREAM_ID, pipeline_frame(kind, payload))
        self._protocol.transmit()

    async def setup(self, key: bytes, genesis: Envelope, expected: int, channel: bytes,
                    limit: float = 10.0) -> None:
        self._send(SETUP, msgpack.packb([key, genesis.encode(), expected, channel],
                                        use_bin_type=True))
        async with asyncio.timeout(limit):
            await self._protocol.ready

    async def send(self, envelope: bytes) -> None:
        self._send(ENVELOPE, envelope)

    async def report(self, limit: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(limit):
                return await self._protocol.report
        except TimeoutError:
            raise LocalError(f"floor sink did not report within {limit:g} s") from None

    async def close(self, limit: float = 2.0) -> None:
        try:
            self._protocol.close()
            async with asyncio.timeout(limit):
                await self._protocol.wait_closed()
        except TimeoutError:
            pass
        finally:
            self._transport.close()
