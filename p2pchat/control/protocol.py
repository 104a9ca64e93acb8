"""Control protocol: one JSON object per line each way.

Request ``{"method": str, "params": {...}}``; response ``{"ok": true, "result": …}``
or ``{"ok": false, "error": "one-line message"}``. Lines are capped at
:data:`MAX_LINE` bytes in both directions.
"""

from __future__ import annotations

import json
from typing import Any

from p2pchat.errors import LocalError

MAX_LINE = 1024 * 1024
#: Concurrent control clients served at once.
MAX_CLIENTS = 32


class ControlError(LocalError):
    """The node answered a control request with an error."""


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"malformed control message: {exc}") from exc
    if not isinstance(obj, dict):
        raise ControlError("control message must be a JSON object")
    return obj
