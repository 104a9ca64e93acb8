"""ULIDs (sans-IO): 48-bit millisecond time + 80 random bits, Crockford base32, 26 chars.

Time and randomness are arguments, so the simulator can produce reproducible ids.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_CHARS = frozenset(ALPHABET)
ULID_LENGTH = 26
MAX_MS = 2**48 - 1


def make_ulid(ms: int, randomness: bytes) -> str:
    if not 0 <= ms <= MAX_MS or len(randomness) != 10:
        raise ValueError("a ULID needs 0 <= ms < 2^48 and 10 random bytes")
    value = (ms << 80) | int.from_bytes(randomness, "big")
    # 130 bits as 26 base-32 digits: translate the binary string 5 bits at a time
    bits = format(value, "0130b")
    return "".join(ALPHABET[int(bits[i:i + 5], 2)] for i in range(0, 130, 5))


def is_ulid(text: object) -> bool:
    return (isinstance(text, str) and len(text) == ULID_LENGTH and text[0] in "01234567"
            and _CHARS.issuperset(text))


def ulid_ms(ulid: str) -> int:
    """The millisecond timestamp of a (valid) ULID."""
    value = 0
    for c in ulid[:10]:
        value = (value << 5) | _INDEX[c]
    return value
