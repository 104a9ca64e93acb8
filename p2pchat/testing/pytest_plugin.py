"""A pytest fixture that runs scenario files: turn a bug report into a test.

Register it from a ``conftest.py`` (``from p2pchat.testing.pytest_plugin import
run_scenario``), or with ``-p p2pchat.testing.pytest_plugin``. Then::

    def test_issue_123(run_scenario):
        run_scenario("tests/sim/scenarios/issue-123.toml")

The fixture runs the file in the deterministic simulator (the engine behind
``p2pchat sim``) and fails the test with the verdicts, the seed and the
shortest trace that shows the failure. ``SEED=…`` in the environment replays
another seed; ``seed=`` and ``messages=`` (scale the posts down) override too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from p2pchat.testing.scenario import RunResult, load_scenario
from p2pchat.testing.scenario import run_scenario as _run
from p2pchat.testing.sim import seed_from_env

#: ``run_scenario(path, *, seed=None, messages=None, check=True) -> RunResult``
ScenarioRunner = Callable[..., RunResult]


def _runner(path: str | Path, *, seed: int | None = None, messages: int | None = None,
            check: bool = True) -> RunResult:
    scenario = load_scenario(path)
    if seed is None:
        seed = seed_from_env(scenario.seed)
    result = _run(scenario, seed, messages)
    if check and not result.passed:
        pytest.fail(result.report(), pytrace=False)
    return result


@pytest.fixture
def run_scenario() -> ScenarioRunner:
    """Run a scenario file; fails the test (with seed and trace) unless every assertion
    holds. ``check=False`` returns the :class:`RunResult` without failing."""
    return _runner
