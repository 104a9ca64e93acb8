"""Did the last run stop in a way that can lose stored writes?

The store commits with ``synchronous=NORMAL`` in WAL mode: a killed *process*
loses nothing it committed (the OS still writes the pages), but a power cut or
an OS crash can drop the last commits. A node sends its own envelopes only after
they are committed, so after such a stop peers may hold envelopes of ours that
our store lost. Writing on from the stored head would then fork our own chain
(design.md §10.5).

So a run leaves a marker file ``running`` in its home holding the machine's boot
id, and removes it on a clean stop. At start:

* no marker: the last run stopped cleanly: the head is known;
* a marker with this boot's id: the process was killed, the machine kept
  running: committed writes are safe, the head is known;
* a marker from another boot (or unreadable, or no boot id on this platform):
  the head is *unsure*; each channel's next write goes to a fresh sub-device
  unless a peer's summary shows the head first.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

#: the marker's name in the node home
MARKER_NAME = "running"
#: where Linux tells this boot's id
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This boot's id, or '' where the platform has none (then any unclean stop counts
    as one that may have lost writes)."""
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def begin_run(home: Path, current_boot: str | None = None) -> bool:
    """Record that a run has begun; True if the last run may have lost stored writes."""
    current = boot_id() if current_boot is None else current_boot
    marker = home / MARKER_NAME
    try:
        previous: str | None = marker.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        previous = None
    except (OSError, UnicodeDecodeError):
        previous = ""
    unsure = previous is not None and (not current or previous != current)
    tmp = marker.with_name(MARKER_NAME + ".tmp")
    with open(tmp, "w", encoding="ascii") as f:
        f.write(current + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, marker)
    return unsure


def end_run(home: Path) -> None:
    """A clean stop: everything the store committed is on disk."""
    with contextlib.suppress(FileNotFoundError):
        (home / MARKER_NAME).unlink()
