"""Control protocol: one JSON object per line each way.

Request ``{"method": str, "params": {...}}``; response ``{"ok": true, "result": …}``
or ``{"ok": false, "error": "one-line message"}``. Lines are capped at
:data:`MAX_LINE` bytes in both directions. A response longer than a line is
*streamed* as several part lines ``{"part": TEXT, "more": bool}``: the TEXTs of a
run that ends with ``"more": false``, joined, are the response's JSON text
(:func:`encode_answer`, :class:`AnswerReader`).
"""

from __future__ import annotations

import json
from typing import Any

from p2pchat.errors import LocalError

#: Longest line each way, in bytes, newline included.
MAX_LINE = 1024 * 1024
#: Most characters of an answer's JSON text one part line carries: escaped (the text
#: is ASCII, so only ``"`` and ``\`` grow, to two bytes) it fits a line with room to spare.
PART_CHARS = (MAX_LINE - 64) // 2
#: Largest answer a client assembles from part lines, in bytes of JSON text: the
#: answers are from the user's own node, so this only bounds memory, generously.
MAX_ANSWER = 256 * 1024 * 1024
#: Concurrent control clients served at once.
MAX_CLIENTS = 32


class ControlError(LocalError):
    """The node answered a control request with an error."""


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_answer(response: dict[str, Any]) -> list[bytes]:
    """The lines of one response: itself if it fits :data:`MAX_LINE`, else part lines."""
    line = encode(response)
    if len(line) <= MAX_LINE:
        return [line]
    text = line[:-1].decode("ascii")  # json.dumps escapes everything else
    pieces = [text[i:i + PART_CHARS] for i in range(0, len(text), PART_CHARS)]
    return [encode({"part": piece, "more": n + 1 < len(pieces)})
            for n, piece in enumerate(pieces)]


def decode(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"malformed control message: {exc}") from exc
    if not isinstance(obj, dict):
        raise ControlError("control message must be a JSON object")
    return obj


class AnswerReader:
    """Turns the lines a client reads into responses, joining part lines.

    :meth:`feed` returns the response a line completes, or ``None`` after a part
    that is not the last. An answer over ``limit`` bytes is read to its end but not
    kept, and its last line raises :class:`ControlError`, so the answers after it
    on the connection still come out right.
    """

    def __init__(self, limit: int = MAX_ANSWER) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._started = False

    def feed(self, line: bytes) -> dict[str, Any] | None:
        obj = decode(line)
        part = obj.get("part")
        if not isinstance(part, str) or "ok" in obj:
            if self._started:
                self._reset()
                raise ControlError("malformed control message: an answer's parts stop "
                                   "before its last one")
            return obj
        self._started = True
        self._size += len(part)
        if self._size <= self.limit:
            self._parts.append(part)
        if obj.get("more") is True:
            return None
        size, text = self._size, "".join(self._parts)
        self._reset()
        if size > self.limit:
            raise ControlError(f"response from node too large (over "
                               f"{self.limit // (1024 * 1024)} MiB)")
        return decode(text.encode("ascii", "replace"))

    def _reset(self) -> None:
        self._parts, self._size, self._started = [], 0, False


def result_of(response: dict[str, Any]) -> Any:
    """The result of a response, or :class:`ControlError` with the node's message."""
    if response.get("ok") is True:
        return response.get("result")
    raise ControlError(str(response.get("error", "unknown error")))
