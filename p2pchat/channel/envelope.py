"""Envelopes: the signed, encrypted unit of channel replication (DESIGN §3), wire v2.

Theory of operation
-------------------
Wire form: ``signed || signature`` (the signature is the last 64 bytes), where
``signed`` is the msgpack array ``[2, author, device, seq, deps, epoch, nonce,
ciphertext]``:

* ``author``: the author's raw 32-byte Ed25519 key (its ``did:key`` is derived,
  and cached, on decode);
* ``deps``: envelope ids this one depends on, **besides** the device's previous
  envelope ``(author, device, seq - 1)``, which every envelope with ``seq > 1``
  depends on implicitly (a replica resolves it by that slot);
* ``epoch``: the epoch id, or nil for "the same epoch as the device's previous
  envelope" (never nil at ``seq == 1``).

The channel is not on the wire: an envelope is bound to it through its **topic**
(:func:`~p2pchat.bootstrap_proto.server_topic`, a keyed hash of the channel id that
bootstrap servers know and nobody can invert):

* ``id = BLAKE2b-256(topic || signed, person="p2pchat-env")``;
* signature: Ed25519 by ``author`` over ``topic || signed`` in domain
  ``p2pchat/v1/envelope``, so a server verifies what it stores without the channel id,
  and an envelope cannot be replayed into another channel;
* ciphertext: XChaCha20-Poly1305 under the key of the (resolved) epoch, with
  ``[2, channel, author, device, seq, deps, epoch]`` (the wire values) as
  associated data.

``seq`` numbers the author device's envelopes 1, 2, 3…; it equals the Automerge
change's seq, and ``(author, device, seq)`` names at most one envelope (two different
ones are an equivocation). A decoded envelope is *unresolved* until the replica
fills in its implicit dependency and epoch (:meth:`Envelope.resolve`); only
:mod:`p2pchat.channel.state` does that. Why v2: DESIGN §5 budgets 200 bytes of
overhead over the bare change; v1 spent 358 (docs/design.md §13).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import msgpack

from p2pchat.bootstrap_proto import server_topic
from p2pchat.crypto import Domain, PublicKey, blake2b, open_sealed, seal, verify
from p2pchat.errors import IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, did_from_public_key, public_key_from_did
from p2pchat.wire.frames import MAX_ENVELOPE_BYTES

ENVELOPE_VERSION = 2
ID_SIZE = 32
TOPIC_SIZE = 32
AUTHOR_KEY_SIZE = 32
DEVICE_SIZE = 16
EPOCH_ID_SIZE = 32
NONCE_SIZE = 24
SIGNATURE_SIZE = 64
#: Largest encoded envelope accepted or produced, in bytes (the wire's bound).
MAX_ENVELOPE_SIZE = MAX_ENVELOPE_BYTES
#: Most explicit causal dependencies one envelope may name.
MAX_ENVELOPE_DEPS = 64
#: Author keys whose DID (and verify key) are kept: a node sees the same few authors.
AUTHOR_CACHE_SIZE = 4096
_ENV_PERSON = b"p2pchat-env"
_ACTOR_PERSON = b"p2pchat-actor"
ACTOR_SIZE = 16
_FIELDS = 8


class EnvelopeError(RemoteProtocolError):
    """An envelope is malformed, forged or does not belong where it was sent."""


@lru_cache(maxsize=4096)
def actor_id(did: str, device: bytes) -> bytes:
    """The Automerge actor id of a device: bound to its DID so changes name their author."""
    return blake2b(public_key_from_did(did).raw + device, person=_ACTOR_PERSON, size=ACTOR_SIZE)


@lru_cache(maxsize=AUTHOR_CACHE_SIZE)
def _author(raw: bytes) -> tuple[str, PublicKey]:
    key = PublicKey(raw)
    return did_from_public_key(key), key


@lru_cache(maxsize=AUTHOR_CACHE_SIZE)
def channel_topic(channel: bytes) -> bytes:
    """The topic that binds an envelope to ``channel`` (the bootstrap server topic)."""
    return server_topic(channel)


@dataclass(frozen=True, slots=True)
class Envelope:
    topic: bytes
    author: str  # the DID, derived from author_key
    author_key: bytes
    device: bytes
    seq: int
    wire_deps: tuple[bytes, ...]
    wire_epoch: bytes | None  # None: the epoch of the device's previous envelope
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    signed: bytes = field(repr=False)
    id: bytes = field(repr=False)
    #: all deps: ``wire_deps`` plus the device's previous envelope once resolved
    deps: tuple[bytes, ...] = ()
    #: the epoch once resolved (b"" while an elided epoch is unknown)
    epoch: bytes = b""
    #: the device's previous envelope, once resolved (b"" for seq 1 or unresolved)
    prev: bytes = b""

    @property
    def resolved(self) -> bool:
        return self.seq == 1 or bool(self.prev)

    def resolve(self, prev: bytes, prev_epoch: bytes) -> Envelope:
        """This envelope with its implicit dependency ``prev`` (the envelope in slot
        ``(author, device, seq - 1)``) and, if elided, its epoch filled in."""
        if self.seq == 1:
            return self
        deps = self.wire_deps if prev in self.wire_deps \
            else tuple(sorted((*self.wire_deps, prev)))
        # the constructor, not dataclasses.replace: this runs once per envelope received
        return Envelope(self.topic, self.author, self.author_key, self.device, self.seq,
                        self.wire_deps, self.wire_epoch, self.nonce, self.ciphertext,
                        self.signature, self.signed, self.id, deps,
                        self.wire_epoch or prev_epoch, prev)

    def encode(self) -> bytes:
        return self.signed + self.signature

    def verify_signature(self) -> bool:
        return verify(_author(self.author_key)[1], Domain.ENVELOPE, self.topic + self.signed,
                      self.signature)

    def decrypt(self, key: bytes, channel: bytes) -> bytes:
        return open_sealed(key, self.nonce, self.ciphertext,
                           associated_data(channel, self.author_key, self.device, self.seq,
                                           self.wire_deps, self.wire_epoch))


def associated_data(channel: bytes, author_key: bytes, device: bytes, seq: int,
                    wire_deps: tuple[bytes, ...], wire_epoch: bytes | None) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        [ENVELOPE_VERSION, channel, author_key, device, seq, list(wire_deps), wire_epoch],
        use_bin_type=True)


def envelope_id_of(data: bytes, topic: bytes) -> bytes:
    """The id of an encoded envelope without validating it (for our own stored bytes)."""
    return envelope_id(topic, data[:-SIGNATURE_SIZE])


def envelope_id(topic: bytes, signed: bytes) -> bytes:
    return blake2b(topic + signed, person=_ENV_PERSON)


def seal_envelope(identity: Identity, *, channel: bytes, seq: int, deps: tuple[bytes, ...],
                  epoch: bytes, key: bytes, nonce: bytes, plaintext: bytes,
                  prev: bytes = b"", prev_epoch: bytes = b"") -> Envelope:
    """Encrypt and sign ``plaintext`` as envelope ``seq`` of ``identity``'s device.

    ``deps`` are all of its dependencies; ``prev`` (required when ``seq > 1``) is the
    device's previous envelope, left implicit on the wire, and ``prev_epoch`` its epoch:
    when ``epoch`` equals it, the epoch is left out too."""
    if (seq > 1) != bool(prev):
        raise ValueError("an envelope after the first names its device's previous envelope")
    full = tuple(sorted(set(deps) | ({prev} if prev else set())))
    wire_deps = tuple(d for d in full if d != prev)
    if len(wire_deps) > MAX_ENVELOPE_DEPS:
        raise ValueError(f"an envelope names at most {MAX_ENVELOPE_DEPS} dependencies")
    wire_epoch = None if prev and epoch == prev_epoch else epoch
    author_key = identity.public_key.raw
    aad = associated_data(channel, author_key, identity.device_salt, seq, wire_deps, wire_epoch)
    ciphertext = seal(key, nonce, plaintext, aad)
    signed: bytes = msgpack.packb(
        [ENVELOPE_VERSION, author_key, identity.device_salt, seq, list(wire_deps), wire_epoch,
         nonce, ciphertext], use_bin_type=True)
    if len(signed) + SIGNATURE_SIZE > MAX_ENVELOPE_SIZE:
        raise ValueError(f"envelope larger than {MAX_ENVELOPE_SIZE} bytes")
    topic = channel_topic(channel)
    signature = identity.sign(Domain.ENVELOPE, topic + signed)
    return Envelope(topic, identity.did, author_key, identity.device_salt, seq, wire_deps,
                    wire_epoch, nonce, ciphertext, signature, signed,
                    envelope_id(topic, signed), full, epoch, prev)


def _bin(value: Any, size: int | None, what: str) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise EnvelopeError(f"envelope {what} must be {size} bytes")
    return value


def decode_envelope(data: bytes, topic: bytes) -> Envelope:
    """Parse and structurally validate an envelope of the channel whose topic is
    ``topic`` (the signature is checked separately; it fails for another topic)."""
    if len(data) > MAX_ENVELOPE_SIZE:
        raise EnvelopeError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_SIZE}")
    if len(data) <= SIGNATURE_SIZE:
        raise EnvelopeError("envelope too short")
    signed, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    try:
        inner = msgpack.unpackb(signed, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:
        raise EnvelopeError(f"malformed envelope: {type(exc).__name__}") from exc
    if not (isinstance(inner, list) and len(inner) == _FIELDS):
        raise EnvelopeError("envelope header has the wrong shape")
    version, author_key, device, seq, deps, epoch, nonce, ciphertext = inner
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    try:
        author, _ = _author(_bin(author_key, AUTHOR_KEY_SIZE, "author key"))
    except IdentityError as exc:
        raise EnvelopeError(f"envelope author is not an Ed25519 key: {exc}") from None
    if type(seq) is not int or not 1 <= seq < 2**63:
        raise EnvelopeError("envelope seq must be a positive integer")
    if not isinstance(deps, list) or len(deps) > MAX_ENVELOPE_DEPS:
        raise EnvelopeError(f"envelope deps must be a list of at most {MAX_ENVELOPE_DEPS} ids")
    dep_ids = tuple(_bin(d, ID_SIZE, "dependency") for d in deps)
    if list(dep_ids) != sorted(set(dep_ids)):
        raise EnvelopeError("envelope deps must be sorted and unique")
    if epoch is None:
        if seq == 1:
            raise EnvelopeError("the first envelope of a device must name its epoch")
    else:
        _bin(epoch, EPOCH_ID_SIZE, "epoch id")
    if type(topic) is not bytes or len(topic) != TOPIC_SIZE:
        raise ValueError("a channel topic is 32 bytes")
    return Envelope(
        topic, author, author_key, _bin(device, DEVICE_SIZE, "device"), seq, dep_ids, epoch,
        _bin(nonce, NONCE_SIZE, "nonce"), _bin(ciphertext, None, "ciphertext"), signature,
        signed, envelope_id(topic, signed), dep_ids, epoch or b"",
    )
