"""The benchmark's server side: raw aioquic servers and a p2pchat node.

Three listeners on 127.0.0.1, each on an ephemeral port: a raw aioquic echo
server (:mod:`p2pchat.bench.rawquic`), the raw aioquic channel floor sink
(:mod:`p2pchat.bench.pipeline`) and an :class:`~p2pchat.bench.observed.ObservedNode`
("node B", no store). :class:`BenchServers` runs them in the current event
loop; ``python -m p2pchat.bench.server`` runs them in a process of their own
(the runner's default).

The process protocol: the child prints one JSON line ``{"raw": [host, port],
"floor": [host, port], "node": [host, port], "node_did": ..., "pid": ...}`` on
stdout, then reads one JSON command per line on stdin and answers each with one
JSON line on stdout, in order (see :meth:`BenchServers.command`). It serves
until its stdin reaches end of file, so it also goes away when the parent dies.
SIGINT is ignored there: the parent decides when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aioquic.asyncio.server import QuicServer, serve

from p2pchat.bench.observed import ObservedNode
from p2pchat.bench.pipeline import FloorSinkProtocol
from p2pchat.bench.rawquic import EchoServerProtocol
from p2pchat.channel.invite import parse_invite
from p2pchat.core import NodeConfig
from p2pchat.core.events import Address
from p2pchat.crypto import generate_secret_key
from p2pchat.errors import LocalError
from p2pchat.identity import Identity
from p2pchat.identity.identity import DEVICE_SALT_SIZE
from p2pchat.transport.quic import make_certificate, server_configuration

HOST = "127.0.0.1"
#: Longest command or answer line between the runner and the server process.
MAX_COMMAND_LINE = 64 * 1024 * 1024


def quic_idle_timeout(config: NodeConfig) -> float:
    """The QUIC idle timeout the node's transport uses (link idle timeout + 5 s)."""
    return config.link.idle_timeout + 5.0


def bench_identity(name: str) -> Identity:
    """A throwaway identity."""
    return Identity(generate_secret_key(), os.urandom(DEVICE_SALT_SIZE), name)


@dataclass(frozen=True)
class ServerInfo:
    raw_address: Address
    floor_address: Address
    node_address: Address
    node_did: str
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"raw": list(self.raw_address), "floor": list(self.floor_address),
                "node": list(self.node_address), "node_did": self.node_did, "pid": self.pid}

    @classmethod
    def from_json(cls, data: Any) -> ServerInfo:
        try:
            raw, floor, node = data["raw"], data["floor"], data["node"]
            return cls((str(raw[0]), int(raw[1])), (str(floor[0]), int(floor[1])),
                       (str(node[0]), int(node[1])), str(data["node_did"]), int(data["pid"]))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise LocalError(f"benchmark server sent a malformed address line: {exc}") from None


def _bound(server: QuicServer) -> Address:
    assert server._transport is not None
    bound = server._transport.get_extra_info("sockname")
    return (str(bound[0]), int(bound[1]))


class BenchServers:
    """The raw echo server, the floor sink and node B, all listening."""

    def __init__(self, raw: QuicServer, floor: QuicServer, node: ObservedNode,
                 info: ServerInfo) -> None:
        self._raw = raw
        self._floor = floor
        self.node = node
        self.info = info

    @classmethod
    async def start(cls) -> BenchServers:
        config = NodeConfig()
        cert = make_certificate(bench_identity("bench-raw"))
        raw_config = server_configuration(cert, idle_timeout=quic_idle_timeout(config))
        raw = await serve(HOST, 0, configuration=raw_config, create_protocol=EchoServerProtocol)
        floor = await serve(HOST, 0, configuration=raw_config,
                            create_protocol=FloorSinkProtocol)
        node = ObservedNode(bench_identity("bench-server"), config, store=None)
        try:
            node_address = await node.start(HOST, 0)
        except BaseException:
            raw.close()
            floor.close()
            await node.stop()
            raise
        info = ServerInfo(_bound(raw), _bound(floor), node_address, node.identity.did,
                          os.getpid())
        return cls(raw, floor, node, info)

    async def close(self) -> None:
        self._raw.close()
        self._floor.close()
        await self.node.stop("benchmark finished")

    # --- commands ---------------------------------------------------------------------

    async def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out one command; the answer is ``{"error": ...}`` if it failed.

        - ``{"op": "join", "invite": uri}``: node B joins the channel and the
          answer waits until B holds its genesis (so the inviter's link shares it);
          ``{"channel": hex}``.
        - ``{"op": "record", "channel": hex, "count": n}``: arm a recorder.
        - ``{"op": "wait", "channel": hex, "timeout": s}``: until the recorder has
          its count: ``{"count", "first_ns", "last_ns", "latencies_ns"}``.
        - ``{"op": "invite", "channel": hex}``: an invite to B's copy: ``{"invite"}``.
        """
        try:
            op = request.get("op")
            if op == "join":
                return await self._join(str(request["invite"]))
            if op not in ("record", "wait", "invite"):
                raise LocalError(f"unknown benchmark command {op!r}")
            channel = bytes.fromhex(str(request["channel"]))
            if op == "record":
                self.node.record(channel, int(request["count"]))
                return {}
            if op == "wait":
                recorder = self.node.recorders.get(channel)
                if recorder is None:
                    raise LocalError("no recorder armed for that channel")
                await recorder.wait(float(request["timeout"]))
                del self.node.recorders[channel]
                return recorder.to_json()
            return {"invite": self.node.make_invite(channel)}
        except (LocalError, KeyError, ValueError, TypeError) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def _join(self, uri: str, limit: float = 10.0) -> dict[str, Any]:
        invite = parse_invite(uri)
        await self.node.join(invite)
        hub = self.node.core.hub
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (state := hub.channels.get(invite.channel)) is None or state.genesis_id is None:
            if loop.time() > deadline:
                raise LocalError(f"node B did not receive the channel's genesis within {limit:g} s")
            await asyncio.sleep(0.002)
        return {"channel": invite.channel.hex()}


async def serve_commands(hello: dict[str, Any],
                         command: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
                         ) -> None:
    """A benchmark child's loop: print ``hello`` as one JSON line, then answer each JSON
    command read from stdin with one line, until stdin closes (the parent is gone)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_COMMAND_LINE)
    pipe, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        _answer(hello)
        while line := await reader.readline():
            try:
                request = json.loads(line)
            except ValueError:
                request = None
            if not isinstance(request, dict):
                _answer({"error": "a command must be a JSON object on one line"})
                continue
            _answer(await command(request))
    finally:
        pipe.close()


async def _serve_until_stdin_closes() -> None:
    servers = await BenchServers.start()
    try:
        await serve_commands(servers.info.to_json(), servers.command)
    finally:
        await servers.close()


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(_serve_until_stdin_closes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
