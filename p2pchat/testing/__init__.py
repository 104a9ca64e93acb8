"""Testing kit shipped with p2pchat (trio ``testing`` style): the deterministic simulator.

``SimNetwork`` runs real :class:`~p2pchat.core.NodeCore` instances over a
simulated, seeded network; see :mod:`p2pchat.testing.sim` for the fault model.
"""

from p2pchat.testing.blindstore import BlindStore
from p2pchat.testing.sim import (
    FAULT_COUNTERS,
    HOSTILE_KINDS,
    WALL_BASE_MS,
    Constant,
    FakeClock,
    Faults,
    Latency,
    LinkFaults,
    LogNormal,
    SimError,
    SimNetwork,
    SimNode,
    Stats,
    Uniform,
    derive_rng,
    seed_from_env,
)

__all__ = [
    "FAULT_COUNTERS",
    "HOSTILE_KINDS",
    "WALL_BASE_MS",
    "BlindStore",
    "Constant",
    "FakeClock",
    "Faults",
    "Latency",
    "LinkFaults",
    "LogNormal",
    "SimError",
    "SimNetwork",
    "SimNode",
    "Stats",
    "Uniform",
    "derive_rng",
    "seed_from_env",
]
