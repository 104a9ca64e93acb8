"""Control server: serves :class:`~p2pchat.runtime.node.Node` over the home's socket.

The socket file is created with umask 077 and chmod 0600 in a 0700 home, so only
the user can connect. A stale socket from a killed node is removed; a live one
(another node on this home) is an error, though the home lock catches that first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from p2pchat.control.protocol import MAX_CLIENTS, MAX_LINE, decode, encode
from p2pchat.core.events import format_address
from p2pchat.errors import LocalError
from p2pchat.home import parse_listen
from p2pchat.runtime.node import Node

log = logging.getLogger("p2pchat.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlServer:
    def __init__(self, node: Node, path: Path, on_stop: Callable[[], None]) -> None:
        self.node = node
        self.path = path
        self._on_stop = on_stop
        self._server: asyncio.Server | None = None
        self._clients = asyncio.Semaphore(MAX_CLIENTS)
        self._handlers: dict[str, Handler] = {
            "status": self._status,
            "peers": self._peers,
            "connect": self._connect,
            "ping": self._ping,
            "disconnect": self._disconnect,
            "stop": self._stop,
        }

    async def start(self) -> None:
        self._remove_stale()
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left behind by a node that was killed
            return
        finally:
            probe.close()
        raise LocalError(f"a node is already running at {self.path.parent}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._clients:
            try:
                while True:
                    try:
                        line = await reader.readline()
                    except (ValueError, asyncio.LimitOverrunError):
                        writer.write(encode({"ok": False, "error": "request too large"}))
                        break
                    if not line:
                        break
                    writer.write(encode(await self._answer(line)))
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode(line)
            method = request.get("method")
            params = request.get("params", {})
            if not isinstance(params, dict):
                raise LocalError("params must be an object")
            handler = self._handlers.get(method) if isinstance(method, str) else None
            if handler is None:
                raise LocalError(f"unknown control method {method!r}")
            return {"ok": True, "result": await handler(params)}
        except LocalError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the node; report and log it
            log.exception("control request failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    # --- methods ------------------------------------------------------------------

    async def _status(self, params: dict[str, Any]) -> Any:
        status = self.node.status()
        status["home"] = str(self.path.parent)
        return status

    async def _peers(self, params: dict[str, Any]) -> Any:
        return [p.to_json() for p in self.node.peers()]

    async def _connect(self, params: dict[str, Any]) -> Any:
        address = params.get("address")
        did = params.get("did")
        if not isinstance(address, str) or not (did is None or isinstance(did, str)):
            raise LocalError("connect needs an address string and an optional DID")
        peer = await self.node.connect(parse_listen(address), did)
        return {"did": peer, "address": address}

    async def _ping(self, params: dict[str, Any]) -> Any:
        did = params.get("did")
        if not isinstance(did, str):
            raise LocalError("ping needs a DID")
        rtt = await self.node.ping(did)
        return {"did": did, "rtt_ms": round(rtt * 1000, 3)}

    async def _disconnect(self, params: dict[str, Any]) -> Any:
        target = params.get("target")
        if not isinstance(target, str):
            raise LocalError("disconnect needs a DID or HOST:PORT")
        if target.startswith("did:"):
            from p2pchat.identity import public_key_from_did

            public_key_from_did(target)
            done = await self.node.disconnect(did=target)
        else:
            done = await self.node.disconnect(address=parse_listen(target))
        return {"closed": done.closed, "forgotten": [format_address(a) for a in done.forgotten]}

    async def _stop(self, params: dict[str, Any]) -> Any:
        asyncio.get_running_loop().call_soon(self._on_stop)
        return {"stopping": True}
