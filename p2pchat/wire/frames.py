"""Frame types: frozen dataclasses, one wire tag each.

Every field declares its limits in ``metadata`` (see :func:`limits`); the codec
validates decoded maps against them strictly: exactly the declared keys, the
declared types (``bool`` is not an ``int``), lengths and ranges. Adding a frame
type is adding a class here with the :func:`frame` decorator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from p2pchat.identity.did import MAX_DID_LENGTH

U64_MAX = 2**64 - 1
NONCE_SIZE = 32
MAX_NAME_LENGTH = 64
MAX_AGENT_LENGTH = 64


def limits(
    *, min_len: int = 0, max_len: int | None = None, lo: int = 0, hi: int = U64_MAX,
    printable: bool = False,
) -> Any:
    """Field metadata: length bounds for str/bytes, value bounds for int.

    ``printable`` strings may not contain control characters (Unicode category C*
    except none), so a peer cannot smuggle terminal escapes into our output.
    """
    return field(metadata={"min_len": min_len, "max_len": max_len, "lo": lo, "hi": hi,
                           "printable": printable})


class Frame:
    """Base of every frame. ``TAG`` is the wire type tag."""

    TAG: ClassVar[str] = ""
    __slots__ = ()


FRAME_TYPES: dict[str, type[Frame]] = {}

F = TypeVar("F", bound=type[Frame])


def frame(tag: str) -> Any:
    """Register a frame class under ``tag``; tags are unique."""

    def register(cls: F) -> F:
        if tag in FRAME_TYPES:
            raise ValueError(f"duplicate frame tag {tag!r}")
        cls.TAG = tag
        FRAME_TYPES[tag] = cls
        return cls

    return register


# --- link handshake -------------------------------------------------------------


@frame("hello")
@dataclass(frozen=True, slots=True)
class Hello(Frame):
    """First frame each side sends: who I claim to be and my fresh nonce."""

    did: str = limits(min_len=1, max_len=MAX_DID_LENGTH, printable=True)
    nonce: bytes = limits(min_len=NONCE_SIZE, max_len=NONCE_SIZE)
    name: str = limits(max_len=MAX_NAME_LENGTH, printable=True)
    agent: str = limits(max_len=MAX_AGENT_LENGTH, printable=True)


@frame("auth")
@dataclass(frozen=True, slots=True)
class Auth(Frame):
    """The DID proof: a signature over the link transcript (see ``core.link``)."""

    signature: bytes = limits(min_len=64, max_len=64)


@frame("ready")
@dataclass(frozen=True, slots=True)
class Ready(Frame):
    """Server to client: your proof verified, the link is open."""


# --- link liveness ---------------------------------------------------------------


@frame("ping")
@dataclass(frozen=True, slots=True)
class Ping(Frame):
    nonce: int = limits()


@frame("pong")
@dataclass(frozen=True, slots=True)
class Pong(Frame):
    nonce: int = limits()
