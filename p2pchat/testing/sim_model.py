"""The simulator's models (:mod:`p2pchat.testing.sim`): time, latency, faults, counters.

Owns the pure values a :class:`~p2pchat.testing.sim.SimNetwork` is configured and
measured with: the seed helpers (:func:`derive_rng`, :func:`seed_from_env`),
:class:`SimError`, the simulated :class:`FakeClock`, the latency distributions
(:class:`Constant`, :class:`Uniform`, :class:`LogNormal`), the fault model
(:class:`Faults`, per-direction :class:`LinkFaults`) and what the network counts
(:class:`Stats`, :data:`FAULT_COUNTERS`). Nothing here knows a node or a link.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field

#: Wall-clock milliseconds at simulated time 0 (2026-01-01T00:00:00Z).
WALL_BASE_MS = 1_767_225_600_000
#: The port every simulated node listens on.
SIM_PORT = 7445

End = tuple[str, int]  # (node name, link id at that node)


class SimError(AssertionError):
    """A simulation went wrong: a core raised, a run did not settle, replicas diverged.

    The message always names the seed, so the run can be replayed with ``SEED=…``.
    """


def seed_from_env(default: int) -> int:
    """``SEED`` from the environment (decimal or 0x-hex) if set, else ``default``."""
    value = os.environ.get("SEED", "").strip()
    return int(value, 0) if value else default


def derive_rng(seed: int, *parts: object) -> random.Random:
    """An independent ``random.Random`` for ``(seed, *parts)``; stable across runs and hosts."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


# --- time ----------------------------------------------------------------------------------


class FakeClock:
    """Simulated time: monotonic seconds (``now``) plus a derived wall clock in ms."""

    def __init__(self, start: float = 0.0, wall_base_ms: int = WALL_BASE_MS) -> None:
        self.now = float(start)
        self.wall_base_ms = wall_base_ms

    def advance_to(self, t: float) -> None:
        if t < self.now:
            raise ValueError(f"time runs forward only: {t} < {self.now}")
        self.now = t

    def advance(self, dt: float) -> None:
        self.advance_to(self.now + dt)

    def wall_ms(self, skew_ms: int = 0) -> int:
        """Unix-epoch milliseconds as seen by a node whose clock is off by ``skew_ms``."""
        return self.wall_base_ms + round(self.now * 1000) + skew_ms


# --- latency distributions ---------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    seconds: float

    def __call__(self, rng: random.Random) -> float:
        return self.seconds


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __call__(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogNormal:
    """Median ``median`` seconds, a long right tail (``sigma``), capped at ``cap``."""

    median: float
    sigma: float = 0.5
    cap: float = 2.0

    def __call__(self, rng: random.Random) -> float:
        return min(self.cap, rng.lognormvariate(math.log(self.median), self.sigma))


Latency = Callable[[random.Random], float]


@dataclass
class Faults:
    """What the network does to traffic. See the module docstring for the model."""

    #: One-way delay per ``Transmit``, seconds (never reorders bytes inside a link).
    latency: Latency = field(default_factory=lambda: Uniform(0.002, 0.020))
    #: Per ``Transmit``: the pipe stalls (loss + retransmission), holding later bytes too.
    stall_prob: float = 0.0
    #: Range of a stall, seconds.
    stall_time: tuple[float, float] = (0.2, 2.0)
    #: Per delivery: cut the bytes into several ``DataReceived`` pieces.
    split_prob: float = 0.0
    #: Mean lifetime of a link before it breaks, seconds (exponential); None: never.
    link_lifetime: float | None = None
    #: Fraction of breaks that are silent black holes instead of resets.
    silent_break: float = 0.0
    #: Per envelopes-only ``Transmit``: also deliver it again later on the same link.
    frame_duplicate: float = 0.0
    #: Per envelopes-only ``Transmit``: hold it back so later frames overtake it.
    frame_reorder: float = 0.0
    #: Extra delay of a duplicated or held-back frame, seconds.
    reorder_delay: tuple[float, float] = (0.01, 0.5)

    @classmethod
    def calm(cls, latency: Latency | None = None) -> Faults:
        """Latency only: no stalls, breaks or frame games."""
        return cls(latency=latency or Uniform(0.002, 0.020))

    @classmethod
    def chaos(cls) -> Faults:
        """Everything at once, at rates that still let a channel make progress."""
        return cls(latency=LogNormal(0.02, 0.8, 1.5), stall_prob=0.01, stall_time=(0.2, 3.0),
                   split_prob=0.2, link_lifetime=30.0, silent_break=0.3,
                   frame_duplicate=0.05, frame_reorder=0.05)


@dataclass(frozen=True)
class LinkFaults:
    """Faults of one direction of the links between two nodes (:meth:`SimNetwork.set_link`):
    they replace :attr:`Faults.latency` and add to :attr:`Faults.stall_prob` there."""

    #: one-way delay per ``Transmit`` on this direction; None: the network's
    latency: Latency | None = None
    #: per ``Transmit``: a lost packet, i.e. a stall of :attr:`Faults.stall_time`
    loss: float = 0.0


#: What :meth:`SimNetwork.fired` can count (``Stats`` fields), by the name a test uses.
FAULT_COUNTERS = {"loss": "stalls", "reset": "resets", "black_hole": "black_holes",
                  "split": "splits", "duplicate": "duplicated", "reorder": "reordered",
                  "dial_failure": "dial_failures", "held": "held", "hostile": "hostile"}


@dataclass
class Stats:
    """Counters of what the network did (to check a scenario exercised its faults)."""

    transmits: int = 0
    bytes: int = 0
    links: int = 0
    resets: int = 0
    black_holes: int = 0
    stalls: int = 0
    splits: int = 0
    duplicated: int = 0
    reordered: int = 0
    dials: int = 0
    dial_failures: int = 0
    closes: int = 0
    events: int = 0
    #: transmissions that had to wait at a partition, a one-way block or an isolation
    held: int = 0
    #: frames a hostile step put on the wire (:meth:`SimNetwork.inject`)
    hostile: int = 0
