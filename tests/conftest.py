"""Settings for the whole suite: Hypothesis profiles that hold on a loaded machine.

Hypothesis's ``deadline`` (200 ms per example by default) and its ``too_slow``
health check measure wall-clock time, so on a loaded machine they fail a
correct test. Both are off everywhere: tests check behaviour, not speed.
Under CI (``CI`` set, as ``.ci/run`` is run) the ``ci`` profile also
derandomises the examples and keeps no example database, so a run is the same
on every machine and a failure replays. ``HYPOTHESIS_PROFILE=dev|ci`` picks one
by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", settings.get_profile("dev"), derandomize=True, database=None,
                          print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI")
                                                                else "dev"))
