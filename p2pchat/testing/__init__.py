"""Testing kit shipped with p2pchat (trio ``testing`` style): the deterministic simulator.

``SimNetwork`` runs real :class:`~p2pchat.core.NodeCore` instances over a
simulated, seeded network; see :mod:`p2pchat.testing.sim` for the fault model.
"""

from p2pchat.testing.sim import (
    WALL_BASE_MS,
    Constant,
    FakeClock,
    Faults,
    Latency,
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
    "WALL_BASE_MS",
    "Constant",
    "FakeClock",
    "Faults",
    "Latency",
    "LogNormal",
    "SimError",
    "SimNetwork",
    "SimNode",
    "Stats",
    "Uniform",
    "derive_rng",
    "seed_from_env",
]
