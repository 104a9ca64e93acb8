"""aioquic adapter: QUIC connections carrying one link stream each.

The adapter of the transport port (:mod:`p2pchat.transport.port`). This is a
thin pump (aioquic ``transmit()`` style): it turns QUIC events into calls on a
:class:`~p2pchat.transport.port.LinkEvents` sink (``established``, ``data``,
``lost``) and carries out ``send``/``close``/``dial`` for the runtime. Protocol decisions live
in :mod:`p2pchat.core`; foreign exceptions are translated here.

The TLS certificate is self-signed with the node's Ed25519 identity key, so the
QUIC handshake proves the server's DID (DESIGN §12). Clients run with
``CERT_NONE`` (there is no CA) and read the server certificate after the
handshake; aioquic still checks the CertificateVerify signature against it.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import (
    QuicServer,
    serve,
)
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from p2pchat.core.events import Address
from p2pchat.errors import CloseCode, LocalError
from p2pchat.identity import Identity
from p2pchat.transport.port import LinkEvents, Transport, TransportFactory

log = logging.getLogger("p2pchat.transport")

ALPN = "p2pchat/1"
#: The one stream a link uses: the client's first bidirectional stream.
LINK_STREAM_ID = 0
#: QUIC connections still in the TLS handshake at once; more Initials are dropped.
MAX_PENDING_HANDSHAKES = 64
#: Bytes written to a link but not yet acknowledged by the peer before we give up on it.
#: aioquic's stream writers have no backpressure, so this bounds memory per slow peer.
MAX_UNACKED_SEND_BYTES = 8 * 1024 * 1024
#: A peer is *lagging* if data sent to it this long (s) plus its minimum round trip ago
#: is still unacknowledged (aioquic acknowledges within 1 ms when it is not busy).
LAG_SLACK = 0.002
#: Flushes per link whose acknowledgement is tracked (older ones are not).
MAX_TRACKED_FLUSHES = 4096
CERT_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True)
class Certificate:
    certificate: x509.Certificate
    private_key: Ed25519PrivateKey
    fingerprint: bytes


def make_certificate(identity: Identity) -> Certificate:
    """A fresh self-signed certificate whose key is the identity key."""
    key = Ed25519PrivateKey.from_private_bytes(identity.secret_key.seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.did)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
        .sign(key, None)
    )
    return Certificate(cert, key, cert_fingerprint(cert))


def cert_fingerprint(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def server_configuration(cert: Certificate, *, idle_timeout: float) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[ALPN],
        certificate=cert.certificate,
        private_key=cert.private_key,
        idle_timeout=idle_timeout,
    )


def client_configuration(*, idle_timeout: float) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=True,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,  # no CA: the DID is checked against the cert key
        server_name="p2pchat",
        idle_timeout=idle_timeout,
    )


def peer_certificate(quic: QuicConnection) -> x509.Certificate | None:
    """The server certificate a client saw. aioquic exposes it only privately."""
    return cast(x509.Certificate | None, getattr(quic.tls, "_peer_certificate", None))


def raw_ed25519_key(cert: x509.Certificate) -> bytes | None:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        return None
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def abandon_connect_waiter(protocol: QuicConnectionProtocol) -> None:
    """After a dial stopped waiting for its handshake (timeout, cancel): aioquic awaits
    ``wait_connected`` through ``asyncio.shield``, so the inner future outlives us and,
    when the connection then terminates, gets a ConnectionError nobody retrieves
    ("Future exception was never retrieved" on stderr). Retrieve it when it comes."""
    waiter = getattr(protocol, "_connected_waiter", None)  # aioquic 1.x private
    if isinstance(waiter, asyncio.Future):
        waiter.add_done_callback(lambda f: None if f.cancelled() else f.exception())


def unacked_bytes(quic: QuicConnection) -> int:
    """Bytes buffered on the link stream awaiting acknowledgement (aioquic internals)."""
    stream = quic._streams.get(LINK_STREAM_ID)
    if stream is None:
        return 0
    sender = stream.sender
    return int(sender._buffer_stop - sender._buffer_start)


def acked_offset(quic: QuicConnection) -> int:
    """How far into the link stream the peer has acknowledged every byte."""
    stream = quic._streams.get(LINK_STREAM_ID)
    return 0 if stream is None else int(stream.sender._buffer_start)


class _ConnectedSender:
    """Wraps a connected UDP transport so aioquic's ``sendto(data, addr)`` works."""

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.inner = transport

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self.inner.is_closing():
            self.inner.sendto(data)

    def close(self) -> None:
        self.inner.close()


async def _resolve(loop: asyncio.AbstractEventLoop, host: str, port: int
                   ) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) for ``host``; IP literals skip the resolver thread."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host}") from None
        family, _, _, _, sockaddr = infos[0]
        return int(family), tuple(sockaddr)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return int(family), (str(ip), port)


class LinkProtocol(QuicConnectionProtocol):
    """One QUIC connection = one link."""

    def __init__(self, quic: QuicConnection, *, transport: QuicTransport, dial_id: int | None,
                 address: Address | None = None, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._owner = transport
        self.dial_id = dial_id
        self.outbound = dial_id is not None
        self.address: Address | None = address
        self.link_id: int | None = None
        self.closed_reason: str | None = None
        #: why the transport failed underneath us (e.g. ICMP port unreachable)
        self.failure: str | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        #: (time, stream offset after) of each flush not yet acknowledged in full
        self.unacked_flushes: deque[tuple[float, int]] = deque()
        self.stream_end = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.outbound:
            transport = cast(asyncio.BaseTransport, _ConnectedSender(
                cast(asyncio.DatagramTransport, transport)))
        super().connection_made(transport)

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if self.address is None:
            self.address = (str(addr[0]), int(addr[1]))
            self._owner._pending_started(self)
        super().datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on our connected client socket: the peer is gone.
        if isinstance(exc, ConnectionRefusedError):
            self.failure = "peer unreachable (port closed)"
            self._owner._terminated(self, self.failure)
            self.close(CloseCode.NORMAL, "unreachable")

    def quic_event_received(self, event: qe.QuicEvent) -> None:
        if isinstance(event, qe.HandshakeCompleted):
            self._owner._handshake_completed(self, event)
        elif isinstance(event, qe.StreamDataReceived):
            self._owner._stream_data(self, event)
        elif isinstance(event, qe.ConnectionTerminated):
            # the peer chose these characters: keep them from reaching a terminal raw
            reason = "".join(c if c.isprintable() else "?" for c in event.reason_phrase[:200])
            reason = reason or "no reason given"
            who = "closed by peer" if self.closed_reason is None else "closed"
            self._owner._terminated(self, f"{who}: {reason} (code {event.error_code})")

    def start_handshake_timer(self, timeout: float) -> None:
        self._handshake_timer = asyncio.get_running_loop().call_later(
            timeout, self._handshake_timed_out, timeout)

    def stop_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _handshake_timed_out(self, timeout: float) -> None:
        self._handshake_timer = None
        if self.link_id is None:
            log.info("dropping connection from %s: TLS handshake not done within %g s",
                     self.address, timeout)
            self.shut(CloseCode.HANDSHAKE_TIMEOUT, f"TLS handshake not done within {timeout:g} s")
            self._owner._terminated(self, "TLS handshake timed out")

    def shut(self, code: int, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.close(error_code=int(code), reason_phrase=reason)


class QuicTransport:
    """Listens, dials and pumps bytes between aioquic connections and the runtime (the
    :class:`~p2pchat.transport.port.Transport` port)."""

    def __init__(self, identity: Identity, sink: LinkEvents, *, handshake_timeout: float,
                 idle_timeout: float) -> None:
        self.cert = make_certificate(identity)
        self._sink = sink
        self._handshake_timeout = handshake_timeout
        # QUIC's own idle timeout is a backstop behind the link's keepalive.
        self._quic_idle = idle_timeout + 5.0
        self._server: QuicServer | None = None
        self._links: dict[int, LinkProtocol] = {}
        self._pending: set[LinkProtocol] = set()
        self._next_link_id = 1
        self.listen_address: Address | None = None
        self._dial_tasks: set[asyncio.Task[None]] = set()
        #: frames per connection not yet handed to aioquic (see send/flush)
        self._outbox: dict[LinkProtocol, bytearray] = {}
        #: client sockets still open (each outbound link owns its UDP socket)
        self._client_sockets: set[asyncio.BaseTransport] = set()

    # --- listening ----------------------------------------------------------------

    async def listen(self, host: str, port: int) -> Address:
        config = server_configuration(self.cert, idle_timeout=self._quic_idle)

        def factory(quic: QuicConnection, **kwargs: Any) -> LinkProtocol:
            return LinkProtocol(quic, transport=self, dial_id=None, **kwargs)

        try:
            self._server = await serve(host, port, configuration=config, create_protocol=factory)
        except OSError as exc:
            raise LocalError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sock = self._server._transport.get_extra_info("socket") if self._server._transport \
            else None
        bound = sock.getsockname() if sock is not None else (host, port)
        self.listen_address = (str(bound[0]), int(bound[1]))
        return self.listen_address

    def _pending_started(self, proto: LinkProtocol) -> None:
        if proto.outbound:
            return
        if len(self._pending) >= MAX_PENDING_HANDSHAKES:
            proto.shut(CloseCode.REFUSED, "too many handshakes in progress")
            return
        self._pending.add(proto)
        proto.start_handshake_timer(self._handshake_timeout)

    # --- dialing ------------------------------------------------------------------

    def dial(self, dial_id: int, address: Address, timeout: float,
             on_failed: Callable[[int, str], None]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._dial(dial_id, address, timeout, on_failed))
        self._dial_tasks.add(task)
        task.add_done_callback(self._dial_tasks.discard)

    async def _dial(self, dial_id: int, address: Address, limit: float,
                    on_failed: Callable[[int, str], None]) -> None:
        loop = asyncio.get_running_loop()
        host, port = address
        proto: LinkProtocol | None = None
        try:
            async with asyncio.timeout(limit):
                family, sockaddr = await _resolve(loop, host, port)
                conn = QuicConnection(configuration=client_configuration(
                    idle_timeout=self._quic_idle))
                udp, proto = await loop.create_datagram_endpoint(
                    lambda: LinkProtocol(conn, transport=self, dial_id=dial_id, address=address),
                    remote_addr=cast(tuple[str, int], sockaddr[:2]), family=family,
                )
                self._client_sockets.add(udp)
                proto.connect(sockaddr)
                await proto.wait_connected()
        except asyncio.CancelledError:
            self._abandon(proto, CloseCode.SHUTDOWN, "node shutting down")
            raise
        except TimeoutError:
            self._abandon(proto, CloseCode.HANDSHAKE_TIMEOUT, "dial timed out")
            on_failed(dial_id, f"no answer within {limit:g} s")
        except (OSError, ConnectionError) as exc:
            reason = (proto.failure if proto is not None else None) or \
                getattr(exc, "strerror", None) or str(exc) or "connection failed"
            self._abandon(proto, CloseCode.NORMAL, "dial failed")
            on_failed(dial_id, reason)

    def _abandon(self, proto: LinkProtocol | None, code: CloseCode, reason: str) -> None:
        if proto is None:
            return
        abandon_connect_waiter(proto)
        proto.shut(code, reason)
        proto.closed_reason = reason
        if proto.link_id is None:
            self._close_socket(proto)

    # --- QUIC events --------------------------------------------------------------

    def _handshake_completed(self, proto: LinkProtocol, event: qe.HandshakeCompleted) -> None:
        proto.stop_handshake_timer()
        self._pending.discard(proto)
        if event.alpn_protocol != ALPN:
            proto.shut(CloseCode.PROTOCOL_ERROR, f"ALPN must be {ALPN}")
            return
        peer_key: bytes | None = None
        if proto.outbound:
            cert = peer_certificate(proto._quic)
            if cert is None:
                proto.shut(CloseCode.AUTH_FAILED, "no server certificate")
                return
            fingerprint = cert_fingerprint(cert)
            peer_key = raw_ed25519_key(cert) or b""
        else:
            fingerprint = self.cert.fingerprint
        link_id = self._next_link_id
        self._next_link_id += 1
        proto.link_id = link_id
        self._links[link_id] = proto
        assert proto.address is not None
        self._sink.established(link_id, proto.outbound, proto.address, fingerprint, peer_key,
                               proto.dial_id)

    def _stream_data(self, proto: LinkProtocol, event: qe.StreamDataReceived) -> None:
        if proto.link_id is None or proto.closed_reason is not None:
            return
        if event.stream_id != LINK_STREAM_ID:
            reason = f"unexpected stream {event.stream_id}"
            self.close(proto.link_id, CloseCode.PROTOCOL_ERROR, reason)
            self._sink.lost(proto.link_id, reason)
            return
        if event.data:
            self._sink.data(proto.link_id, event.data)
        if event.end_stream and proto.link_id in self._links:
            link_id = proto.link_id
            self.close(link_id, CloseCode.NORMAL, "link stream ended")
            self._sink.lost(link_id, "peer ended the link stream")

    def _terminated(self, proto: LinkProtocol, reason: str) -> None:
        proto.stop_handshake_timer()
        self._pending.discard(proto)
        if proto.link_id is not None and self._links.pop(proto.link_id, None) is not None:
            self._sink.lost(proto.link_id, reason)
        if proto.outbound:
            self._close_socket(proto)

    # --- commands -----------------------------------------------------------------

    def backlog(self, link_id: int) -> int | None:
        """Bytes written to a link and not yet acknowledged by the peer, including those
        still in the outbox (None: no such link). Lets a caller pace bulk writes below
        MAX_UNACKED_SEND_BYTES."""
        proto = self._links.get(link_id)
        return None if proto is None else self._backlog_of(proto)

    def _backlog_of(self, proto: LinkProtocol) -> int:
        queued = self._outbox.get(proto)
        return unacked_bytes(proto._quic) + (len(queued) if queued is not None else 0)

    def send(self, link_id: int, data: bytes) -> None:
        proto = self._links.get(link_id)
        if proto is None or proto.closed_reason is not None:
            return
        if self._backlog_of(proto) + len(data) > MAX_UNACKED_SEND_BYTES:
            reason = f"peer is not reading ({MAX_UNACKED_SEND_BYTES} bytes unacknowledged)"
            self.close(link_id, CloseCode.RATE_LIMITED, reason)
            self._sink.lost(link_id, reason)
            return
        # Held back from aioquic until flush(): aioquic transmits whatever stream data it
        # has whenever a datagram (say, an ACK) arrives, which would split a burst into
        # one packet per frame.
        queued = self._outbox.get(proto)
        if queued is None:
            self._outbox[proto] = bytearray(data)
        else:
            queued += data

    def flush(self) -> None:
        """Transmit what ``send`` queued: frames queued together share packets."""
        outbox, self._outbox = self._outbox, {}
        now = asyncio.get_running_loop().time() if outbox else 0.0
        for proto, data in outbox.items():
            if proto.closed_reason is None:
                proto._quic.send_stream_data(LINK_STREAM_ID, bytes(data))
                proto.stream_end += len(data)
                if len(proto.unacked_flushes) < MAX_TRACKED_FLUSHES:
                    proto.unacked_flushes.append((now, proto.stream_end))
                proto.transmit()

    def lagging(self, now: float) -> bool:
        """Whether some peer has not acknowledged data sent to it longer ago than its
        minimum round trip plus LAG_SLACK: it is behind (busy), not just far away."""
        for proto in self._links.values():
            flushes = proto.unacked_flushes
            if not flushes or proto.closed_reason is not None:
                continue
            acked = acked_offset(proto._quic)
            while flushes and flushes[0][1] <= acked:
                flushes.popleft()
            if not flushes:
                continue
            # before its first sample the minimum round trip is infinite: not lagging
            if now - flushes[0][0] > proto._quic._loss._rtt_min + LAG_SLACK:
                return True
        return False

    def close(self, link_id: int, code: CloseCode, reason: str) -> None:
        proto = self._links.pop(link_id, None)
        if proto is not None:
            proto.shut(code, reason)  # sends CONNECTION_CLOSE now
            if proto.outbound:
                self._close_socket(proto)

    def _close_socket(self, proto: LinkProtocol) -> None:
        """Release an outbound link's own UDP socket (its close was already sent)."""
        udp = proto._transport
        if isinstance(udp, _ConnectedSender):
            udp = udp.inner
        if udp is not None and udp in self._client_sockets:
            self._client_sockets.discard(udp)
            udp.close()

    def link_ids(self) -> list[int]:
        return list(self._links)

    async def stop(self) -> None:
        """Close every connection (the core has already sent its reasons) and the socket."""
        for task in list(self._dial_tasks):
            task.cancel()
        for proto in list(self._links.values()) + list(self._pending):
            proto.shut(CloseCode.SHUTDOWN, "node shutting down")
        self._links.clear()
        self._pending.clear()
        if self._dial_tasks:
            await asyncio.gather(*self._dial_tasks, return_exceptions=True)
        # shut() transmitted the CONNECTION_CLOSE packets synchronously
        for udp in list(self._client_sockets):
            udp.close()
        self._client_sockets.clear()
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)  # let the transports finish closing


if TYPE_CHECKING:
    def _satisfies_the_port(transport: QuicTransport) -> Transport:  # checked by mypy only
        return transport

    _FACTORY: TransportFactory = QuicTransport
