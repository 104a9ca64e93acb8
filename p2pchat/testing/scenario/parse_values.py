"""The checks of single values in a scenario file, shared by the file and step parsers.

Owns :class:`Checker`: strings, numbers, choices, node names and lists of them, text
templates, each refused with a :class:`~.model.ScenarioError` that names the line.
Imports the model and the locator only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from p2pchat.testing.scenario.locator import Locator
from p2pchat.testing.scenario.model import MAX_TEXT_LENGTH, TEXT_PLACEHOLDERS, ScenarioError

Value = Any  # a value straight out of tomllib, checked before use


@dataclass
class Checker:
    """Value checks that know the file (for errors), its nodes and its servers."""

    loc: Locator
    source: str
    nodes: tuple[str, ...] = ()
    servers: tuple[str, ...] = ()

    def error(self, message: str, line: int | None) -> ScenarioError:
        return ScenarioError(message, line, self.source)

    # --- scalars ---

    def _str(self, value: Value, what: str, line: int | None, max_len: int) -> str:
        if not isinstance(value, str):
            raise self.error(f"{what} must be a string, not {toml_type(value)}", line)
        if not value or len(value) > max_len:
            raise self.error(f"{what} must be 1..{max_len} characters", line)
        return value

    def _int(self, value: Value, what: str, line: int | None, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(f"{what} must be an integer, not {toml_type(value)}", line)
        if not low <= value <= high:
            raise self.error(f"{what} must be in {low}..{high}, not {value}", line)
        return value

    def _float(self, value: Value, what: str, line: int | None, low: float,
               high: float) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.error(f"{what} must be a number, not {toml_type(value)}", line)
        if not low <= value <= high:  # also refuses nan
            raise self.error(f"{what} must be in {low:g}..{high:g}, not {value}", line)
        return float(value)

    def _bool(self, value: Value, what: str, line: int | None) -> bool:
        if not isinstance(value, bool):
            raise self.error(f"{what} must be true or false, not {toml_type(value)}", line)
        return value

    def _choice(self, value: Value, what: str, line: int | None, options: Sequence[str]
                ) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.error(f"{what} must be one of {', '.join(options)}, not {value!r}", line)
        return value

    def _node(self, value: Value, what: str, line: int | None, *, servers: bool = False
              ) -> str:
        if not isinstance(value, str):
            raise self.error(f"{what} must be a node name, not {toml_type(value)}", line)
        if value not in self.nodes:
            if value in self.servers and not servers:
                raise self.error(f"{value!r} in {what} is a bootstrap server, not a member",
                                 line)
            if value not in self.servers:
                raise self.error(f"unknown node {value!r} in {what}", line)
        return value

    def _node_list(self, value: Value, what: str, line: int | None, *, allow_all: bool = False,
                   servers: bool = False, empty: bool = False) -> tuple[tuple[str, ...], bool]:
        if allow_all and value == "all":
            return (), True
        if not isinstance(value, list) or (not value and not empty):
            extra = ' or "all"' if allow_all else ""
            kind = "list" if empty else "non-empty list"
            raise self.error(f"{what} must be a {kind} of node names{extra}", line)
        names = tuple(self._node(v, what, line, servers=servers) for v in value)
        if len(set(names)) != len(names):
            raise self.error(f"{what} names a node twice", line)
        return names, False

    def _text(self, value: Value, what: str, line: int | None) -> str:
        text = self._str(value, what, line, MAX_TEXT_LENGTH)
        for name in re.findall(r"\{(\w*)\}", text):
            if name not in TEXT_PLACEHOLDERS:
                raise self.error(f"{what}: unknown placeholder {{{name}}} (known: "
                                 f"{', '.join('{' + p + '}' for p in TEXT_PLACEHOLDERS)})", line)
        return text


    def _pair(self, value: Value, what: str, line: int | None) -> tuple[str, str]:
        names, _ = self._node_list(value, what, line, servers=True)
        if len(names) != 2:
            raise self.error(f"{what} must name two different nodes", line)
        return names[0], names[1]


def toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


