"""Property tests share the in-memory network harness of the unit tests (tests/unit/corenet.py)."""

import sys
from pathlib import Path

_UNIT = str(Path(__file__).resolve().parent.parent / "unit")
if _UNIT not in sys.path:
    sys.path.insert(0, _UNIT)
