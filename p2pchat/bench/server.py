"""The benchmark's server side: a raw aioquic echo server and a p2pchat node.

Both listen on 127.0.0.1 with an ephemeral port. :class:`BenchServers` runs them
in the current event loop; ``python -m p2pchat.bench.server`` runs them in a
process of their own (the runner's default), prints one JSON line
``{"raw": [host, port], "node": [host, port], "node_did": ..., "pid": ...}`` on
stdout and serves until its stdin reaches end of file, so it also goes away when
the parent dies. SIGINT is ignored there: the parent decides when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

from aioquic.asyncio.server import QuicServer, serve

from p2pchat.bench.rawquic import EchoServerProtocol
from p2pchat.core import NodeConfig
from p2pchat.core.events import Address
from p2pchat.crypto import generate_secret_key
from p2pchat.errors import LocalError
from p2pchat.identity import Identity
from p2pchat.identity.identity import DEVICE_SALT_SIZE
from p2pchat.runtime.node import Node
from p2pchat.transport.quic import make_certificate, server_configuration

HOST = "127.0.0.1"


def quic_idle_timeout(config: NodeConfig) -> float:
    """The QUIC idle timeout the node's transport uses (link idle timeout + 5 s)."""
    return config.link.idle_timeout + 5.0


def bench_identity(name: str) -> Identity:
    """A throwaway identity."""
    return Identity(generate_secret_key(), os.urandom(DEVICE_SALT_SIZE), name)


@dataclass(frozen=True)
class ServerInfo:
    raw_address: Address
    node_address: Address
    node_did: str
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"raw": list(self.raw_address), "node": list(self.node_address),
                "node_did": self.node_did, "pid": self.pid}

    @classmethod
    def from_json(cls, data: Any) -> ServerInfo:
        try:
            raw, node = data["raw"], data["node"]
            return cls((str(raw[0]), int(raw[1])), (str(node[0]), int(node[1])),
                       str(data["node_did"]), int(data["pid"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LocalError(f"benchmark server sent a malformed address line: {exc}") from None


class BenchServers:
    """The raw echo server and the node, both listening."""

    def __init__(self, raw: QuicServer, node: Node, info: ServerInfo) -> None:
        self._raw = raw
        self._node = node
        self.info = info

    @classmethod
    async def start(cls) -> BenchServers:
        config = NodeConfig()
        cert = make_certificate(bench_identity("bench-raw"))
        raw_config = server_configuration(cert, idle_timeout=quic_idle_timeout(config))
        raw = await serve(HOST, 0, configuration=raw_config, create_protocol=EchoServerProtocol)
        node = Node(bench_identity("bench-server"), config, store=None)
        try:
            node_address = await node.start(HOST, 0)
        except BaseException:
            raw.close()
            await node.stop()
            raise
        assert raw._transport is not None
        bound = raw._transport.get_extra_info("sockname")
        info = ServerInfo((str(bound[0]), int(bound[1])), node_address, node.identity.did,
                          os.getpid())
        return cls(raw, node, info)

    async def close(self) -> None:
        self._raw.close()
        await self._node.stop("benchmark finished")


async def _serve_until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    servers = await BenchServers.start()
    try:
        reader = asyncio.StreamReader()
        pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            sys.stdout.write(json.dumps(servers.info.to_json()) + "\n")
            sys.stdout.flush()
            while await reader.read(4096):
                pass
        finally:
            pipe.close()
    finally:
        await servers.close()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_until_stdin_closes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
