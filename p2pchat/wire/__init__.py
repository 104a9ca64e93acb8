"""Wire format shared by nodes and bootstrap servers: frozen frames + msgpack codec."""

from p2pchat.wire.codec import (
    LENGTH_PREFIX_SIZE,
    MAX_FRAME_SIZE,
    WIRE_VERSION,
    FrameDecoder,
    decode_payload,
    encode_frame,
    encode_payload,
)
from p2pchat.wire.frames import FRAME_TYPES, Auth, Frame, Hello, Ping, Pong, Ready

__all__ = [
    "FRAME_TYPES",
    "LENGTH_PREFIX_SIZE",
    "MAX_FRAME_SIZE",
    "WIRE_VERSION",
    "Auth",
    "Frame",
    "FrameDecoder",
    "Hello",
    "Ping",
    "Pong",
    "Ready",
    "decode_payload",
    "encode_frame",
    "encode_payload",
]
