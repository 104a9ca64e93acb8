"""Synchronous control client used by the CLI."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

from p2pchat.control.protocol import MAX_LINE, AnswerReader, ControlError, encode, result_of
from p2pchat.errors import NodeNotRunning
from p2pchat.home import MAX_SOCKET_PATH, NodeHome


class ControlConnection:
    """One connection to a node's control socket; several requests may share it.

    Raises :class:`NodeNotRunning` if nothing listens on the socket, and
    :class:`ControlError` with the node's message if it answered with an error.
    """

    def __init__(self, home: NodeHome, timeout: float = 60.0) -> None:
        self.home = home
        self._timeout = timeout
        self._buf = bytearray()
        self._answers = AnswerReader()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        path = home.socket_path
        try:
            self._sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            self._sock.close()
            raise NodeNotRunning(f"node not running at {home.path}") from None
        except OSError as exc:
            self._sock.close()
            if len(str(path)) > MAX_SOCKET_PATH:
                raise NodeNotRunning(f"node not running at {home.path}") from None
            raise ControlError(f"cannot reach the node at {home.path}: {exc}") from exc

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.send(method, params)
        return self.receive()

    def send(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a request without waiting (pipelining); answers come back in order."""
        try:
            self._sock.sendall(encode({"method": method, "params": params or {}}))
        except TimeoutError:
            raise ControlError(f"the node at {self.home.path} did not accept the request "
                               f"within {self._timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError("the node closed the control connection") from None

    def receive(self) -> Any:
        """The answer to the oldest request not yet answered (joined from its part lines
        if the node streamed it)."""
        while True:
            response = self._answers.feed(self._line())
            if response is not None:
                return result_of(response)

    def _line(self) -> bytes:
        try:
            while b"\n" not in self._buf:
                if len(self._buf) > MAX_LINE:
                    raise ControlError("response line from node too long")
                chunk = self._sock.recv(65536)
                if not chunk:
                    raise ControlError("the node closed the control connection without an answer")
                self._buf += chunk
        except TimeoutError:
            raise ControlError(f"the node at {self.home.path} did not answer within "
                               f"{self._timeout:g} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise ControlError("the node closed the control connection") from None
        line, _, rest = self._buf.partition(b"\n")
        self._buf = bytearray(rest)
        return bytes(line)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlConnection:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def call(home: NodeHome, method: str, params: dict[str, Any] | None = None,
         timeout: float = 60.0) -> Any:
    """Send one request to the node of ``home`` and return its result."""
    with ControlConnection(home, timeout) as conn:
        return conn.call(method, params)
