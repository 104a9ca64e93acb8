"""ULIDs (sans-IO): 48-bit millisecond time + 80 random bits, Crockford base32, 26 chars.

Time and randomness are arguments, so the simulator can produce reproducible ids.
"""

from __future__ import annotations

import base64

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CHARS = frozenset(ALPHABET)
_TO_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)
#: Crockford digits to the ones int(text, 32) reads (0-9, A-V)
_TO_INT32 = str.maketrans(ALPHABET, "0123456789ABCDEFGHIJKLMNOPQRSTUV")
ULID_LENGTH = 26
MAX_MS = 2**48 - 1


def make_ulid(ms: int, randomness: bytes) -> str:
    if not 0 <= ms <= MAX_MS or len(randomness) != 10:
        raise ValueError("a ULID needs 0 <= ms < 2^48 and 10 random bytes")
    value = (ms << 80) | int.from_bytes(randomness, "big")
    # 26 base-32 digits = the top 130 of 160 bits: RFC 4648 base32 of the value shifted
    # into 20 bytes, then its alphabet translated to Crockford's
    text = base64.b32encode((value << 30).to_bytes(20, "big")).decode("ascii")
    return text[:ULID_LENGTH].translate(_TO_CROCKFORD)


def is_ulid(text: object) -> bool:
    return (isinstance(text, str) and len(text) == ULID_LENGTH and text[0] in "01234567"
            and _CHARS.issuperset(text))


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp of a (valid) ULID."""
    return int(ulid[:10].translate(_TO_INT32), 32)


ULID_BYTES = 16


def ulid_to_bytes(ulid: str) -> bytes:
    """The 128-bit binary form of a (valid) ULID."""
    return int(ulid.translate(_TO_INT32), 32).to_bytes(ULID_BYTES, "big")


def ulid_from_bytes(raw: bytes) -> str:
    """The text form of a 16-byte binary ULID."""
    if len(raw) != ULID_BYTES:
        raise ValueError(f"a binary ULID is {ULID_BYTES} bytes")
    # as make_ulid: the 130-bit base-32 form is the top of the value shifted into 20 bytes
    text = base64.b32encode((int.from_bytes(raw, "big") << 30).to_bytes(20, "big"))
    return text.decode("ascii")[:ULID_LENGTH].translate(_TO_CROCKFORD)


def ulid_after(ulid: str) -> str:
    """The next ULID after ``ulid`` (its value + 1): ids made within one millisecond
    stay in the order they were made (monotonic ULIDs)."""
    value = int.from_bytes(ulid_to_bytes(ulid), "big") + 1
    if value >> 128:
        raise ValueError("no ULID after the last one")
    return ulid_from_bytes(value.to_bytes(ULID_BYTES, "big"))
