"""How the runtime shows peers and sync progress to control clients: the JSON shapes of
``peers``, ``channel.list`` and the ``sync`` watch event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pchat.core.events import Address, SyncProgress, format_address
from p2pchat.core.node import PeerInfo


@dataclass(frozen=True)
class PeerView:
    did: str
    name: str
    address: str
    outbound: bool
    rtt_ms: float | None
    connected_for_s: float
    found_by: str = "inbound"
    path: str = "direct"
    via: str = "direct"

    def to_json(self) -> dict[str, Any]:
        return {
            "did": self.did, "name": self.name, "address": self.address,
            "rtt_ms": None if self.rtt_ms is None else round(self.rtt_ms, 3),
            "direction": "outbound" if self.outbound else "inbound",
            "connected_for_s": round(self.connected_for_s, 1),
            "found_by": self.found_by, "path": self.path, "via": self.via,
        }


def path_of(address: Address) -> str:
    """How a direct link reaches a peer: ``loopback``, ``lan`` or ``internet``."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return "internet"
    if ip.is_loopback:
        return "loopback"
    if ip.is_private or ip.is_link_local:
        return "lan"
    return "internet"


def via_of(found_by: str, path: str) -> str:
    """The way a peer is reached, as the chat client's status bar counts them:
    ``bootstrap`` (the link is to a bootstrap server, which relays envelopes), ``lan``
    (found by mDNS, or at a private or link-local address), else ``direct``."""
    if found_by == "bootstrap-server":
        return "bootstrap"
    if found_by == "mdns" or path == "lan":
        return "lan"
    return "direct"


def sync_json(progress: SyncProgress | None) -> dict[str, int] | None:
    """A channel's sync progress as ``channel.list`` and the ``sync`` event show it."""
    if progress is None:
        return None
    return {"received": progress.received, "expected": progress.expected}


def peer_view(p: PeerInfo) -> PeerView:
    """A peer of the core as ``peers`` shows it."""
    path = path_of(p.address)
    return PeerView(p.did, p.name, format_address(p.address), p.outbound,
                    None if p.rtt is None else p.rtt * 1000.0, p.connected_for,
                    p.found_by, path, via_of(p.found_by, path))
