"""Test-side view of the frame schema, read from the dataclasses themselves.

Everything here is derived from ``FRAME_TYPES``, the dataclass fields, their type
hints and their ``limits(...)`` metadata, so a new frame type is covered by the
generic codec tests and the Hypothesis strategies without editing them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final, get_args, get_origin, get_type_hints

from hypothesis import strategies as st

from p2pchat.wire import FRAME_TYPES, Frame
from p2pchat.wire.frames import U64_MAX, Record

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
    #: ``tuple[kind, ...]`` fields: the other limits apply per element
    seq: bool = False
    max_items: int = 0

    def element(self) -> FieldInfo:
        return dataclasses.replace(self, seq=False, max_items=0)


#: Unicode categories a ``printable`` string field may not contain (all of "C*").
CONTROL_CATEGORIES: Final = ("Cc", "Cf", "Cs", "Co", "Cn")


def tags() -> list[str]:
    return sorted(FRAME_TYPES)


def frame_classes() -> list[type[Frame]]:
    return [FRAME_TYPES[t] for t in tags()]


def field_infos(cls: type) -> list[FieldInfo]:
    hints = get_type_hints(cls)
    infos = []
    for f in dataclasses.fields(cls):
        md = f.metadata
        kind = hints[f.name]
        seq = get_origin(kind) is tuple
        if seq:
            kind = get_args(kind)[0]
        infos.append(FieldInfo(
            f.name, kind, md.get("min_len", 0), md.get("max_len"), md.get("lo", 0),
            md.get("hi", U64_MAX), md.get("printable", False), seq, md.get("max_items", 0),
        ))
    return infos


def is_record(info: FieldInfo) -> bool:
    return isinstance(info.kind, type) and issubclass(info.kind, Record)


def all_fields() -> list[tuple[str, FieldInfo]]:
    """(tag, field) for every scalar top-level field of every frame type."""
    return [(t, f) for t in tags() for f in field_infos(FRAME_TYPES[t])
            if not f.seq and not is_record(f)]


def sequence_fields() -> list[tuple[str, FieldInfo]]:
    """(tag, field) for every ``tuple[X, ...]`` field of every frame type."""
    return [(t, f) for t in tags() for f in field_infos(FRAME_TYPES[t]) if f.seq]


def wire_value(info: FieldInfo, value: Any) -> Any:
    """How ``value`` of this field looks in the decoded msgpack body."""
    if info.seq:
        return [wire_value(info.element(), v) for v in value]
    if is_record(info):
        return [wire_value(f, getattr(value, f.name)) for f in field_infos(info.kind)]
    return value


def minimal_value(info: FieldInfo) -> Any:
    if info.seq:
        return ()
    if is_record(info):
        return info.kind(**{f.name: minimal_value(f) for f in field_infos(info.kind)})
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
    if info.seq:
        return st.lists(value_strategy(info.element()), max_size=min(info.max_items, 4)).map(
            tuple)
    if is_record(info):
        return st.builds(info.kind, **{f.name: value_strategy(f) for f in field_infos(info.kind)})
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
