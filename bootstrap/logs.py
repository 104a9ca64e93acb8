"""Structured logs: one ``key=value`` line per event on stderr.

``event(log, "info", "upload", did=..., n=3)`` logs ``event=upload did=… n=3``; lines
from other loggers (the link layer, aioquic) keep their text as ``msg="…"``. Every
line starts with ``ts`` (UTC, ms), ``level`` and ``logger``. Values with spaces,
quotes, ``=`` or non-printable characters are JSON-quoted, so a peer-chosen string
cannot forge a field or a line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def kv_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}"]
        fields: Iterable[tuple[str, Any]] | None = getattr(record, "fields", None)
        if fields is not None:
            parts.append(f"event={kv_value(record.getMessage())}")
            parts += [f"{k}={kv_value(v)}" for k, v in fields]
        else:
            parts.append(f"msg={kv_value(record.getMessage())}")
        if record.exc_info:
            parts.append(f"exc={kv_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def event(log: logging.Logger, level: str, name: str, fields: Iterable[tuple[str, Any]] = (),
          **more: Any) -> None:
    number = LEVELS.get(level, logging.INFO)
    if log.isEnabledFor(number):
        log.log(number, name, extra={"fields": [*fields, *more.items()]})


def setup(level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("quic").setLevel(max(level, logging.WARNING))  # every handshake at INFO
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))  # every statement
