"""Fixtures of the simulator tests: ``run_scenario`` runs a scenario file (docs/scenarios)."""

from p2pchat.testing.pytest_plugin import run_scenario

__all__ = ["run_scenario"]
