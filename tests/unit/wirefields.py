"""Test-side view of the frame schema, read from the dataclasses themselves.

Everything here is derived from ``FRAME_TYPES``, the dataclass fields, their type
hints and their ``limits(...)`` metadata, so a new frame type is covered by the
generic codec tests and the Hypothesis strategies without editing them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, get_type_hints

from hypothesis import strategies as st

from p2pchat.wire import FRAME_TYPES, Frame
from p2pchat.wire.frames import U64_MAX

#: Length used for the upper end of an unbounded str/bytes field in strategies.
UNBOUNDED_EXTRA = 300


@dataclass(frozen=True)
class FieldInfo:
    name: str
    kind: type
    min_len: int
    max_len: int | None
    lo: int
    hi: int
    printable: bool


#: Unicode categories a ``printable`` string field may not contain (all of "C*").
CONTROL_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def tags() -> list[str]:
    return sorted(FRAME_TYPES)


def frame_classes() -> list[type[Frame]]:
    return [FRAME_TYPES[t] for t in tags()]


def field_infos(cls: type[Frame]) -> list[FieldInfo]:
    hints = get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        md = f.metadata
        infos.append(FieldInfo(
            f.name, hints[f.name], md.get("min_len", 0), md.get("max_len"), md.get("lo", 0),
            md.get("hi", U64_MAX), md.get("printable", False),
        ))
    return infos


def all_fields() -> list[tuple[str, FieldInfo]]:
    """(tag, field) for every field of every frame type."""
    return [(t, f) for t in tags() for f in field_infos(FRAME_TYPES[t])]


def minimal_value(info: FieldInfo) -> Any:
    if info.kind is bytes:
        return b"\x00" * info.min_len
    if info.kind is str:
        return "a" * info.min_len
    if info.kind is bool:
        return False
    if info.kind is int:
        return info.lo
    raise AssertionError(f"no test support for wire type {info.kind!r} of field {info.name!r}")


def minimal_frame(cls: type[Frame]) -> Frame:
    return cls(**{f.name: minimal_value(f) for f in field_infos(cls)})


def value_strategy(info: FieldInfo) -> st.SearchStrategy[Any]:
    if info.kind is bytes:
        top = info.max_len if info.max_len is not None else info.min_len + UNBOUNDED_EXTRA
        return st.binary(min_size=info.min_len, max_size=top)
    if info.kind is str:
        top = info.max_len if info.max_len is not None else info.min_len + UNBOUNDED_EXTRA
        if info.printable:
            alphabet = st.characters(exclude_categories=CONTROL_CATEGORIES)
            return st.text(alphabet, min_size=info.min_len, max_size=top)
        return st.text(min_size=info.min_len, max_size=top)
    if info.kind is bool:
        return st.booleans()
    if info.kind is int:
        # Bias towards the edges, where range checks live.
        return st.one_of(
            st.sampled_from(sorted({info.lo, info.hi, min(info.lo + 1, info.hi)})),
            st.integers(info.lo, info.hi),
        )
    raise AssertionError(f"no strategy for wire type {info.kind!r} of field {info.name!r}")


def frame_strategy(cls: type[Frame]) -> st.SearchStrategy[Frame]:
    return st.builds(cls, **{f.name: value_strategy(f) for f in field_infos(cls)})


def any_frame() -> st.SearchStrategy[Frame]:
    return st.one_of([frame_strategy(cls) for cls in frame_classes()])
