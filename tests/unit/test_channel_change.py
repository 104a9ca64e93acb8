"""The change-header parser agrees with automerge and refuses everything it should not read."""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from automerge.core import ROOT, Document, ObjType, ScalarType
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.channel.change import (
    CHUNK_CHANGE,
    MAGIC,
    MAX_ACTOR_SIZE,
    MAX_CHANGE_DEPS,
    ChangeFormatError,
    ChangeHeader,
    parse_change,
)
from p2pchat.errors import RemoteProtocolError


def uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def chunk(body: bytes, chunk_type: int = CHUNK_CHANGE) -> bytes:
    """A chunk with a correct checksum around ``body`` (everything after the length)."""
    inner = bytes([chunk_type]) + uleb(len(body)) + body
    return MAGIC + hashlib.sha256(inner).digest()[:4] + inner


def body_of(raw: bytes) -> bytes:
    """The body of an uncompressed change chunk (after type and length)."""
    pos = 9
    while raw[pos] & 0x80:
        pos += 1
    return raw[pos + 1:]


def header_end(raw: bytes) -> int:
    """Offset in the body just after start_op: the parser reads nothing beyond it."""
    body = body_of(raw)
    pos = 0

    def read() -> int:
        nonlocal pos
        value = shift = 0
        while True:
            byte = body[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    n_deps = read()
    pos += 32 * n_deps
    actor_len = read()
    pos += actor_len
    read()  # seq
    read()  # start op
    return pos


def make_changes(seed: int, n_actors: int = 3, n_steps: int = 25) -> list:  # type: ignore[type-arg]
    """Changes from several actors with merges, so deps vary (0, 1 and several hashes)."""
    rng = random.Random(seed)
    actors: list[bytes] = []
    while len(actors) < n_actors:  # distinct: two docs with one actor id would clash
        actor = rng.randbytes(rng.choice([1, 8, 16, 32]))
        if actor not in actors:
            actors.append(actor)
    docs = [Document(actor_id=actor) for actor in actors]
    for step in range(n_steps):
        i = rng.randrange(n_actors)
        doc = docs[i]
        other = rng.randrange(n_actors)
        if other != i and rng.random() < 0.4:
            doc.merge(docs[other])
        with doc.transaction() as tx:
            for _ in range(rng.randint(1, 4)):
                kind = rng.random()
                key = f"k{rng.randrange(6)}"
                if kind < 0.5:
                    tx.put(ROOT, key, ScalarType.Str, "v" * rng.randint(0, 40))
                elif kind < 0.8:
                    tx.put(ROOT, key, ScalarType.Int, rng.randint(-(2**40), 2**40))
                else:
                    obj = tx.put_object(ROOT, key, ObjType.Map)
                    tx.put(obj, "x", ScalarType.Int, step)
    for doc in docs[1:]:
        docs[0].merge(doc)
    return list(docs[0].get_changes([]))


CHANGES = make_changes(1)


def one_change(text: str = "hello", actor: bytes = b"\x42" * 16) -> bytes:
    doc = Document(actor_id=actor)
    with doc.transaction() as tx:
        tx.put(ROOT, "text", ScalarType.Str, text)
    return bytes(doc.get_changes([])[0].raw_bytes)


def test_parser_agrees_with_automerge_on_many_changes() -> None:
    assert len(CHANGES) >= 25
    assert any(len(c.deps) > 1 for c in CHANGES)  # merges happened
    assert 1 < len({len(c.actor_id) for c in CHANGES})  # several actor id lengths
    for c in CHANGES:
        header = parse_change(bytes(c.raw_bytes))
        expected = ChangeHeader(bytes(c.hash), tuple(bytes(d) for d in c.deps),
                                bytes(c.actor_id), c.seq, c.start_op)
        assert expected == header


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_parser_agrees_with_automerge_property(seed: int) -> None:
    for c in make_changes(seed, n_steps=8):
        header = parse_change(bytes(c.raw_bytes))
        assert (bytes(c.hash), sorted(bytes(d) for d in c.deps), bytes(c.actor_id), c.seq,
                c.start_op) == (header.hash, sorted(header.deps), header.actor, header.seq,
                                header.start_op)


def test_hash_is_sha256_after_magic_and_checksum_and_checksum_is_its_prefix() -> None:
    raw = one_change()
    header = parse_change(raw)
    assert hashlib.sha256(raw[8:]).digest() == header.hash
    assert header.hash[:4] == raw[4:8]


def test_first_change_fields() -> None:
    header = parse_change(one_change(actor=b"\x07" * 16))
    assert ((), b"\x07" * 16, 1, 1) == (header.deps, header.actor, header.seq, header.start_op)


def test_bad_magic_is_refused() -> None:
    raw = bytearray(one_change())
    raw[0] ^= 0xFF
    with pytest.raises(ChangeFormatError, match="not an automerge chunk"):
        parse_change(bytes(raw))


@pytest.mark.parametrize("pos", [4, 7, 8, 9, 20, -1])
def test_bad_checksum_is_refused(pos: int) -> None:
    raw = bytearray(one_change())
    raw[pos] ^= 0x01
    with pytest.raises(ChangeFormatError, match="checksum"):
        parse_change(bytes(raw))


def test_compressed_change_chunk_is_refused() -> None:
    doc = Document(actor_id=b"\x01" * 16)
    with doc.transaction() as tx:
        tx.put(ROOT, "big", ScalarType.Str, "compress me " * 1000)
    change = doc.get_changes([])[0]
    compressed = bytes(change.bytes)
    assert 2 == compressed[8]  # automerge compressed it
    with pytest.raises(ChangeFormatError):
        parse_change(compressed)
    # Even with a checksum that matches its own bytes, the compressed form is refused.
    rechecked = MAGIC + hashlib.sha256(compressed[8:]).digest()[:4] + compressed[8:]
    with pytest.raises(ChangeFormatError, match="chunk type 2"):
        parse_change(rechecked)
    assert bytes(change.hash) == parse_change(bytes(change.raw_bytes)).hash


@pytest.mark.parametrize("chunk_type", [0, 2, 3, 255])
def test_other_chunk_types_are_refused(chunk_type: int) -> None:
    body = body_of(one_change())
    with pytest.raises(ChangeFormatError, match="chunk type"):
        parse_change(chunk(body, chunk_type))


def test_truncation_at_every_byte_is_refused() -> None:
    raw = one_change("truncate me")
    for cut in range(len(raw)):
        with pytest.raises(ChangeFormatError):
            parse_change(raw[:cut])


def test_consistent_truncation_fails_until_the_header_is_complete() -> None:
    """Truncated bodies re-wrapped with a correct length and checksum reach the field parser."""
    raw = one_change("truncate me")
    full = parse_change(raw)
    body = body_of(raw)
    end = header_end(raw)
    for cut in range(len(body) + 1):
        shortened = chunk(body[:cut])
        if cut < end:
            with pytest.raises(ChangeFormatError):
                parse_change(shortened)
        else:
            header = parse_change(shortened)
            assert (full.deps, full.actor, full.seq, full.start_op) == (
                header.deps, header.actor, header.seq, header.start_op)
            assert hashlib.sha256(shortened[8:]).digest() == header.hash


def test_length_mismatch_is_refused() -> None:
    body = body_of(one_change())
    inner = bytes([CHUNK_CHANGE]) + uleb(len(body) + 1) + body
    with pytest.raises(ChangeFormatError, match="length"):
        parse_change(MAGIC + hashlib.sha256(inner).digest()[:4] + inner)
    inner = bytes([CHUNK_CHANGE]) + uleb(len(body) - 1) + body
    with pytest.raises(ChangeFormatError, match="length"):
        parse_change(MAGIC + hashlib.sha256(inner).digest()[:4] + inner)


def header_body(n_deps: int, actor: bytes, seq: int, start_op: int) -> bytes:
    return (uleb(n_deps) + b"\x11" * 32 * n_deps + uleb(len(actor)) + actor + uleb(seq)
            + uleb(start_op) + b"\x00\x00")


def test_synthetic_header_is_read_exactly() -> None:
    header = parse_change(chunk(header_body(2, b"\x05" * 16, 9, 300)))
    assert ((b"\x11" * 32,) * 2, b"\x05" * 16, 9, 300) == (
        header.deps, header.actor, header.seq, header.start_op)


@pytest.mark.parametrize("body,match", [
    (header_body(MAX_CHANGE_DEPS + 1, b"\x05" * 16, 1, 1), "dependencies"),
    (header_body(0, b"", 1, 1), "actor"),
    (header_body(0, b"\x05" * (MAX_ACTOR_SIZE + 1), 1, 1), "actor"),
    (header_body(0, b"\x05" * 16, 0, 1), "positive"),
    (header_body(0, b"\x05" * 16, 1, 0), "positive"),
    (uleb(3) + b"\x11" * 40, "deps"),
    (uleb(0) + uleb(16) + b"\x05" * 4, "actor"),
    (b"\xff" * 12, "varint"),
    (b"\x80", "varint"),
])
def test_malformed_headers_are_refused(body: bytes, match: str) -> None:
    with pytest.raises(ChangeFormatError, match=match):
        parse_change(chunk(body))


def test_max_actor_and_deps_are_accepted() -> None:
    header = parse_change(chunk(header_body(MAX_CHANGE_DEPS, b"\x05" * MAX_ACTOR_SIZE, 1, 1)))
    assert (MAX_CHANGE_DEPS, MAX_ACTOR_SIZE) == (len(header.deps), len(header.actor))


def test_change_format_error_is_a_remote_protocol_error() -> None:
    assert issubclass(ChangeFormatError, RemoteProtocolError)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_change_format_error(data: bytes) -> None:
    with contextlib.suppress(ChangeFormatError):
        parse_change(data)


@settings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=200), chunk_type=st.sampled_from([1, 1, 1, 2]))
def test_arbitrary_bodies_with_valid_checksums_raise_only_change_format_error(
        body: bytes, chunk_type: int) -> None:
    try:
        header = parse_change(chunk(body, chunk_type))
    except ChangeFormatError:
        return
    assert 1 <= header.seq and 1 <= header.start_op and 0 < len(header.actor) <= MAX_ACTOR_SIZE
