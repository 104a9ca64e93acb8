"""mDNS discovery on the LAN (zeroconf): placeholder, being implemented."""

from __future__ import annotations

from p2pchat.core.events import Address
from p2pchat.runtime.node import Node


class MdnsDiscovery:
    """Advertise this node and report the nodes it sees to ``node.discovered``."""

    def __init__(self, node: Node, address: Address) -> None:
        self.node = node
        self.address = address
        self.status = "off"

    async def start(self) -> None:
        self.status = "not built yet"

    async def close(self) -> None:
        pass
