"""Property tests of the frame codec: round trips and totality of decoding.

Strategies are generated from the frame dataclasses (tests/unit/wirefields.py),
so every type in FRAME_TYPES is covered, including ones added later.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat.errors import CodecError
from p2pchat.wire import (
    FRAME_TYPES,
    MAX_FRAME_SIZE,
    Frame,
    FrameDecoder,
    decode_payload,
    encode_frame,
    encode_payload,
)
from tests.unit.wirefields import any_frame, field_infos, frame_strategy, tags

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunkings(data: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(data)), max_size=12).map(lambda cuts: chunked(data, cuts))


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[Frame]:
    frames: list[Frame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames


def assert_total(payload: bytes) -> None:
    """decode_payload either raises CodecError or returns a frame that round-trips."""
    try:
        frame = decode_payload(payload)
    except CodecError:
        return
    assert frame == decode_payload(encode_payload(frame))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("tag", tags())
@SETTINGS
@given(data=st.data())
def test_every_frame_type_round_trips(tag: str, data: st.DataObject) -> None:
    frame = data.draw(frame_strategy(FRAME_TYPES[tag]))
    assert frame == decode_payload(encode_payload(frame))
    assert [frame] == FrameDecoder().feed(encode_frame(frame))


@SETTINGS
@given(frames=st.lists(any_frame(), max_size=8), data=st.data())
def test_any_chunking_yields_the_same_frames(frames: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    chunks = data.draw(chunkings(stream))
    decoder = FrameDecoder()
    assert frames == feed_all(decoder, chunks)
    assert 0 == decoder.buffered


@SETTINGS
@given(frame=any_frame())
def test_encoding_is_deterministic_and_bounded(frame: Frame) -> None:
    encoded = encode_frame(frame)
    assert encoded == encode_frame(frame)
    assert len(encoded) - 4 == int.from_bytes(encoded[:4], "big") <= MAX_FRAME_SIZE


# --- totality: nothing but CodecError --------------------------------------------------------


@SETTINGS
@given(payload=st.binary(max_size=400))
def test_arbitrary_payload_bytes_raise_only_codec_errors(payload: bytes) -> None:
    assert_total(payload)


@SETTINGS
@given(frame=any_frame(), data=st.data())
def test_corrupted_payloads_raise_only_codec_errors(frame: Frame, data: st.DataObject) -> None:
    payload = bytearray(encode_payload(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(payload) - 1))
        payload[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    assert_total(bytes(payload[:cut]) if data.draw(st.booleans()) else bytes(payload))


@SETTINGS
@given(stream=st.binary(max_size=600), data=st.data())
def test_arbitrary_stream_bytes_raise_only_codec_errors(stream: bytes, data: st.DataObject) -> None:
    chunks = data.draw(chunkings(stream))
    decoder = FrameDecoder()
    try:
        feed_all(decoder, chunks)
    except CodecError:
        with pytest.raises(CodecError):
            decoder.feed(b"")  # and it stays failed


@SETTINGS
@given(good=st.lists(any_frame(), max_size=3), junk=st.binary(min_size=1, max_size=200),
       data=st.data())
def test_junk_after_good_frames_raises_only_codec_errors(
    good: list[Frame], junk: bytes, data: st.DataObject
) -> None:
    stream = b"".join(encode_frame(f) for f in good) + junk
    decoder = FrameDecoder()
    try:
        frames = feed_all(decoder, data.draw(chunkings(stream)))
    except CodecError:
        return
    assert good == frames[: len(good)]


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
msgpack_objects = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8) | st.integers(-5, 5), children,
                      max_size=5),
    max_leaves=25,
)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


@SETTINGS
@given(obj=msgpack_objects)
def test_arbitrary_msgpack_objects_raise_only_codec_errors(obj: Any) -> None:
    assert_total(pack(obj))


@st.composite
def near_frames(draw: st.DrawFn) -> dict[Any, Any]:
    """Maps that look like frames: a real tag, mostly real field names, any values."""
    tag = draw(st.sampled_from(tags()) | st.text(max_size=6))
    cls = FRAME_TYPES.get(tag)
    names = [f.name for f in field_infos(cls)] if cls else []
    keys = st.sampled_from(names) if names else st.text(max_size=6)
    body: dict[Any, Any] = draw(st.dictionaries(keys | st.text(max_size=6), msgpack_objects,
                                                max_size=6))
    body["v"] = draw(st.just(1) | msgpack_objects)
    body["t"] = tag
    return body


@SETTINGS
@given(obj=near_frames())
def test_frame_shaped_maps_raise_only_codec_errors(obj: dict[Any, Any]) -> None:
    assert_total(pack(obj))


@SETTINGS
@given(obj=msgpack_objects, data=st.data())
def test_arbitrary_msgpack_through_the_stream_decoder(obj: Any, data: st.DataObject) -> None:
    payload = pack(obj)
    stream = len(payload).to_bytes(4, "big") + payload
    with contextlib.suppress(CodecError):
        feed_all(FrameDecoder(), data.draw(chunkings(stream)))
