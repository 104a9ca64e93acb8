"""Envelopes: the signed, encrypted unit of channel replication (DESIGN §3).

Wire form: msgpack ``[signed, signature]`` where ``signed`` is the msgpack
encoding of ``[version, channel, author, device, seq, deps, epoch, nonce,
ciphertext]``. Keeping ``signed`` as opaque bytes means we verify and hash the
exact bytes the author signed (msgpack encodings are not unique).

* ``id = BLAKE2b-256(signed, person="p2pchat-env")``
* signature: Ed25519 by ``author`` over ``signed`` in domain ``p2pchat/v1/envelope``
* ciphertext: XChaCha20-Poly1305 under the key of ``epoch``, with the header
  (``[version, channel, author, device, seq, deps, epoch]``, msgpack) as
  associated data, so a ciphertext cannot be moved under another header.
* ``seq`` numbers the author device's envelopes 1, 2, 3…; it equals the Automerge
  change's seq, and ``(author, device, seq)`` names at most one envelope (two
  different ones are an equivocation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgpack

from p2pchat.crypto import Domain, blake2b, open_sealed, seal, verify
from p2pchat.errors import IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.identity.did import MAX_DID_LENGTH
from p2pchat.wire.frames import MAX_ENVELOPE_BYTES

ENVELOPE_VERSION = 1
ID_SIZE = 32
CHANNEL_ID_SIZE = 32
DEVICE_SIZE = 16
EPOCH_ID_SIZE = 32
NONCE_SIZE = 24
SIGNATURE_SIZE = 64
#: Largest encoded envelope accepted or produced, in bytes (the wire's bound).
MAX_ENVELOPE_SIZE = MAX_ENVELOPE_BYTES
#: Most causal dependencies one envelope may name.
MAX_ENVELOPE_DEPS = 64
_ENV_PERSON = b"p2pchat-env"
_ACTOR_PERSON = b"p2pchat-actor"
ACTOR_SIZE = 16


class EnvelopeError(RemoteProtocolError):
    """An envelope is malformed, forged or does not belong where it was sent."""


@lru_cache(maxsize=4096)
def actor_id(did: str, device: bytes) -> bytes:
    """The Automerge actor id of a device: bound to its DID so changes name their author."""
    return blake2b(public_key_from_did(did).raw + device, person=_ACTOR_PERSON, size=ACTOR_SIZE)


@dataclass(frozen=True, slots=True)
class Envelope:
    channel: bytes
    author: str
    device: bytes
    seq: int
    deps: tuple[bytes, ...]
    epoch: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    signed: bytes = field(repr=False)
    id: bytes = field(repr=False)

    def header_bytes(self) -> bytes:
        return header_bytes(self.channel, self.author, self.device, self.seq, self.deps,
                            self.epoch)

    def encode(self) -> bytes:
        return msgpack.packb([self.signed, self.signature], use_bin_type=True)  # type: ignore[no-any-return]

    def verify_signature(self) -> bool:
        try:
            key = public_key_from_did(self.author)
        except IdentityError:
            return False
        return verify(key, Domain.ENVELOPE, self.signed, self.signature)

    def decrypt(self, key: bytes) -> bytes:
        return open_sealed(key, self.nonce, self.ciphertext, self.header_bytes())


def header_bytes(channel: bytes, author: str, device: bytes, seq: int, deps: tuple[bytes, ...],
                 epoch: bytes) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        [ENVELOPE_VERSION, channel, author, device, seq, list(deps), epoch], use_bin_type=True)


def envelope_id_of(data: bytes) -> bytes:
    """The id of an encoded envelope without validating it (for our own stored bytes)."""
    signed, _ = msgpack.unpackb(data, raw=False)
    return envelope_id(signed)


def envelope_id(signed: bytes) -> bytes:
    return blake2b(signed, person=_ENV_PERSON)


def seal_envelope(identity: Identity, *, channel: bytes, seq: int, deps: tuple[bytes, ...],
                  epoch: bytes, key: bytes, nonce: bytes, plaintext: bytes) -> Envelope:
    """Encrypt and sign ``plaintext`` as the next envelope of ``identity``'s device."""
    deps = tuple(sorted(set(deps)))
    if len(deps) > MAX_ENVELOPE_DEPS:
        raise ValueError(f"an envelope names at most {MAX_ENVELOPE_DEPS} dependencies")
    aad = header_bytes(channel, identity.did, identity.device_salt, seq, deps, epoch)
    ciphertext = seal(key, nonce, plaintext, aad)
    signed = msgpack.packb(
        [ENVELOPE_VERSION, channel, identity.did, identity.device_salt, seq, list(deps), epoch,
         nonce, ciphertext], use_bin_type=True)
    signature = identity.sign(Domain.ENVELOPE, signed)
    env = Envelope(channel, identity.did, identity.device_salt, seq, deps, epoch, nonce,
                   ciphertext, signature, signed, envelope_id(signed))
    # [signed, signature] adds at most 2 + 5 + 2 bytes of msgpack framing
    if len(signed) + SIGNATURE_SIZE + 9 > MAX_ENVELOPE_SIZE:
        raise ValueError(f"envelope larger than {MAX_ENVELOPE_SIZE} bytes")
    return env


def _bin(value: Any, size: int | None, what: str) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise EnvelopeError(f"envelope {what} must be {size} bytes")
    return value


def decode_envelope(data: bytes) -> Envelope:
    """Parse and structurally validate an envelope (the signature is checked separately)."""
    if len(data) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_SIZE}")
    try:
        outer = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        if not (isinstance(outer, list) and len(outer) == 2):
            raise EnvelopeError("envelope must be [signed, signature]")
        signed = _bin(outer[0], None, "signed part")
        signature = _bin(outer[1], SIGNATURE_SIZE, "signature")
        inner = msgpack.unpackb(signed, raw=False, strict_map_key=True, use_list=True)
    except EnvelopeError:
        raise
    except Exception as exc:
        raise EnvelopeError(f"malformed envelope: {type(exc).__name__}") from exc
    if not (isinstance(inner, list) and len(inner) == 9):
        raise EnvelopeError("envelope header has the wrong shape")
    version, channel, author, device, seq, deps, epoch, nonce, ciphertext = inner
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    if type(author) is not str or len(author) > MAX_DID_LENGTH:
        raise EnvelopeError("envelope author must be a DID")
    if type(seq) is not int or not 1 <= seq < 2**63:
        raise EnvelopeError("envelope seq must be a positive integer")
    if not isinstance(deps, list) or len(deps) > MAX_ENVELOPE_DEPS:
        raise EnvelopeError(f"envelope deps must be a list of at most {MAX_ENVELOPE_DEPS} ids")
    dep_ids = tuple(_bin(d, ID_SIZE, "dependency") for d in deps)
    if list(dep_ids) != sorted(set(dep_ids)):
        raise EnvelopeError("envelope deps must be sorted and unique")
    return Envelope(
        _bin(channel, CHANNEL_ID_SIZE, "channel id"), author, _bin(device, DEVICE_SIZE, "device"),
        seq, dep_ids, _bin(epoch, EPOCH_ID_SIZE, "epoch id"), _bin(nonce, NONCE_SIZE, "nonce"),
        _bin(ciphertext, None, "ciphertext"), signature, signed, envelope_id(signed),
    )
