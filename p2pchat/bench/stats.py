"""Order statistics for benchmark samples."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted ``ordered``, linearly interpolated."""
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in 0..100, got {q}")
    rank = (len(ordered) - 1) * q / 100.0
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class Summary:
    """Summary of one sample set, in the unit the samples were given in."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    def scaled(self, factor: float) -> Summary:
        return Summary(self.n, self.p50 * factor, self.p90 * factor, self.p99 * factor,
                       self.mean * factor, self.min * factor, self.max * factor)

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        return {
            "n": self.n,
            "p50": round(self.p50, digits),
            "p90": round(self.p90, digits),
            "p99": round(self.p99, digits),
            "mean": round(self.mean, digits),
            "min": round(self.min, digits),
            "max": round(self.max, digits),
        }


def summarize(samples: Sequence[float]) -> Summary:
    ordered = sorted(samples)
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        mean=math.fsum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
    )


#: Points of a latency CDF kept in the report (percentiles 0, 1, ..., 100).
CDF_POINTS = 101


def cdf(samples: Sequence[float], points: int = CDF_POINTS, digits: int = 4) -> list[float]:
    """The samples' percentiles at ``points`` evenly spaced ranks from 0 to 100.

    A compact stand-in for the whole sample set: enough to draw its CDF (the
    value at index i is the ``100 * i / (points - 1)``-th percentile).
    """
    if points < 2:
        raise ValueError("a CDF needs at least two points")
    ordered = sorted(samples)
    if not ordered:
        return []
    return [round(percentile(ordered, 100.0 * i / (points - 1)), digits) for i in range(points)]
