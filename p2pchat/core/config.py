"""Configuration as data (aioquic ``QuicConfiguration`` style).

Every limit the core enforces is a named field here with a documented default;
``__post_init__`` validates so a bad config file fails at start with a clear
message instead of misbehaving later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pchat.errors import ConfigError
from p2pchat.wire.codec import MAX_FRAME_SIZE

#: Longest reason text sent in a link close (QUIC reason phrase).
MAX_CLOSE_REASON_LENGTH = 200
#: Pings awaiting a pong per link; older ones are forgotten.
MAX_OUTSTANDING_PINGS = 16


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class LinkConfig:
    """Per-link timing and limits."""

    #: Seconds from QUIC connection to authenticated link before it is closed.
    handshake_timeout: float = 10.0
    #: Seconds between pings on an open link (also refreshes the RTT figure).
    keepalive_interval: float = 5.0
    #: Seconds without any frame from the peer before the link is closed.
    idle_timeout: float = 20.0
    #: Largest frame payload accepted from the peer, in bytes (sending is capped at 1 MiB).
    max_frame_size: int = MAX_FRAME_SIZE
    #: Sustained inbound frames per second per link before the link is closed.
    max_frames_per_second: float = 20_000.0
    #: Inbound frames a link may send in a burst above the sustained rate.
    frame_burst: float = 40_000.0

    def __post_init__(self) -> None:
        for name in (
            "handshake_timeout", "keepalive_interval", "idle_timeout",
            "max_frames_per_second", "frame_burst",
        ):
            _positive(f"link.{name}", getattr(self, name))
        if self.idle_timeout <= self.keepalive_interval:
            raise ConfigError(
                f"link.idle_timeout ({self.idle_timeout}) must exceed "
                f"link.keepalive_interval ({self.keepalive_interval})"
            )
        size = self.max_frame_size
        if type(size) is not int or not 1024 <= size <= MAX_FRAME_SIZE:
            raise ConfigError(f"link.max_frame_size must be an integer in 1024..{MAX_FRAME_SIZE}")


@dataclass(frozen=True)
class NodeConfig:
    """Node-wide limits and reconnect policy."""

    link: LinkConfig = field(default_factory=LinkConfig)
    #: Open or handshaking links at once; further inbound links are refused.
    max_links: int = 256
    #: Seconds a dial may take (QUIC handshake) before it counts as failed.
    dial_timeout: float = 10.0
    #: First reconnect delay in seconds; doubles per failed attempt.
    reconnect_base: float = 0.5
    #: Cap on the reconnect delay in seconds.
    reconnect_max: float = 30.0
    #: Addresses this node keeps reconnecting to.
    max_wanted_peers: int = 1024

    def __post_init__(self) -> None:
        for name in ("dial_timeout", "reconnect_base", "reconnect_max"):
            _positive(name, getattr(self, name))
        if self.reconnect_max < self.reconnect_base:
            raise ConfigError("reconnect_max must be at least reconnect_base")
        for name in ("max_links", "max_wanted_peers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
