"""The outcome of a scenario run, rendered: verdicts, the failure trace, JSON.

Owns :class:`RunResult`: the verdicts a run gave, the action that stopped it (if one
did) and the simulated network, with ``report()`` (human-readable), ``to_json()``
(byte-identical for one file and seed in any process), ``full_trace()`` (``--trace``)
and ``failure_trace()``: the *shortest trace that shows* the first failure -- the
simulator's event trace cut at the first failing assertion (nothing after it can
matter), restricted to the nodes that assertion is about (network-wide events --
partitions, heals, crashes, link resets involving them -- stay), without keepalive
pings/pongs and timer firings, with the scenario's steps interleaved as ``== step``
lines, and at most :data:`~.model.MAX_TRACE_LINES` lines (the last ones). Imports the
model (and the simulator's network, whose trace and statistics it reads).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pchat.testing.scenario.model import MAX_TRACE_LINES, Scenario, Verdict
from p2pchat.testing.sim import SimNetwork


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    net: SimNetwork
    verdicts: list[Verdict]
    #: the action that stopped the run, if one failed
    error: Verdict | None
    #: (trace length when the step started, what it was): the script in the trace
    markers: list[tuple[int, str]]
    messages: int

    @property
    def passed(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts)

    @property
    def first_failure(self) -> Verdict | None:
        failed = [v for v in self.verdicts if not v.passed]
        if self.error is not None:
            failed.append(self.error)
        return min(failed, key=lambda v: v.trace_at, default=None)

    def full_trace(self) -> list[str]:
        """Every trace event, with the script's steps interleaved (``--trace``)."""
        return self._render(self.net.trace, lambda _: True, len(self.net.trace),
                            len(self.markers))

    def failure_trace(self) -> list[str]:
        """The shortest trace that shows the first failure (see the module docstring)."""
        failure = self.first_failure
        if failure is None:
            return []
        relevant = set(failure.nodes) if failure.nodes else set(self.scenario.nodes)

        def keep(entry: tuple[str, ...]) -> bool:
            return _relevant(entry, relevant)

        lines = self._render(self.net.trace, keep, failure.trace_at, failure.markers_at)
        lines.append(f"== {failure.kind} FAILED: {failure.detail.splitlines()[0]}"
                     if failure.detail else f"== {failure.kind} FAILED")
        if len(lines) > MAX_TRACE_LINES:
            dropped = len(lines) - MAX_TRACE_LINES
            lines = [f"... {dropped} earlier lines left out (--trace FILE writes the whole "
                     "trace)", *lines[-MAX_TRACE_LINES:]]
        return lines

    def _render(self, trace: list[tuple[str, ...]], keep: Callable[[tuple[str, ...]], bool],
                end: int, markers_end: int) -> list[str]:
        out: list[str] = []
        markers = iter(self.markers[:markers_end])
        marker = next(markers, None)
        for index in range(end):
            while marker is not None and marker[0] <= index:
                out.append(marker[1])
                marker = next(markers, None)
            entry = trace[index]
            if keep(entry):
                out.append(" ".join(entry))
        while marker is not None and marker[0] <= end:
            out.append(marker[1])
            marker = next(markers, None)
        return out

    def to_json(self) -> dict[str, Any]:
        failure = self.first_failure
        net = self.net
        return {
            "scenario": self.scenario.name,
            "file": Path(self.scenario.source).name if self.scenario.source else "",
            "seed": self.seed,
            "replay": f"p2pchat sim {self.scenario.source or 'FILE'} --seed {self.seed}",
            "passed": self.passed,
            "assertions": [v.to_json() for v in self.verdicts],
            "error": self.error.to_json() if self.error is not None else None,
            "failure": None if failure is None else {
                **failure.to_json(), "nodes": list(failure.nodes),
                "trace": self.failure_trace()},
            "nodes": len(self.scenario.nodes),
            "messages": self.messages,
            "sim_time": round(net.now, 6),
            "events": net.stats.events,
            "trace_events": len(net.trace),
            "trace_digest": net.trace_digest(),
            "stats": dataclasses.asdict(net.stats),
        }

    def report(self) -> str:
        """Human-readable verdicts; on failure the seed and the failure trace."""
        s = self.scenario
        lines = [f"scenario {s.name!r} ({s.source or 'text'}), seed {self.seed}: "
                 f"{len(s.nodes)} nodes, {self.messages} messages"]
        for v in self.verdicts:
            first, *rest = (v.detail or "").splitlines() or [""]
            lines.append(f"  {'PASS' if v.passed else 'FAIL'}  {v.kind:<15} line {v.line:<4} "
                         f"{first}")
            lines += [f"        {r}" for r in rest[:40]]
        if self.error is not None:
            lines.append(f"  STOP  {self.error.kind} at line {self.error.line}: "
                         f"{self.error.detail}")
        passed = sum(v.passed for v in self.verdicts)
        lines.append(f"{passed} of {len(self.verdicts)} assertions passed; simulated "
                     f"{self.net.now:.1f} s, {self.net.stats.events} events")
        if not self.passed:
            failure = self.first_failure
            assert failure is not None
            lines.append(f"FAILED with seed {self.seed} (replay: p2pchat sim "
                         f"{s.source or 'FILE'} --seed {self.seed})")
            about = ", ".join(failure.nodes) if failure.nodes else "all nodes"
            lines.append(f"shortest trace showing it (up to {failure.where_text()}, "
                         f"events at {about}; no keepalives or timers):")
            lines += [f"  {line}" for line in self.failure_trace()]
        return "\n".join(lines)


_KEEPALIVE_ONLY = frozenset({"ping", "pong"})


def _relevant(entry: tuple[str, ...], nodes: set[str]) -> bool:
    """Whether a trace entry belongs in the failure trace for ``nodes``."""
    who, kind = entry[1], entry[2]
    if who == "*":
        if kind in ("partition", "heal"):
            return True
        names = re.split(r"[-#\s,|]+", " ".join(entry[3:]))
        return any(n in nodes for n in names)
    if who not in nodes or kind == "timer":
        return False
    if kind == "data":
        words = set(re.findall(r"[a-z]+", entry[3].split(" ", 3)[-1])) if len(entry) > 3 \
            else set()
        return not words or not words <= _KEEPALIVE_ONLY
    return True

