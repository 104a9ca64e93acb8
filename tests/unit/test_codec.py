"""Frame codec: layout, strict schema validation, incremental decoding (DESIGN §6)."""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import msgpack
import pytest

from p2pchat.errors import CloseCode, CodecError, FrameTooLarge
from p2pchat.wire import (
    FRAME_TYPES,
    MAX_FRAME_SIZE,
    WIRE_VERSION,
    Auth,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    Ready,
    decode_payload,
    encode_frame,
    encode_payload,
)
from p2pchat.wire.frames import frame
from tests.unit.wirefields import (
    FieldInfo,
    all_fields,
    field_infos,
    frame_classes,
    is_record,
    minimal_frame,
    minimal_value,
    sequence_fields,
    tags,
    wire_value,
)

HELLO = Hello(did="did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
              nonce=bytes(range(32)), name="alice", agent="p2pchat/0.1")
SAMPLE_FRAMES: list[Frame] = [HELLO, Auth(signature=b"\x01" * 64), Ready(), Ping(nonce=7),
                              Pong(nonce=2**64 - 1)]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def body_of(f: Frame) -> dict[str, Any]:
    return msgpack.unpackb(encode_payload(f), raw=False)  # type: ignore[no-any-return]


def codec_error(payload: bytes) -> str:
    with pytest.raises(CodecError) as info:
        decode_payload(payload)
    return str(info.value)


def with_prefix(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


# --- layout ------------------------------------------------------------------------------


def test_ping_golden_bytes() -> None:
    # 4-byte big-endian length, then the msgpack map {"v": 1, "t": "ping", "nonce": 7}.
    expected = bytes.fromhex("00000012" "83" "a176" "01" "a174" "a470696e67" "a56e6f6e6365" "07")
    assert expected == encode_frame(Ping(nonce=7))


@pytest.mark.parametrize("f", SAMPLE_FRAMES, ids=lambda f: f.TAG)
def test_sample_frames_round_trip(f: Frame) -> None:
    assert [f] == FrameDecoder().feed(encode_frame(f))


@pytest.mark.parametrize("cls", frame_classes(), ids=lambda c: c.TAG)
def test_minimal_frame_of_every_type_round_trips(cls: type[Frame]) -> None:
    f = minimal_frame(cls)
    assert f == decode_payload(encode_payload(f))


@pytest.mark.parametrize("cls", frame_classes(), ids=lambda c: c.TAG)
def test_payload_is_a_map_with_version_and_tag(cls: type[Frame]) -> None:
    body = body_of(minimal_frame(cls))
    assert WIRE_VERSION == body["v"]
    assert cls.TAG == body["t"]
    assert {"v", "t"} | {f.name for f in field_infos(cls)} == set(body)


def test_key_order_does_not_matter() -> None:
    assert Ping(nonce=3) == decode_payload(pack({"nonce": 3, "t": "ping", "v": 1}))


def test_frames_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Ping(nonce=1).nonce = 2  # type: ignore[misc]


def test_tags_are_registered_once() -> None:
    with pytest.raises(ValueError, match="duplicate frame tag 'ping'"):
        frame("ping")(type("Again", (Frame,), {}))
    assert Ping is FRAME_TYPES["ping"]


@pytest.mark.parametrize("tag", tags())
def test_no_frame_field_shadows_the_envelope_keys(tag: str) -> None:
    assert not {"v", "t"} & {f.name for f in field_infos(FRAME_TYPES[tag])}


# --- envelope validation -------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 2, 255, -1, "1", b"\x01", True, 1.0, None, [1]])
def test_wrong_version_is_rejected(version: object) -> None:
    assert "unsupported wire version" in codec_error(pack({"v": version, "t": "ping", "nonce": 1}))


def test_missing_version_is_rejected() -> None:
    assert "unsupported wire version" in codec_error(pack({"t": "ping", "nonce": 1}))


@pytest.mark.parametrize("tag", ["nope", "", "PING", "ping ", "x" * 1000])
def test_unknown_type_tag_is_rejected(tag: str) -> None:
    message = codec_error(pack({"v": 1, "t": tag}))
    assert "unknown frame type" in message
    assert len(message) < 100, "the peer's tag is cut short in the message"


@pytest.mark.parametrize("tag", [None, 5, b"ping", ["ping"], True])
def test_tag_of_wrong_type_is_rejected(tag: object) -> None:
    assert "no type tag" in codec_error(pack({"v": 1, "t": tag, "nonce": 1}))


def test_missing_tag_is_rejected() -> None:
    assert "no type tag" in codec_error(pack({"v": 1}))


@pytest.mark.parametrize("obj", [[1, "ping"], 1, "ping", None, b"\x83", 1.5, True])
def test_non_map_payload_is_rejected(obj: object) -> None:
    assert "must be a map" in codec_error(pack(obj))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # never-used msgpack byte
        b"\x83\xa1v\x01",  # map of 3 that ends after one pair
        b"\xdf\xff\xff\xff\xff",  # map announcing 4 billion pairs, then nothing
        b"\xdb\xff\xff\xff\xff",  # str announcing 4 GiB
        pack({"v": 1, "t": "ping", "nonce": 1}) + b"\x00",  # trailing data
        b"\xa2\xff\xfe",  # str with invalid UTF-8
    ],
)
def test_malformed_msgpack_is_a_codec_error(payload: bytes) -> None:
    assert "malformed msgpack" in codec_error(payload)


def test_ext_types_are_rejected() -> None:
    payload = pack({"v": 1, "t": "ping", "nonce": msgpack.ExtType(5, b"x")})
    assert "extension type 5" in codec_error(payload)


def test_timestamp_ext_is_rejected() -> None:
    payload = pack({"v": 1, "t": "ping", "nonce": msgpack.Timestamp(1, 0)})
    with pytest.raises(CodecError):
        decode_payload(payload)


def test_non_string_keys_are_rejected() -> None:
    with pytest.raises(CodecError):
        decode_payload(pack({"v": 1, "t": "ping", "nonce": 1, 7: 1}))


def test_bytes_keys_are_unknown_fields() -> None:
    assert "unknown field" in codec_error(pack({"v": 1, "t": "ping", b"nonce": 1, "nonce": 1}))


def test_payload_above_the_limit_is_too_large() -> None:
    with pytest.raises(FrameTooLarge) as info:
        decode_payload(b"\x00" * (MAX_FRAME_SIZE + 1))
    assert CloseCode.FRAME_TOO_LARGE == info.value.code


def test_codec_errors_close_with_protocol_error() -> None:
    with pytest.raises(CodecError) as info:
        decode_payload(b"\xc1")
    assert CloseCode.PROTOCOL_ERROR == info.value.code


# --- per-field validation, generated from the schema ----------------------------------------

FIELD_IDS = [f"{tag}.{f.name}" for tag, f in all_fields()]


def _mutated(tag: str, info: FieldInfo, value: object) -> bytes:
    body = body_of(minimal_frame(FRAME_TYPES[tag]))
    body[info.name] = value
    return pack(body)


@pytest.mark.parametrize(("tag", "info"), all_fields(), ids=FIELD_IDS)
def test_missing_field_is_rejected(tag: str, info: FieldInfo) -> None:
    body = body_of(minimal_frame(FRAME_TYPES[tag]))
    del body[info.name]
    assert f"missing field {info.name!r}" in codec_error(pack(body))


@pytest.mark.parametrize("tag", tags())
def test_extra_field_is_rejected(tag: str) -> None:
    body = body_of(minimal_frame(FRAME_TYPES[tag]))
    body["extra"] = 1
    assert "unknown field(s) 'extra'" in codec_error(pack(body))


_WRONG_TYPES: dict[type, list[object]] = {
    int: [True, False, 1.0, "1", b"\x01", None, [1], {"n": 1}],
    bool: [0, 1, "true", None],
    str: [b"text", 1, None, ["a"], True],
    bytes: ["text", 1, None, [1], True],
}


@pytest.mark.parametrize(("tag", "info"), all_fields(), ids=FIELD_IDS)
def test_wrong_type_is_rejected(tag: str, info: FieldInfo) -> None:
    for value in _WRONG_TYPES[info.kind]:
        message = codec_error(_mutated(tag, info, value))
        assert f"field {info.name!r} must be {info.kind.__name__}" in message, value


SEQUENCES = sequence_fields()


@pytest.mark.parametrize(("tag", "info"), SEQUENCES, ids=lambda x: getattr(x, "name", x))
def test_sequence_must_be_a_list(tag: str, info: FieldInfo) -> None:
    for value in ("text", b"bytes", 1, None, {"a": 1}):
        assert f"field {info.name!r} must be a list" in codec_error(_mutated(tag, info, value))


@pytest.mark.parametrize(("tag", "info"), SEQUENCES, ids=lambda x: getattr(x, "name", x))
def test_sequence_item_limit(tag: str, info: FieldInfo) -> None:
    item = wire_value(info.element(), minimal_value(info.element()))
    message = codec_error(_mutated(tag, info, [item] * (info.max_items + 1)))
    assert f"has {info.max_items + 1} items, max {info.max_items}" in message
    decoded = decode_payload(_mutated(tag, info, [item] * 2))
    assert 2 == len(getattr(decoded, info.name))


@pytest.mark.parametrize(("tag", "info"), SEQUENCES, ids=lambda x: getattr(x, "name", x))
def test_sequence_elements_are_validated(tag: str, info: FieldInfo) -> None:
    element = info.element()
    if is_record(element):
        subs = field_infos(element.kind)
        good = wire_value(element, minimal_value(element))
        assert "record" in codec_error(_mutated(tag, info, [good[:-1]]))
        for i, sub in enumerate(subs):
            for wrong in _WRONG_TYPES[sub.kind]:
                bad = list(good)
                bad[i] = wrong
                message = codec_error(_mutated(tag, info, [bad]))
                assert f"field {sub.name!r} must be {sub.kind.__name__}" in message, wrong
    else:
        for wrong in _WRONG_TYPES[element.kind]:
            message = codec_error(_mutated(tag, info, [wrong]))
            assert f"field {info.name!r} must be {element.kind.__name__}" in message, wrong


def test_bool_is_not_an_int() -> None:
    assert "must be int, got bool" in codec_error(pack({"v": 1, "t": "ping", "nonce": True}))


def _sized(info: FieldInfo, n: int) -> object:
    return b"\x01" * n if info.kind is bytes else "b" * n


SIZED = [(t, f) for t, f in all_fields() if f.kind in (str, bytes)]


@pytest.mark.parametrize(("tag", "info"), [(t, f) for t, f in SIZED if f.max_len is not None],
                         ids=lambda x: getattr(x, "name", x))
def test_too_long_is_rejected(tag: str, info: FieldInfo) -> None:
    assert info.max_len is not None
    message = codec_error(_mutated(tag, info, _sized(info, info.max_len + 1)))
    assert f"field {info.name!r} has length {info.max_len + 1}" in message


@pytest.mark.parametrize(("tag", "info"), [(t, f) for t, f in SIZED if f.min_len > 0],
                         ids=lambda x: getattr(x, "name", x))
def test_too_short_is_rejected(tag: str, info: FieldInfo) -> None:
    message = codec_error(_mutated(tag, info, _sized(info, info.min_len - 1)))
    assert f"field {info.name!r} has length {info.min_len - 1}" in message


@pytest.mark.parametrize(("tag", "info"), [(t, f) for t, f in SIZED if f.max_len is not None],
                         ids=lambda x: getattr(x, "name", x))
def test_longest_allowed_value_decodes(tag: str, info: FieldInfo) -> None:
    assert info.max_len is not None
    value = _sized(info, info.max_len)
    assert value == getattr(decode_payload(_mutated(tag, info, value)), info.name)


PRINTABLE = [(t, f) for t, f in all_fields() if f.kind is str and f.printable]


@pytest.mark.parametrize(("tag", "info"), PRINTABLE, ids=lambda x: getattr(x, "name", x))
@pytest.mark.parametrize("control", ["\x1b[2J", "\x00", "\n", "\x7f", "\u200b", "\u202e"],
                         ids=repr)
def test_control_characters_are_rejected_in_printable_text(
    tag: str, info: FieldInfo, control: str
) -> None:
    value = ("a" * max(info.min_len - 1, 0) + control)[: info.max_len]
    message = codec_error(_mutated(tag, info, value))
    assert f"field {info.name!r} contains control characters" in message


def test_duplicate_keys_are_rejected() -> None:
    # fixmap of 4 pairs: v=1, t="ping", nonce=1, nonce=2
    payload = bytes.fromhex("84" "a17601" "a174a470696e67" "a56e6f6e636501" "a56e6f6e636502")
    assert "duplicate key" in codec_error(payload)


def test_text_length_counts_characters() -> None:
    name = "é" * 64  # 128 bytes of UTF-8, 64 characters: allowed
    assert name == decode_payload(encode_payload(dataclasses.replace(HELLO, name=name))).name  # type: ignore[attr-defined]


INTS = [(t, f) for t, f in all_fields() if f.kind is int]


@pytest.mark.parametrize(("tag", "info"), INTS, ids=lambda x: getattr(x, "name", x))
def test_out_of_range_int_is_rejected(tag: str, info: FieldInfo) -> None:
    out_of_range = [v for v in (info.lo - 1, info.hi + 1) if -(2**63) <= v <= 2**64 - 1]
    assert out_of_range, "msgpack can carry at least one value outside the declared range"
    for value in out_of_range:
        assert f"field {info.name!r} out of range" in codec_error(_mutated(tag, info, value))


@pytest.mark.parametrize(("tag", "info"), INTS, ids=lambda x: getattr(x, "name", x))
def test_range_ends_decode(tag: str, info: FieldInfo) -> None:
    for value in (info.lo, info.hi):
        assert value == getattr(decode_payload(_mutated(tag, info, value)), info.name)


def test_very_negative_int_is_rejected() -> None:
    assert "out of range" in codec_error(pack({"v": 1, "t": "ping", "nonce": -(2**63)}))


def test_encoding_validates_like_decoding() -> None:
    with pytest.raises(CodecError, match="'nonce' has length 31"):
        encode_frame(dataclasses.replace(HELLO, nonce=b"\x00" * 31))
    with pytest.raises(CodecError, match="must be int, got bool"):
        encode_frame(Ping(nonce=True))
    with pytest.raises(CodecError, match="out of range"):
        encode_frame(Ping(nonce=-1))


# --- incremental decoder ------------------------------------------------------------------

STREAM = b"".join(encode_frame(f) for f in SAMPLE_FRAMES)


def test_decoder_yields_all_frames_of_one_feed() -> None:
    assert SAMPLE_FRAMES == FrameDecoder().feed(STREAM)


def test_split_at_every_byte_boundary_yields_the_same_frames() -> None:
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        assert SAMPLE_FRAMES == decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]), cut
        assert 0 == decoder.buffered


def test_byte_at_a_time_yields_the_same_frames() -> None:
    decoder = FrameDecoder()
    frames: list[Frame] = []
    for i in range(len(STREAM)):
        frames += decoder.feed(STREAM[i : i + 1])
    assert SAMPLE_FRAMES == frames


def test_partial_frame_stays_buffered() -> None:
    data = encode_frame(HELLO)
    decoder = FrameDecoder()
    assert [] == decoder.feed(data[:-1])
    assert len(data) - 1 == decoder.buffered
    assert [HELLO] == decoder.feed(data[-1:])


def test_empty_feed_is_harmless() -> None:
    assert [] == FrameDecoder().feed(b"")


@pytest.mark.parametrize("size", [MAX_FRAME_SIZE + 1, 2**32 - 1])
def test_oversized_prefix_fails_as_soon_as_four_bytes_arrive(size: int) -> None:
    decoder = FrameDecoder()
    prefix = struct.pack(">I", size)
    for i in range(3):
        assert [] == decoder.feed(prefix[i : i + 1])
    with pytest.raises(FrameTooLarge, match=f"announces {size} bytes"):
        decoder.feed(prefix[3:])


def test_oversized_prefix_fails_after_earlier_good_frames() -> None:
    with pytest.raises(FrameTooLarge):
        FrameDecoder().feed(encode_frame(Ping(nonce=1)) + struct.pack(">I", MAX_FRAME_SIZE + 1))


def test_decoder_limit_is_configurable() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    assert [] == decoder.feed(struct.pack(">I", 1024))  # at the limit: waits for the body
    with pytest.raises(FrameTooLarge):
        FrameDecoder(max_frame_size=1024).feed(struct.pack(">I", 1025))


def test_empty_frame_is_rejected() -> None:
    with pytest.raises(CodecError, match="empty frame"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")


def test_bad_payload_inside_a_good_prefix_is_rejected() -> None:
    with pytest.raises(CodecError, match="unknown frame type"):
        FrameDecoder().feed(with_prefix(pack({"v": 1, "t": "nope"})))


@pytest.mark.parametrize(
    "bad", [b"\x00\x00\x00\x00", struct.pack(">I", MAX_FRAME_SIZE + 1), with_prefix(b"\xc1")],
    ids=["empty", "too-large", "malformed"],
)
def test_decoder_stays_failed_after_an_error(bad: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(CodecError):
        decoder.feed(bad)
    assert 0 == decoder.buffered
    for _ in range(2):
        with pytest.raises(CodecError, match="already failed"):
            decoder.feed(encode_frame(Ping(nonce=1)))
    with pytest.raises(CodecError, match="already failed"):
        decoder.feed(b"")
