"""The transport port: links to peers as the runtime drives them, whatever carries them.

:class:`Transport` lists what ``p2pchat.runtime.node`` and ``bootstrap.runtime``
call on their transport; :class:`LinkEvents` is what a transport calls back on
(the runtime, which turns the calls into core events); :class:`TransportFactory`
is how a runtime makes one. :class:`p2pchat.transport.quic.QuicTransport`
(aioquic) is the adapter today; ``tests/conformance/test_transport_conformance.py``
holds any adapter to the contract below over real loopback sockets.

The contract, beyond the signatures:

* A link is one authenticated, ordered, reliable byte stream. Both ends get
  ``established`` once per link, with a link id unique within that transport;
  the dialer's carries ``outbound=True``, its ``dial_id``, the address it dialled
  and ``peer_cert_key``: the listener's raw Ed25519 identity key, proven in the
  handshake (the core checks it against the DID it expected). Both ends report
  the same ``cert_fingerprint``, the listener's certificate, for channel binding.
* ``send`` queues bytes; ``flush`` transmits everything queued (frames queued
  together may share packets). Bytes arrive through ``data`` in order, split or
  joined at any boundary. A send on a link that is closed or unknown is ignored.
  The dialer speaks first: the listener sends only once data has arrived on the
  link (the core's link handshake has the client speak first; aioquic cannot
  send on a stream the client has not opened).
* ``close(link_id, code, reason)`` ends a link: the peer gets ``lost`` with a
  reason that includes ``reason``; the closer gets no ``lost`` for it. A link
  that fails or is closed by the peer is reported by ``lost`` once.
* A dial that cannot complete (port closed, no answer within ``timeout``,
  handshake refused) is reported once through its ``on_failed(dial_id, reason)``
  and never as ``established``.
* ``stop`` closes every link (peers see ``lost``) and releases every socket; no
  callback comes after it returns.

This module is types only: it imports no I/O library.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from p2pchat.core.events import Address
from p2pchat.errors import CloseCode
from p2pchat.identity import Identity


class LinkEvents(Protocol):
    """What the transport reports to (the runtime driving the core)."""

    def established(
        self, link_id: int, outbound: bool, address: Address, cert_fingerprint: bytes,
        peer_cert_key: bytes | None, dial_id: int | None,
    ) -> None: ...

    def data(self, link_id: int, data: bytes) -> None: ...

    def lost(self, link_id: int, reason: str) -> None: ...


class Transport(Protocol):
    """What a runtime asks of its transport (see the module docstring for the contract)."""

    async def listen(self, host: str, port: int) -> Address:
        """Accept links on ``host:port`` (0: any free port); the address bound. Raises
        LocalError if it cannot."""
        ...

    def dial(self, dial_id: int, address: Address, timeout: float,
             on_failed: Callable[[int, str], None]) -> None:
        """Start a link to ``address``; ``established`` or ``on_failed`` tells how it went."""
        ...

    def send(self, link_id: int, data: bytes) -> None:
        """Queue ``data`` on a link (transmitted by :meth:`flush`)."""
        ...

    def flush(self) -> None:
        """Transmit what :meth:`send` queued, on every link."""
        ...

    def close(self, link_id: int, code: CloseCode, reason: str) -> None:
        """End a link, telling the peer ``code`` and ``reason``."""
        ...

    def backlog(self, link_id: int) -> int | None:
        """Bytes sent on a link and not yet acknowledged (queued ones included); None if
        there is no such link."""
        ...

    def lagging(self, now: float) -> bool:
        """Whether some peer is slower to acknowledge than its round trip explains."""
        ...

    async def stop(self) -> None:
        """Close every link and socket."""
        ...


class TransportFactory(Protocol):
    """How a runtime makes its transport (``QuicTransport`` is one)."""

    def __call__(self, identity: Identity, sink: LinkEvents, *, handshake_timeout: float,
                 idle_timeout: float) -> Transport: ...
