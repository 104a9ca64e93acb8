"""The one rounding rule between the core's two clocks.

The core gets monotonic time as ``now`` (float seconds) and keeps wall time in
integer milliseconds (``wall_ms = ms(now) + offset``). Timers kept in
milliseconds (admission grace, key work) are handed back to the runtime as a
``now`` deadline. Converting naively (``due / 1000``) can give a float just
below the true value, for which ``ms()`` floors to ``due - 1``: the timer fires,
finds nothing due and asks for the same deadline again, and a runtime spins.

So both directions go through this module: :func:`ms` floors, and
:func:`at_ms` returns the smallest float whose :func:`ms` is ``>= due``. A
timer armed with :func:`at_ms` therefore always finds its work due when it
fires (``tests/property/test_clock_properties.py``).
"""

from __future__ import annotations

import math


def ms(now: float) -> int:
    """Whole milliseconds of ``now`` (seconds), floored."""
    return math.floor(now * 1000)


def at_ms(due: int) -> float:
    """The earliest ``now`` (seconds) at which ``ms(now) >= due``."""
    t = due / 1000
    while ms(t) < due:
        t = math.nextafter(t, math.inf)
    while True:  # the float just below may map to ``due`` too: take the earliest
        before = math.nextafter(t, -math.inf)
        if ms(before) < due:
            return t
        t = before
