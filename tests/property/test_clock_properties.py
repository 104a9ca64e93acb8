"""The core's one rounding rule between seconds and milliseconds (issue 16, break 2).

A key-work deadline of 16,080 ms became ``16.08`` s, whose floor in ms is 16,079:
the timer fired 1 ms early, did nothing, and asked for the same deadline again.
"""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.core import clock
from p2pchat.testing import Faults, SimNetwork, Uniform


@given(st.integers(min_value=0, max_value=10**13))
def test_at_ms_is_the_earliest_time_the_millisecond_is_due(due: int) -> None:
    t = clock.at_ms(due)
    assert clock.ms(t) >= due
    assert clock.ms(math.nextafter(t, -math.inf)) < due


@given(st.integers(min_value=-(10**12), max_value=10**12),
       st.integers(min_value=0, max_value=10**10))
def test_a_deadline_in_wall_ms_is_due_when_it_fires(offset: int, due_wall: int) -> None:
    """What NodeCore does: wall = ms(now) + offset; the deadline for a wall-ms due time
    is at_ms(due - offset); at that now the wall time has reached it."""
    now = clock.at_ms(due_wall - offset)
    assert clock.ms(now) + offset >= due_wall


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=0, max_value=2**32),
       st.floats(min_value=0.0005, max_value=0.05), st.floats(min_value=0.0, max_value=0.08),
       st.integers(min_value=4, max_value=12))
def test_every_fired_timer_makes_progress_under_any_latency(seed: int, lo: float, spread: float,
                                                            count: int) -> None:
    """Joiners in a chain at random latencies: the simulator fails the run if a timer
    fires and leaves ``next_deadline()`` where it was (a runtime would spin)."""
    names = [f"n{i:02d}" for i in range(count)]
    net = SimNetwork(seed, names, faults=Faults(latency=Uniform(lo, lo + spread)))
    channel = net.create_channel(names[0], "g")
    for prev, name in itertools.pairwise(names):
        net.join(name, channel, via=prev)
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), timeout=3600,
                 what="admissions along the chain")
    net.run_until_quiet()
