"""Synchronous control client used by the CLI."""

from __future__ import annotations

import socket
from typing import Any

from p2pchat.control.protocol import MAX_LINE, ControlError, decode, encode
from p2pchat.errors import NodeNotRunning
from p2pchat.home import NodeHome


def call(home: NodeHome, method: str, params: dict[str, Any] | None = None,
         timeout: float = 60.0) -> Any:
    """Send one request to the node of ``home`` and return its result.

    Raises :class:`NodeNotRunning` if nothing listens on the socket, and
    :class:`ControlError` with the node's message if it answered with an error.
    """
    path = home.socket_path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise NodeNotRunning(f"node not running at {home.path}") from None
        except OSError as exc:
            if len(str(path)) > 107:
                raise NodeNotRunning(f"node not running at {home.path}") from None
            raise ControlError(f"cannot reach the node at {home.path}: {exc}") from exc
        sock.sendall(encode({"method": method, "params": params or {}}))
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_LINE:
                raise ControlError("response from node too large")
    except TimeoutError:
        raise ControlError(f"the node at {home.path} did not answer within {timeout:g} s") from None
    finally:
        sock.close()
    if not buf:
        raise ControlError("the node closed the control connection without an answer")
    response = decode(bytes(buf))
    if response.get("ok") is True:
        return response.get("result")
    raise ControlError(str(response.get("error", "unknown error")))

