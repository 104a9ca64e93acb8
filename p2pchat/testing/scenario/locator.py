"""Where a table or key is in a scenario file's text (``tomllib`` keeps no positions).

Owns :class:`Locator`, which the parser asks for the line an error names. It imports
nothing of the scenario engine.
"""

from __future__ import annotations

import re

_HEADER_RE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\s\"'-]+?)\s*\]\]?\s*(?:#.*)?$")
_DO_RE = re.compile(r"(?:^\s*|[{,]\s*)do\s*=")


class Locator:
    """Lines of tables and keys in the TOML text (``tomllib`` keeps no positions).

    Steps are found by their ``do =`` keys, in file order (a repeat's inner steps come
    after it), which works for ``[[step]]`` tables and inline tables alike; a key of a
    table by searching from the table's first line to the next table header.
    """

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str]] = []  # (line, dotted name)
        self.do_lines: list[int] = []
        for number, raw in enumerate(self.lines, 1):
            if raw.lstrip().startswith("#"):
                continue
            m = _HEADER_RE.match(raw)
            if m:
                self.headers.append((number, re.sub(r"[\s\"']", "", m.group(1))))
                continue
            self.do_lines += [number] * len(_DO_RE.findall(raw))

    def header(self, name: str, index: int = 0) -> int | None:
        """The line of the ``index``-th ``[name]`` / ``[[name]]`` header."""
        found = [line for line, n in self.headers if n == name]
        return found[index] if index < len(found) else None

    def top_key(self, key: str) -> int | None:
        """The line of a top-level ``key =`` (before the first table header)."""
        end = self.headers[0][0] if self.headers else len(self.lines) + 1
        return self._key_between(key, 1, end)

    def step(self, number: int) -> int | None:
        return self.do_lines[number - 1] if 0 < number <= len(self.do_lines) else None

    def key(self, start: int | None, key: str) -> int | None:
        """The line of ``key =`` in the table starting at line ``start`` (or ``start``)."""
        if start is None:
            return None
        ends = [line for line, _ in self.headers if line > start] + \
            [line for line in self.do_lines if line > start]
        end = min(ends, default=len(self.lines) + 1)
        found = self._key_between(key, start, end)
        return found if found is not None else start

    def _key_between(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"(?:^\s*|[{{,]\s*){re.escape(key)}\s*=")
        for number in range(start, min(end, len(self.lines) + 1)):
            if pattern.search(self.lines[number - 1]):
                return number
        return None

