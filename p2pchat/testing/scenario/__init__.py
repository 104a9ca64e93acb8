"""Scenario files: a simulated run written down as TOML, replayed by ``p2pchat sim``.

A scenario file names the nodes, the bootstrap servers they use, the channels they
join and a list of steps: actions (post, edit, react, partition, heal, offline/online,
isolate/reconnect, block/unblock, per-link faults, hostile members, moderation, key
rotation, time, fault rates) and assertions (converged, history_equal, visible_to, …);
docs/scenarios/README.md has the format. This package is the engine, in four parts
that import only downwards:

* :mod:`.model` -- what a validated file says (one frozen dataclass per step kind, a
  closed union :data:`~.model.Step`), the limits, :class:`ScenarioError`,
  :class:`Verdict`. Imports none of the others.
* :mod:`.parser` (with :mod:`.parse_steps`, :mod:`.parse_values`, :mod:`.locator`) --
  :func:`load_scenario` / :func:`parse_scenario`: TOML in, a whole validated
  :class:`Scenario` out, or an error that names the line. Imports the model.
* :mod:`.runner` -- :class:`~.runner.Runner` executes a scenario in the deterministic
  simulator. Imports the model and the simulator.
* :mod:`.report` -- :class:`RunResult`: the verdicts, the shortest failure trace, JSON.
  Imports the model.

This module owns only the entry points that join them: :func:`run_scenario` and
:func:`run_scenario_file`.
"""

from __future__ import annotations

from pathlib import Path

from p2pchat.testing.scenario.model import (
    MAX_MESSAGES,
    MAX_NODES,
    MAX_SEED,
    MAX_STEPS,
    Action,
    Assertion,
    Scenario,
    ScenarioError,
    Step,
    Verdict,
)
from p2pchat.testing.scenario.parser import load_scenario, parse_scenario
from p2pchat.testing.scenario.report import RunResult
from p2pchat.testing.scenario.runner import Runner, SharedVerifier


def run_scenario(scenario: Scenario, seed: int | None = None,
                 messages: int | None = None) -> RunResult:
    """Run ``scenario`` with ``seed`` (default: the file's), optionally scaled to about
    ``messages`` posts (:meth:`Scenario.with_messages`)."""
    if messages is not None:
        scenario = scenario.with_messages(messages)
    used = scenario.seed if seed is None else seed
    if not 0 <= used <= MAX_SEED:
        raise ValueError(f"seed must be in 0..{MAX_SEED}")
    runner = Runner(scenario, used)
    error = runner.run()
    return RunResult(scenario, used, runner.net, runner.verdicts, error, runner.markers,
                     runner.posted)


def run_scenario_file(path: str | Path, seed: int | None = None,
                      messages: int | None = None) -> RunResult:
    """:func:`load_scenario` then :func:`run_scenario`."""
    return run_scenario(load_scenario(path), seed, messages)


__all__ = [
    "MAX_MESSAGES",
    "MAX_NODES",
    "MAX_STEPS",
    "Action",
    "Assertion",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "SharedVerifier",
    "Step",
    "Verdict",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "run_scenario_file",
]
