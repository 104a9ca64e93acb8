"""The one read-only view of a node core for its adapters (control server, runtime, TUI,
benchmarks): what they show, never what they change.

Adapters act on the core only through events (``NodeCore.handle``) and read it only
through :class:`NodeQuery`; none reaches into ``core.hub``. A channel replica is seen
through :class:`ChannelReader`, the read-only face of
:class:`~p2pchat.channel.state.ChannelState` (its queries, none of its methods that
author or apply changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from p2pchat.channel.invite import Invite
from p2pchat.channel.keys import Prekey
from p2pchat.channel.moderation import ModState
from p2pchat.channel.state import MessageView
from p2pchat.core.events import Address, SyncProgress

if TYPE_CHECKING:
    from p2pchat.core.node import NodeCore, PeerInfo


class ChannelReader(Protocol):
    """What an adapter may read of a channel replica."""

    @property
    def policy(self) -> str: ...

    @property
    def founder(self) -> str: ...

    @property
    def dm_peer(self) -> str: ...

    @property
    def genesis_id(self) -> bytes | None: ...

    def key_status(self) -> str: ...

    def sealed_count(self) -> int: ...

    def message_count(self) -> int: ...

    def moderation(self) -> ModState: ...

    def member_ranks(self) -> list[tuple[str, str]]: ...

    def prekey_of(self, did: str, now_ms: int) -> Prekey | None: ...

    def modlog(self) -> list[dict[str, Any]]: ...

    def history(self, limit: int | None = None, now_ms: int | None = None,
                with_hidden: bool = False) -> list[MessageView]: ...

    def history_page(self, limit: int, *, before: str | None = None,
                     after: str | None = None, now_ms: int | None = None,
                     with_hidden: bool = False) -> list[MessageView]: ...

    def views_of(self, ids: set[str], now_ms: int | None = None) -> list[MessageView]: ...


@dataclass(frozen=True)
class ServerView:
    """One configured bootstrap server, as ``doctor`` shows it."""

    address: Address
    did: str | None
    linked: bool
    last_error: str
    uploaded: int
    acknowledged: int
    received: int


class NodeQuery:
    """Read-only queries over one :class:`~p2pchat.core.node.NodeCore`."""

    def __init__(self, core: NodeCore) -> None:
        self._core = core

    # --- peers and links ---------------------------------------------------------------

    def peers(self, now: float) -> list[PeerInfo]:
        return self._core.peers(now)

    def link_count(self) -> int:
        return self._core.link_count()

    def wanted(self) -> list[tuple[Address, str | None]]:
        return self._core.wanted()

    def servers(self) -> list[ServerView]:
        return [ServerView(s.address, s.did, s.link_id is not None, s.last_error, s.uploaded,
                           s.acknowledged, s.received)
                for s in self._core.bootstrap.servers.values()]

    # --- channels ----------------------------------------------------------------------

    def channels(self) -> list[bytes]:
        return list(self._core.hub.channels)

    def has_channel(self, channel: bytes) -> bool:
        return channel in self._core.hub.channels

    def channel(self, channel: bytes) -> ChannelReader:
        """The replica of ``channel`` (ValueError if this node is not a member)."""
        return self._core.hub.get(channel)

    def name_of(self, channel: bytes) -> str:
        return self._core.hub.name_of(channel)

    def shared_with(self, channel: bytes) -> list[str]:
        """DIDs of the linked peers that share ``channel`` with this node."""
        return self._core.hub.shared_with(channel)

    def sync_progress(self, channel: bytes) -> SyncProgress | None:
        return self._core.hub.sync_progress(channel)

    def load_report(self, channel: bytes) -> tuple[int, int]:
        """(envelopes restored from the snapshot, envelopes replayed) at start."""
        return self._core.hub.load_report.get(channel, (0, 0))

    def invite_for(self, channel: bytes, now_ms: int,
                   peers: Sequence[tuple[str, str, int]] = ()) -> Invite:
        return self._core.hub.invite_for(channel, now_ms, tuple(peers))

    # --- direct messages ---------------------------------------------------------------

    def dm_channel(self, did: str) -> bytes | None:
        return self._core.hub.dm_channel(did)

    def dm_delivered(self, channel: bytes, seq: int) -> bool:
        """A receipt from the peer covers our envelope ``seq``."""
        return self._core.hub.dm_relay.delivered(channel, seq)

    def dm_handed(self, channel: bytes) -> int:
        """Our newest envelope seq handed to a relay (a peer linked to the recipient)."""
        return self._core.hub.dm_relay.handed.get(channel, 0)

    def acknowledged(self, channel: bytes) -> int:
        """How many of our envelopes of ``channel`` a bootstrap server acknowledged."""
        return self._core.bootstrap.acknowledged(channel)
