"""One exception tree for the whole project.

The type says whose fault it was (h11/h2 style):

* :class:`LocalError` - this node or its user did something wrong (bad argument,
  bad config, missing identity). The CLI shows it as a one-line message, exit 1.
* :class:`RemoteProtocolError` - a peer sent something invalid. It carries the
  :class:`~p2pchat.wire.CloseCode` the link is closed with.

Foreign exceptions (msgpack, nacl, OSError, aioquic) are translated into these at
the boundary where they occur, never further in.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    """Application error codes sent in the QUIC CONNECTION_CLOSE of a link."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    AUTH_FAILED = 2
    HANDSHAKE_TIMEOUT = 3
    FRAME_TOO_LARGE = 4
    IDLE_TIMEOUT = 5
    DUPLICATE_LINK = 6
    SHUTDOWN = 7
    RATE_LIMITED = 8
    REFUSED = 9
    UNEXPECTED_PEER = 10
    INTERNAL_ERROR = 11


class P2PChatError(Exception):
    """Root of every error p2pchat raises on purpose."""


class LocalError(P2PChatError):
    """The user, the config or this node's own state is at fault."""


class ConfigError(LocalError):
    """A configuration value or file is invalid."""


class IdentityError(LocalError):
    """An identity, key file or DID string is invalid."""


class NodeNotRunning(LocalError):
    """No node answers on the control socket of a home."""


class RemoteProtocolError(P2PChatError):
    """A peer violated the protocol; the link is closed with ``code``."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class CodecError(RemoteProtocolError):
    """Bytes from outside could not be decoded into a valid frame."""


class FrameTooLarge(CodecError):
    """A length prefix announced a frame above the hard limit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, CloseCode.FRAME_TOO_LARGE)


class AuthenticationError(RemoteProtocolError):
    """A peer's DID proof did not verify."""

    def __init__(self, message: str, code: CloseCode = CloseCode.AUTH_FAILED) -> None:
        super().__init__(message, code)
