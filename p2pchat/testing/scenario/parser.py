"""Reading a scenario file: TOML text in, a validated :class:`~.model.Scenario` out.

Owns :func:`parse_scenario`, :func:`load_scenario` and the file's top level: its
keys, ``[[server]]``, ``[network]`` and ``[[channel]]`` tables; the ``[[step]]`` tables
are :mod:`.parse_steps`' (each becomes one variant of :data:`~.model.Step`). The whole
file is checked before anything runs; every :class:`~.model.ScenarioError` names the
line it is on (``tomllib`` reports syntax errors with a line and column; for a semantic
error such as an unknown step or node :class:`~.locator.Locator` finds the offending
table or key). Imports the model and the other parser modules, nothing that runs a
scenario.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pchat.testing.scenario.locator import Locator
from p2pchat.testing.scenario.model import (
    DEFAULT_SEED,
    MAX_CHANNELS,
    MAX_CLOCK_SKEW_MS,
    MAX_EXECUTED_STEPS,
    MAX_LATENCY_MS,
    MAX_LINKS,
    MAX_MESSAGES,
    MAX_NAME_LENGTH,
    MAX_NODES,
    MAX_SEED,
    MAX_SERVERS,
    MAX_STEPS,
    NAME_RE,
    ChannelSpec,
    NetworkSpec,
    Scenario,
    ScenarioError,
    ServerSpec,
    executed_steps,
    planned_messages,
)
from p2pchat.testing.scenario.parse_steps import StepParser
from p2pchat.testing.scenario.parse_values import Value

_TOP_KEYS = ("name", "description", "seed", "nodes", "server", "network", "channel", "step")
_SERVER_KEYS = ("name", "users")
_NETWORK_KEYS = ("latency_ms", "links", "random_links", "clock_skew_ms")
_CHANNEL_KEYS = ("name", "founder", "members", "via")


@dataclass
class _Parser(StepParser):
    """The whole file: top-level keys, ``[[server]]``, ``[network]``, ``[[channel]]``, then
    the steps (:class:`~.parse_steps.StepParser`)."""

    def scenario(self, data: dict[str, Any], default_name: str) -> Scenario:
        for key in data:
            if key not in _TOP_KEYS:
                line = self.loc.top_key(key) or self.loc.header(key)
                raise self.error(f"unknown top-level key {key!r} (known: "
                                 f"{', '.join(_TOP_KEYS)})", line)
        name = default_name
        if "name" in data:
            name = self._str(data["name"], "name", self.loc.top_key("name"), MAX_NAME_LENGTH)
        description = ""
        if "description" in data:
            description = self._str(data["description"], "description",
                                    self.loc.top_key("description"), 10_000)
        seed = DEFAULT_SEED
        if "seed" in data:
            seed = self._int(data["seed"], "seed", self.loc.top_key("seed"), 0, MAX_SEED)
        self.nodes = self._nodes(data.get("nodes"))
        servers = self._servers(data.get("server", []))
        network = self._network(data.get("network", {}))
        channels = data.get("channel")
        if not isinstance(channels, list) or not channels:
            raise self.error("a scenario needs at least one [[channel]] table",
                             self.loc.top_key("channel"))
        if len(channels) > MAX_CHANNELS:
            raise self.error(f"at most {MAX_CHANNELS} channels", self.loc.header("channel",
                                                                                MAX_CHANNELS))
        for index, table in enumerate(channels):
            spec = self._channel(table, index)
            self.channels[spec.name] = spec
        steps = data.get("step", [])
        if not isinstance(steps, list):
            raise self.error("step must be an array of tables ([[step]])", self.loc.top_key("step"))
        parsed = self._steps(steps, nested=False)
        if self.number > MAX_STEPS:
            raise self.error(f"at most {MAX_STEPS} steps in a file", self.loc.step(MAX_STEPS + 1))
        if executed_steps(parsed) > MAX_EXECUTED_STEPS:
            raise self.error(f"the repeats expand to more than {MAX_EXECUTED_STEPS} steps", None)
        if planned_messages(parsed) > MAX_MESSAGES:
            raise self.error(f"the steps post {planned_messages(parsed)} messages; at most "
                             f"{MAX_MESSAGES}", None)
        return Scenario(name, description, seed, self.nodes, network,
                        tuple(self.channels.values()), parsed, self.source, servers)

    def _servers(self, tables: Value) -> tuple[ServerSpec, ...]:
        if not isinstance(tables, list):
            raise self.error("server must be an array of tables ([[server]])",
                             self.loc.top_key("server"))
        if len(tables) > MAX_SERVERS:
            raise self.error(f"at most {MAX_SERVERS} servers", self.loc.header("server",
                                                                              MAX_SERVERS))
        specs: list[ServerSpec] = []
        for index, table in enumerate(tables):
            start = self.loc.header("server", index)
            if not isinstance(table, dict):
                raise self.error("each server must be a table ([[server]])", start)
            for key in table:
                if key not in _SERVER_KEYS:
                    raise self.error(f"unknown key {key!r} in [[server]] (known: "
                                     f"{', '.join(_SERVER_KEYS)})", self.loc.key(start, key))
            if "name" not in table:
                raise self.error("a server needs a name", start)
            line = self.loc.key(start, "name")
            name = table["name"]
            if not isinstance(name, str) or not NAME_RE.fullmatch(name):
                raise self.error(f"bad server name {name!r}: a letter, then up to 31 letters, "
                                 "digits, '_' or '-'", line)
            if name in self.nodes or any(s.name == name for s in specs):
                raise self.error(f"{name!r} is declared twice (as a node or server)", line)
            users = self.nodes
            if "users" in table:
                users, _ = self._node_list(table["users"], "users", self.loc.key(start, "users"))
            specs.append(ServerSpec(name, users, start or 0))
        self.servers = tuple(s.name for s in specs)
        return tuple(specs)

    def _nodes(self, value: Value) -> tuple[str, ...]:
        line = self.loc.top_key("nodes")
        if value is None:
            raise self.error('a scenario needs nodes = ["a", "b", ...] or nodes = N', None)
        if isinstance(value, int) and not isinstance(value, bool):
            count = self._int(value, "nodes", line, 2, MAX_NODES)
            width = len(str(count))
            return tuple(f"n{i:0{width}d}" for i in range(1, count + 1))
        if not isinstance(value, list) or len(value) < 2:
            raise self.error("nodes must be a list of at least two names, or a count", line)
        if len(value) > MAX_NODES:
            raise self.error(f"at most {MAX_NODES} nodes", line)
        names = []
        for v in value:
            if not isinstance(v, str) or not NAME_RE.fullmatch(v):
                raise self.error(f"bad node name {v!r}: a letter, then up to 31 letters, "
                                 "digits, '_' or '-'", line)
            if v in names:
                raise self.error(f"node {v!r} is declared twice", line)
            names.append(v)
        return tuple(names)

    def _network(self, table: Value) -> NetworkSpec:
        start = self.loc.header("network") or self.loc.top_key("network")
        if not isinstance(table, dict):
            raise self.error("network must be a table ([network])", start)
        for key in table:
            if key not in _NETWORK_KEYS:
                raise self.error(f"unknown key {key!r} in [network] (known: "
                                 f"{', '.join(_NETWORK_KEYS)})", self.loc.key(start, key))
        spec = NetworkSpec()
        if "latency_ms" in table:
            line = self.loc.key(start, "latency_ms")
            value = table["latency_ms"]
            if not isinstance(value, list) or len(value) != 2:
                raise self.error("latency_ms must be [low, high] in milliseconds", line)
            low, high = (self._float(v, "latency_ms", line, 0.0, MAX_LATENCY_MS) for v in value)
            if low > high:
                raise self.error("latency_ms: low must not exceed high", line)
            spec = dataclasses.replace(spec, latency_ms=(low, high))
        if "links" in table:
            line = self.loc.key(start, "links")
            value = table["links"]
            if not isinstance(value, list) or len(value) > MAX_LINKS:
                raise self.error(f"links must be a list of at most {MAX_LINKS} [a, b] pairs",
                                 line)
            pairs = []
            for pair in value:
                names, _ = self._node_list(pair, "a link", line)
                if len(names) != 2:
                    raise self.error("a link is a pair of two different nodes", line)
                pairs.append((names[0], names[1]))
            spec = dataclasses.replace(spec, links=tuple(pairs))
        if "random_links" in table:
            spec = dataclasses.replace(spec, random_links=self._int(
                table["random_links"], "random_links", self.loc.key(start, "random_links"), 0,
                MAX_LINKS))
        if "clock_skew_ms" in table:
            spec = dataclasses.replace(spec, clock_skew_ms=self._int(
                table["clock_skew_ms"], "clock_skew_ms", self.loc.key(start, "clock_skew_ms"),
                0, MAX_CLOCK_SKEW_MS))
        return spec

    def _channel(self, table: Value, index: int) -> ChannelSpec:
        start = self.loc.header("channel", index)
        if not isinstance(table, dict):
            raise self.error("each channel must be a table ([[channel]])", start)
        for key in table:
            if key not in _CHANNEL_KEYS:
                raise self.error(f"unknown key {key!r} in [[channel]] (known: "
                                 f"{', '.join(_CHANNEL_KEYS)})", self.loc.key(start, key))
        if "name" not in table:
            raise self.error("a channel needs a name", start)
        name = self._str(table["name"], "channel name", self.loc.key(start, "name"),
                         MAX_NAME_LENGTH)
        if name in self.channels:
            raise self.error(f"channel {name!r} is declared twice", self.loc.key(start, "name"))
        founder = self.nodes[0]
        if "founder" in table:
            founder = self._node(table["founder"], "founder", self.loc.key(start, "founder"))
        members = tuple(n for n in self.nodes if n != founder)
        if "members" in table:
            line = self.loc.key(start, "members")
            listed, everyone = self._node_list(table["members"], "members", line, allow_all=True)
            if not everyone:
                if founder in listed:
                    raise self.error(f"the founder {founder!r} is not listed in members", line)
                members = listed
        via = "founder"
        if "via" in table:
            line = self.loc.key(start, "via")
            value = table["via"]
            if value not in ("founder", "random", "chain"):
                value = self._node(value, "via (founder, random, chain or a node)", line)
                if value != founder and value not in members:
                    raise self.error(f"via {value!r} is not a member of the channel", line)
            via = str(value)
        return ChannelSpec(name, founder, members, via, start or 0)


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def parse_scenario(text: str, source: str = "<scenario>", name: str = "scenario") -> Scenario:
    """Validate the TOML ``text`` of a scenario; :class:`ScenarioError` names the line."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_POS_RE.search(message)
        if m:
            line, column = int(m.group(1)), int(m.group(2))
            raise ScenarioError(f"invalid TOML: {message[:m.start()]} (column {column})", line,
                                source) from None
        if message.endswith("(at end of document)"):
            raise ScenarioError(f"invalid TOML: {message.removesuffix(' (at end of document)')}"
                                " (at the end of the file)", max(1, len(text.splitlines())),
                                source) from None
        raise ScenarioError(f"invalid TOML: {message}", None, source) from None
    return _Parser(Locator(text), source).scenario(data, name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file (see :func:`parse_scenario`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read the file: {exc}", None, str(path)) from None
    return parse_scenario(text, str(path), path.stem)

