"""Read the header of a raw Automerge change chunk without applying it.

We must check who wrote a change and what it depends on *before* it touches the
channel document (automerge has no way to undo an applied change). The change
chunk layout (automerge binary format, chunk type 1 = uncompressed change)::

    magic 85 6f 4a 83 | checksum (4) | type (1) | length (uLEB) | body
    body: deps (uLEB n, n x 32-byte hashes) | actor (uLEB len + bytes) | seq (uLEB)
          | start op (uLEB) | time (sLEB) | message (uLEB len + utf8) | ...

The change hash is SHA-256 of everything after the 8-byte magic+checksum, and the
checksum is the hash's first 4 bytes. Only the uncompressed form is accepted
(``Change.raw_bytes``); a compressed chunk (type 2) is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from p2pchat.errors import RemoteProtocolError

MAGIC = b"\x85\x6f\x4a\x83"
CHUNK_CHANGE = 1
HASH_SIZE = 32
#: Longest actor id accepted (ours are 16 bytes).
MAX_ACTOR_SIZE = 32
#: Most dependencies one change may name.
MAX_CHANGE_DEPS = 256


class ChangeFormatError(RemoteProtocolError):
    """A change chunk is malformed or not of the accepted kind."""


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    hash: bytes
    deps: tuple[bytes, ...]
    actor: bytes
    seq: int
    start_op: int


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ChangeFormatError("truncated change (varint)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ChangeFormatError("varint too long in change")


def parse_change(raw: bytes) -> ChangeHeader:
    """Validate the chunk envelope and return the header fields."""
    if len(raw) < 10 or raw[:4] != MAGIC:
        raise ChangeFormatError("not an automerge chunk")
    digest = hashlib.sha256(raw[8:]).digest()
    if digest[:4] != raw[4:8]:
        raise ChangeFormatError("change checksum mismatch")
    if raw[8] != CHUNK_CHANGE:
        raise ChangeFormatError(f"unsupported chunk type {raw[8]} (want an uncompressed change)")
    length, pos = _uleb(raw, 9)
    if pos + length != len(raw):
        raise ChangeFormatError("change length does not match its chunk")
    body = raw
    n_deps, pos = _uleb(body, pos)
    if n_deps > MAX_CHANGE_DEPS:
        raise ChangeFormatError(f"change names {n_deps} dependencies, max {MAX_CHANGE_DEPS}")
    deps = []
    for _ in range(n_deps):
        if pos + HASH_SIZE > len(body):
            raise ChangeFormatError("truncated change (deps)")
        deps.append(bytes(body[pos : pos + HASH_SIZE]))
        pos += HASH_SIZE
    actor_len, pos = _uleb(body, pos)
    if not 0 < actor_len <= MAX_ACTOR_SIZE or pos + actor_len > len(body):
        raise ChangeFormatError("bad actor id in change")
    actor = bytes(body[pos : pos + actor_len])
    pos += actor_len
    seq, pos = _uleb(body, pos)
    start_op, pos = _uleb(body, pos)
    if seq < 1 or start_op < 1:
        raise ChangeFormatError("change seq and start op must be positive")
    return ChangeHeader(digest, tuple(deps), actor, seq, start_op)
