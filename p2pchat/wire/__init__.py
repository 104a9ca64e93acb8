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
from p2pchat.wire.frames import (
    FRAME_TYPES,
    Auth,
    Envelopes,
    Frame,
    Hello,
    Offer,
    Ping,
    Pong,
    Ready,
    Subscribe,
    Summary,
    VectorEntry,
)

__all__ = [
    "FRAME_TYPES",
    "LENGTH_PREFIX_SIZE",
    "MAX_FRAME_SIZE",
    "WIRE_VERSION",
    "Auth",
    "Envelopes",
    "Frame",
    "FrameDecoder",
    "Hello",
    "Offer",
    "Ping",
    "Pong",
    "Ready",
    "Subscribe",
    "Summary",
    "VectorEntry",
    "decode_payload",
    "encode_frame",
    "encode_payload",
]
