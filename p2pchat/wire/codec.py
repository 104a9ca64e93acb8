"""Frame codec: 4-byte big-endian length prefix + msgpack map ``{"v", "t", fields…}``.

Decoding is strict and total: any input either yields frames or raises
:class:`~p2pchat.errors.CodecError` (never another exception type). A length
prefix above :data:`MAX_FRAME_SIZE` is refused as soon as the 4 bytes arrive, so a
hostile peer cannot make us buffer more than one maximal frame.
"""

from __future__ import annotations

import dataclasses
import struct
import unicodedata
from typing import Any, get_args, get_origin, get_type_hints

import msgpack

from p2pchat.errors import CodecError, FrameTooLarge
from p2pchat.wire.frames import FRAME_TYPES, Frame, Record

WIRE_VERSION = 1
MAX_FRAME_SIZE = 1024 * 1024  # hard limit for one frame's payload, in bytes
LENGTH_PREFIX_SIZE = 4
_PREFIX = struct.Struct(">I")
_RESERVED_KEYS = ("v", "t")


@dataclasses.dataclass(frozen=True, slots=True)
class _FieldSpec:
    """How one field (or, for sequences, each element) is validated."""

    name: str
    kind: type
    min_len: int
    max_len: int | None
    lo: int
    hi: int
    printable: bool
    seq: bool = False
    max_items: int = 0

    def length_ok(self, n: int) -> bool:
        return n >= self.min_len and (self.max_len is None or n <= self.max_len)


_SPECS: dict[type, tuple[_FieldSpec, ...]] = {}
_SCALARS = (int, str, bytes, bool)


def _specs(cls: type) -> tuple[_FieldSpec, ...]:
    cached = _SPECS.get(cls)
    if cached is None:
        cached = _SPECS[cls] = _build_specs(cls)
    return cached


def _build_specs(cls: type) -> tuple[_FieldSpec, ...]:
    hints = get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        seq = get_origin(hint) is tuple
        if seq:
            args = get_args(hint)
            if len(args) != 2 or args[1] is not Ellipsis:
                raise TypeError(f"{cls.__name__}.{f.name}: only tuple[X, ...] is supported")
            hint = args[0]
        if hint not in _SCALARS and not (isinstance(hint, type) and issubclass(hint, Record)):
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {hint!r}")
        md = f.metadata
        if seq and not md.get("max_items"):
            raise TypeError(f"{cls.__name__}.{f.name}: sequences need max_items")
        specs.append(
            _FieldSpec(
                f.name, hint, md.get("min_len", 0), md.get("max_len"), md.get("lo", 0),
                md.get("hi", 2**64 - 1), md.get("printable", False), seq,
                md.get("max_items", 0),
            )
        )
    return tuple(specs)


def _check_scalar(tag: str, spec: _FieldSpec, value: Any) -> None:
    # bool is a subclass of int in Python; on the wire they are distinct types.
    if type(value) is not spec.kind:
        raise CodecError(
            f"frame {tag!r}: field {spec.name!r} must be {spec.kind.__name__}, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, (str, bytes)):
        n = len(value)
        if not spec.length_ok(n):
            raise CodecError(
                f"frame {tag!r}: field {spec.name!r} has length {n}, "
                f"allowed {spec.min_len}..{spec.max_len}"
            )
        if spec.printable and isinstance(value, str) and not _printable(value):
            raise CodecError(f"frame {tag!r}: field {spec.name!r} contains control characters")
    elif isinstance(value, int) and not spec.lo <= value <= spec.hi:
        raise CodecError(f"frame {tag!r}: field {spec.name!r} out of range: {value}")


def _decode_one(tag: str, spec: _FieldSpec, value: Any) -> Any:
    if spec.kind in _SCALARS:
        _check_scalar(tag, spec, value)
        return value
    subspecs = _specs(spec.kind)
    if not isinstance(value, list) or len(value) != len(subspecs):
        raise CodecError(f"frame {tag!r}: field {spec.name!r} must be a "
                         f"{len(subspecs)}-item record")
    return spec.kind(*(_decode_value(tag, sub, v) for sub, v in zip(subspecs, value, strict=True)))


def _decode_value(tag: str, spec: _FieldSpec, value: Any) -> Any:
    if not spec.seq:
        return _decode_one(tag, spec, value)
    if not isinstance(value, list):
        raise CodecError(f"frame {tag!r}: field {spec.name!r} must be a list")
    if len(value) > spec.max_items:
        raise CodecError(f"frame {tag!r}: field {spec.name!r} has {len(value)} items, "
                         f"max {spec.max_items}")
    return tuple(_decode_one(tag, spec, v) for v in value)


def _encode_one(tag: str, spec: _FieldSpec, value: Any) -> Any:
    if spec.kind in _SCALARS:
        _check_scalar(tag, spec, value)
        return value
    if type(value) is not spec.kind:
        raise CodecError(f"frame {tag!r}: field {spec.name!r} must be {spec.kind.__name__}")
    return [_encode_value(tag, sub, getattr(value, sub.name)) for sub in _specs(spec.kind)]


def _encode_value(tag: str, spec: _FieldSpec, value: Any) -> Any:
    if not spec.seq:
        return _encode_one(tag, spec, value)
    if type(value) is not tuple or len(value) > spec.max_items:
        raise CodecError(f"frame {tag!r}: field {spec.name!r} must be a tuple of at most "
                         f"{spec.max_items} items")
    return [_encode_one(tag, spec, v) for v in value]


def _printable(text: str) -> bool:
    if text.isascii() and text.isprintable():  # the common case, without a lookup per char
        return True
    return all(unicodedata.category(c)[0] != "C" for c in text)


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise CodecError("duplicate key in map")
    return out


def encode_payload(frame: Frame) -> bytes:
    """The msgpack payload of ``frame`` (no length prefix). Validates as decode would."""
    body: dict[str, Any] = {"v": WIRE_VERSION, "t": frame.TAG}
    for spec in _specs(type(frame)):
        body[spec.name] = _encode_value(frame.TAG, spec, getattr(frame, spec.name))
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def encode_frame(frame: Frame) -> bytes:
    """Length-prefixed frame, ready for a stream."""
    payload = encode_payload(frame)
    if len(payload) > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"frame {frame.TAG!r} is {len(payload)} bytes, max {MAX_FRAME_SIZE}")
    return _PREFIX.pack(len(payload)) + payload


def _no_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def decode_payload(payload: bytes) -> Frame:
    """Decode one payload into its typed frame, or raise :class:`CodecError`."""
    if len(payload) > MAX_FRAME_SIZE:
        raise FrameTooLarge(f"frame of {len(payload)} bytes, max {MAX_FRAME_SIZE}")
    try:
        obj = msgpack.unpackb(
            payload, raw=False, strict_map_key=True, ext_hook=_no_ext, use_list=True,
            object_pairs_hook=_unique_map,
        )
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types; all mean "malformed"
        raise CodecError(f"malformed msgpack: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise CodecError(f"frame must be a map, got {type(obj).__name__}")
    version = obj.get("v")
    if type(version) is not int or version != WIRE_VERSION:
        raise CodecError(f"unsupported wire version {version!r} (this node speaks {WIRE_VERSION})")
    tag = obj.get("t")
    if type(tag) is not str:
        raise CodecError("frame has no type tag")
    cls = FRAME_TYPES.get(tag)
    if cls is None:
        raise CodecError(f"unknown frame type {tag[:32]!r}")
    specs = _specs(cls)
    expected = {s.name for s in specs}
    extra = set(obj) - expected - set(_RESERVED_KEYS)
    if extra:
        names = ", ".join(sorted(repr(k)[:32] for k in extra)[:4])
        raise CodecError(f"frame {tag!r}: unknown field(s) {names}")
    kwargs = {}
    for spec in specs:
        if spec.name not in obj:
            raise CodecError(f"frame {tag!r}: missing field {spec.name!r}")
        kwargs[spec.name] = _decode_value(tag, spec, obj[spec.name])
    return cls(**kwargs)


class FrameDecoder:
    """Incremental decoder for one stream: ``feed(bytes) -> [Frame]``.

    After it raises once it stays failed; the link must be closed.
    """

    __slots__ = ("_buf", "_failed", "max_frame_size")

    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self._buf = bytearray()
        self._failed = False
        self.max_frame_size = max_frame_size

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed:
            raise CodecError("decoder already failed")
        self._buf += data
        frames: list[Frame] = []
        try:
            while len(self._buf) >= LENGTH_PREFIX_SIZE:
                (size,) = _PREFIX.unpack_from(self._buf)
                if size == 0:
                    raise CodecError("empty frame")
                if size > self.max_frame_size:
                    raise FrameTooLarge(
                        f"length prefix announces {size} bytes, max {self.max_frame_size}"
                    )
                end = LENGTH_PREFIX_SIZE + size
                if len(self._buf) < end:
                    break
                payload = bytes(self._buf[LENGTH_PREFIX_SIZE:end])
                del self._buf[:end]
                frames.append(decode_payload(payload))
        except CodecError:
            self._failed = True
            self._buf.clear()
            raise
        return frames
