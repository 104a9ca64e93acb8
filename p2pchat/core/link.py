"""One authenticated link, as an I/O-free state machine.

Theory of operation
-------------------
The transport (QUIC + TLS 1.3) has already run when a :class:`Link` is created.
The server's TLS certificate key *is* its Ed25519 identity key, so the TLS
handshake proved the server holds that key; the client learns the server's DID
from the certificate before it sends anything, and refuses a wrong one at once.

Then, on the link stream (client-opened bidirectional stream 0)::

    client                                   server
      Hello{did_c, nonce_c}          ─────►
                                     ◄─────  Hello{did_s, nonce_s}
                                     ◄─────  Auth{sig_s(transcript "server")}
      Auth{sig_c(transcript "client")} ───►
                                     ◄─────  Ready{}

``transcript(role) = msgpack([role, cert_fp, nonce_c, nonce_s, did_c, did_s])``
signed in domain ``p2pchat/v1/link``. ``cert_fp`` is SHA-256 of the server
certificate as each side saw it. A man in the middle must present its own
certificate, so the client's proof names the wrong fingerprint for the real
server; a proof captured from another session names other nonces. Either way
the proof fails and the link is closed with ``AUTH_FAILED``.

The transition table :data:`_ALLOWED` lists which frames each state accepts;
anything else is a protocol error and closes the link with a reason (h2 style).
Once ``OPEN``, link-level frames (ping/pong) are handled here and every other
frame is handed up to the node in :attr:`Link.inbox`.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum

import msgpack

from p2pchat.core.config import MAX_CLOSE_REASON_LENGTH, MAX_OUTSTANDING_PINGS, LinkConfig
from p2pchat.core.events import Address, CloseLink, Effect, Transmit, format_address
from p2pchat.crypto import Domain, verify
from p2pchat.errors import CloseCode, CodecError, IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did, short_did
from p2pchat.wire import Auth, Frame, FrameDecoder, Hello, Ping, Pong, Ready, encode_frame
from p2pchat.wire.frames import NONCE_SIZE


class LinkState(Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_AUTH = "await-auth"
    AWAIT_READY = "await-ready"
    OPEN = "open"
    CLOSED = "closed"


_ALLOWED: dict[LinkState, tuple[type[Frame], ...]] = {
    LinkState.AWAIT_HELLO: (Hello,),
    LinkState.AWAIT_AUTH: (Auth,),
    LinkState.AWAIT_READY: (Ready,),
    LinkState.OPEN: (),  # anything but handshake frames; see Link._on_open_frame
    LinkState.CLOSED: (),
}
_HANDSHAKE_FRAMES = (Hello, Auth, Ready)


def link_transcript(
    role: str, cert_fp: bytes, nonce_c: bytes, nonce_s: bytes, did_c: str, did_s: str
) -> bytes:
    """The bytes a side signs to prove its DID on this TLS session."""
    return msgpack.packb([role, cert_fp, nonce_c, nonce_s, did_c, did_s], use_bin_type=True)  # type: ignore[no-any-return]


class Link:
    """State of one link. Methods take ``now`` and return effects to carry out."""

    def __init__(
        self,
        link_id: int,
        *,
        identity: Identity,
        config: LinkConfig,
        outbound: bool,
        address: Address,
        cert_fingerprint: bytes,
        peer_cert_key: bytes | None,
        expected_did: str | None,
        nonce: bytes,
        now: float,
        agent: str,
    ) -> None:
        if len(nonce) != NONCE_SIZE:
            raise ValueError("link nonce must be 32 bytes")
        self.link_id = link_id
        self.outbound = outbound
        self.address = address
        self.state = LinkState.AWAIT_HELLO
        self.peer_did: str | None = None
        self.peer_name = ""
        self.rtt: float | None = None
        self.opened_at: float | None = None
        self.close_reason: str | None = None
        #: Set by the node once it has registered this link as open.
        self.announced = False
        self.inbox: list[Frame] = []
        #: Pong nonces we wait for -> (sent at, request id or None)
        self.pings: OrderedDict[int, tuple[float, int | None]] = OrderedDict()
        #: answered (or dropped, rtt None) pings that carried a request id
        self.finished_pings: list[tuple[int, float | None]] = []
        self._identity = identity
        self._config = config
        self._cert_fp = cert_fingerprint
        self._peer_cert_key = peer_cert_key
        self._expected_did = expected_did
        self._nonce = nonce
        self._peer_nonce = b""
        self._agent = agent
        self._decoder = FrameDecoder(config.max_frame_size)
        self._created = now
        self._last_received = now
        self._next_ping_at: float | None = None
        self._ping_counter = 0
        # first RTT sample: from our hello (client) or our proof (server) to the answer
        self._hello_sent_at: float | None = None
        self._tokens = config.frame_burst
        self._tokens_at = now

    # --- queries ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state is LinkState.OPEN

    @property
    def session_id(self) -> bytes:
        """Both handshake nonces, client's first: the same on both ends of this link."""
        if self.outbound:
            return self._nonce + self._peer_nonce
        return self._peer_nonce + self._nonce

    def deadline(self) -> float | None:
        if self.state is LinkState.CLOSED:
            return None
        if self.state is not LinkState.OPEN:
            return self._created + self._config.handshake_timeout
        assert self._next_ping_at is not None
        return min(self._next_ping_at, self._last_received + self._config.idle_timeout)

    # --- inputs ----------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        """Called once when the transport is up. The client speaks first."""
        if not self.outbound:
            return []
        assert self._peer_cert_key is not None, "outbound links know the server key"
        try:
            server_did = self._did_from_cert()
        except RemoteProtocolError as exc:
            return self._close(exc.code, str(exc))
        if self._expected_did is not None and server_did != self._expected_did:
            return self._close(
                CloseCode.UNEXPECTED_PEER,
                f"peer at {format_address(self.address)} is {server_did}, "
                f"expected {self._expected_did}",
            )
        self.peer_did = server_did
        self._hello_sent_at = now
        return [self._send(self._hello())]

    def receive(self, data: bytes, now: float) -> list[Effect]:
        if self.state is LinkState.CLOSED:
            return []
        try:
            frames = self._decoder.feed(data)
        except CodecError as exc:
            return self._close(exc.code, f"bad frame: {exc}")
        effects: list[Effect] = []
        for frame in frames:
            if not self._take_token(now):
                return effects + self._close(CloseCode.RATE_LIMITED, "too many frames per second")
            self._last_received = now
            try:
                effects += self._dispatch(frame, now)
            except RemoteProtocolError as exc:
                return effects + self._close(exc.code, str(exc))
            if not self._live():
                break
        return effects

    def on_timer(self, now: float) -> list[Effect]:
        if self.state is LinkState.CLOSED:
            return []
        if self.state is not LinkState.OPEN:
            if now >= self._created + self._config.handshake_timeout:
                return self._close(
                    CloseCode.HANDSHAKE_TIMEOUT,
                    f"handshake not finished within {self._config.handshake_timeout:g} s "
                    f"(stuck in {self.state.value})",
                )
            return []
        if now >= self._last_received + self._config.idle_timeout:
            return self._close(
                CloseCode.IDLE_TIMEOUT,
                f"nothing received for {self._config.idle_timeout:g} s",
            )
        assert self._next_ping_at is not None
        if now >= self._next_ping_at:
            return [self.ping(now)]
        return []

    def ping(self, now: float, request_id: int | None = None) -> Effect:
        """Send a ping; its pong updates :attr:`rtt` (and answers ``request_id``)."""
        self._ping_counter += 1
        nonce = self._ping_counter
        self.pings[nonce] = (now, request_id)
        while len(self.pings) > MAX_OUTSTANDING_PINGS:
            _, (_, dropped) = self.pings.popitem(last=False)
            if dropped is not None:
                self.finished_pings.append((dropped, None))
        self._next_ping_at = now + self._config.keepalive_interval
        return self._send(Ping(nonce=nonce))

    def close(self, code: CloseCode, reason: str) -> list[Effect]:
        """Close from this side (shutdown, duplicate, policy)."""
        if self.state is LinkState.CLOSED:
            return []
        return self._close(code, reason)

    def lost(self, reason: str) -> None:
        """The transport reports the link gone; no effects needed."""
        if self.state is not LinkState.CLOSED:
            self.state = LinkState.CLOSED
            self.close_reason = reason

    def send(self, frame: Frame, after_store: bool = False) -> Effect:
        """Encode an application frame for this (open) link (see Transmit.after_store)."""
        return Transmit(self.link_id, encode_frame(frame), after_store)

    # --- internals ------------------------------------------------------------

    def _live(self) -> bool:
        # a method, not an inline comparison: mypy narrows self.state across calls
        return self.state is not LinkState.CLOSED

    def _send(self, frame: Frame) -> Transmit:
        return Transmit(self.link_id, encode_frame(frame))

    def _close(self, code: CloseCode, reason: str) -> list[Effect]:
        self.state = LinkState.CLOSED
        self.close_reason = reason  # in full, for the local user
        return [CloseLink(self.link_id, code, reason[:MAX_CLOSE_REASON_LENGTH])]

    def _take_token(self, now: float) -> bool:
        cfg = self._config
        self._tokens = min(
            cfg.frame_burst, self._tokens + (now - self._tokens_at) * cfg.max_frames_per_second
        )
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _hello(self) -> Hello:
        return Hello(
            did=self._identity.did, nonce=self._nonce, name=self._identity.name, agent=self._agent
        )

    def _did_from_cert(self) -> str:
        from p2pchat.crypto import public_key_from_bytes
        from p2pchat.identity import did_from_public_key

        try:
            return did_from_public_key(public_key_from_bytes(self._peer_cert_key or b""))
        except IdentityError as exc:
            raise RemoteProtocolError(
                f"server certificate key is not an Ed25519 key: {exc}", CloseCode.AUTH_FAILED
            ) from exc

    def _transcript(self, signer_role: str) -> bytes:
        assert self.peer_did is not None
        if self.outbound:
            nonce_c, nonce_s = self._nonce, self._peer_nonce
            did_c, did_s = self._identity.did, self.peer_did
        else:
            nonce_c, nonce_s = self._peer_nonce, self._nonce
            did_c, did_s = self.peer_did, self._identity.did
        return link_transcript(signer_role, self._cert_fp, nonce_c, nonce_s, did_c, did_s)

    def _dispatch(self, frame: Frame, now: float) -> list[Effect]:
        if self.state is LinkState.OPEN:
            return self._on_open_frame(frame, now)
        if not isinstance(frame, _ALLOWED[self.state]):
            raise RemoteProtocolError(
                f"unexpected {frame.TAG!r} frame before authentication (in {self.state.value})"
            )
        if isinstance(frame, Hello):
            return self._on_hello(frame, now)
        if isinstance(frame, Auth):
            return self._on_auth(frame, now)
        return self._on_ready(now)

    def _on_hello(self, hello: Hello, now: float) -> list[Effect]:
        try:
            public_key_from_did(hello.did)
        except IdentityError as exc:
            raise RemoteProtocolError(f"invalid DID in hello: {exc}") from exc
        if self.outbound:
            if hello.did != self.peer_did:
                raise RemoteProtocolError(
                    f"hello names {hello.did} but the TLS certificate is {self.peer_did}",
                    CloseCode.AUTH_FAILED,
                )
        elif hello.did == self._identity.did:
            raise RemoteProtocolError("connected to itself", CloseCode.REFUSED)
        self.peer_did = hello.did
        self.peer_name = hello.name
        self._peer_nonce = hello.nonce
        self.state = LinkState.AWAIT_AUTH
        if self.outbound:
            self._rtt_sample(now)
            return []
        proof = self._identity.sign(Domain.LINK, self._transcript("server"))
        self._hello_sent_at = now
        return [self._send(self._hello()), self._send(Auth(signature=proof))]

    def _on_auth(self, auth: Auth, now: float) -> list[Effect]:
        assert self.peer_did is not None
        peer_role = "server" if self.outbound else "client"
        key = public_key_from_did(self.peer_did)
        if not verify(key, Domain.LINK, self._transcript(peer_role), auth.signature):
            raise RemoteProtocolError(
                f"DID proof from {short_did(self.peer_did)} does not verify for this session",
                CloseCode.AUTH_FAILED,
            )
        if self.outbound:
            proof = self._identity.sign(Domain.LINK, self._transcript("client"))
            self.state = LinkState.AWAIT_READY
            return [self._send(Auth(signature=proof))]
        self._rtt_sample(now)
        self._open(now)
        return [self._send(Ready())]

    def _on_ready(self, now: float) -> list[Effect]:
        self._open(now)
        return []

    def _rtt_sample(self, now: float) -> None:
        if self._hello_sent_at is not None:
            self.rtt = now - self._hello_sent_at
            self._hello_sent_at = None

    def _open(self, now: float) -> None:
        self.state = LinkState.OPEN
        self.opened_at = now
        self._next_ping_at = now + self._config.keepalive_interval

    def _on_open_frame(self, frame: Frame, now: float) -> list[Effect]:
        if isinstance(frame, Ping):
            return [self._send(Pong(nonce=frame.nonce))]
        if isinstance(frame, Pong):
            sent = self.pings.pop(frame.nonce, None)
            if sent is not None:
                sent_at, request_id = sent
                self.rtt = now - sent_at
                if request_id is not None:
                    self.finished_pings.append((request_id, self.rtt))
            return []
        if isinstance(frame, _HANDSHAKE_FRAMES):
            raise RemoteProtocolError(f"unexpected {frame.TAG!r} frame on an open link")
        self.inbox.append(frame)
        return []
