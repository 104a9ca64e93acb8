"""Asynchronous control client for the terminal UI.

Two kinds of connection to a node's control socket (protocol: one JSON object
per line each way, see :mod:`p2pchat.control.protocol`):

- :class:`AsyncControl` sends requests, pipelined: each request gets a future
  and one reader task resolves them in order, as the server answers in order.
- :class:`WatchStream` sends ``watch`` once and then yields the event lines the
  node writes until either side closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from p2pchat.control.protocol import MAX_LINE, AnswerReader, ControlError, encode, result_of
from p2pchat.errors import NodeNotRunning
from p2pchat.home import NodeHome

#: How long one request may take before it is reported as failed.
REQUEST_TIMEOUT = 60.0


def socket_path_of(target: NodeHome | Path | str) -> Path:
    """The control socket of a home (a :class:`NodeHome`) or a socket path itself."""
    if isinstance(target, NodeHome):
        return target.socket_path
    return Path(target)


async def _open(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        # lines are bounded (a long answer comes as part lines, see AnswerReader)
        return await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        raise NodeNotRunning(f"node not running at {path.parent}") from None
    except OSError as exc:
        raise ControlError(f"cannot reach the node at {path.parent}: {exc}") from exc


def _result(line: bytes) -> Any:
    response = AnswerReader().feed(line)
    if response is None:
        raise ControlError("malformed control message: a part line where an answer belongs")
    return result_of(response)


class AsyncControl:
    """One request connection; ``call`` may be awaited from several tasks at once."""

    def __init__(self, path: Path, timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._pump: asyncio.Task[None] | None = None
        self._closed_why = ""

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._closed_why

    async def connect(self) -> AsyncControl:
        self._reader, self._writer = await _open(self.path)
        self._closed_why = ""
        self._pump = asyncio.get_running_loop().create_task(self._read_answers())
        return self

    async def _read_answers(self) -> None:
        assert self._reader is not None
        why = "the node closed the control connection"
        answers = AnswerReader()
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                try:
                    response = answers.feed(line)
                except ControlError as exc:  # that answer is lost, not the connection
                    response = {"ok": False, "error": str(exc)}
                if response is not None and self._pending:
                    future = self._pending.popleft()
                    if not future.done():
                        future.set_result(response)
        except (ValueError, asyncio.LimitOverrunError):
            why = "answer line from the node too long"
        except (ConnectionError, OSError) as exc:
            why = f"control connection lost: {exc}"
        self._fail(why)

    def _fail(self, why: str) -> None:
        self._closed_why = why
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(ControlError(why))

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Send one request and return its result; :class:`ControlError` on an error
        answer, a lost connection or a timeout."""
        if self._writer is None or self._closed_why:
            raise ControlError(self._closed_why or "not connected to the node")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        try:
            self._writer.write(encode({"method": method, "params": params or {}}))
            await self._writer.drain()
        except (ConnectionError, OSError):
            self._fail("the node closed the control connection")
        try:
            response = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            # the answer may still come: leave the future queued so order holds
            raise ControlError(f"the node did not answer {method} within "
                               f"{self.timeout:g} s") from None
        return result_of(response)

    async def close(self) -> None:
        self._fail("connection closed")
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = None


class WatchStream:
    """The event stream of ``watch`` on its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def start(self) -> None:
        """Connect and subscribe; :class:`ControlError` if the node refuses (an older
        node without ``watch`` answers "unknown control method")."""
        self._reader, self._writer = await _open(self.path)
        self._writer.write(encode({"method": "watch", "params": {}}))
        await self._writer.drain()
        line = await asyncio.wait_for(self._reader.readline(), REQUEST_TIMEOUT)
        if not line:
            raise ControlError("the node closed the control connection")
        _result(line)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events until the node closes the stream (then the iterator ends)."""
        assert self._reader is not None
        while True:
            try:
                line = await self._reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                yield {"event": "lagged"}
                continue
            except (ConnectionError, OSError):
                return
            if not line:
                return
            try:
                event = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(event, dict) and isinstance(event.get("event"), str):
                yield event

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._writer = None
