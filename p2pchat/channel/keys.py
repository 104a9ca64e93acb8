"""Group keys: signed X25519 prekeys and DID-signed epoch key bundles (DESIGN §5).

Theory of operation
-------------------
*Prekeys.* Each member publishes signed X25519 prekeys: msgpack ``[1, did,
prekey id (16 random bytes), public key, expires_ms]`` signed by the DID key in
domain ``p2pchat/v1/prekey``; they live PREKEY_TTL (7 days). The identity key
converted to X25519 (``identity_prekey``, whose id is a hash of the DID) is only
a first-contact fallback: it never expires and gives no forward secrecy.

*Bundles.* An epoch secret ``G`` (32 random bytes) is sealed to each recipient's
prekey. One ephemeral X25519 key ``E`` serves the whole bundle; recipient ``i``
gets ``XChaCha20-Poly1305(K_i, nonce 0, G, AAD)`` with
``K_i = BLAKE2b(X25519(e, P_i) ‖ E ‖ P_i, person p2pchat-wrap)``: every ``K_i`` is
distinct (distinct ``P_i``) and used once, so a fixed nonce is safe, and a
recipient costs ~69 bytes: its prekey id and the wrapped secret (its DID is
not repeated: prekey ids name it, through the published prekeys). The AAD binds the
channel, the parent epochs, the distributor, the recipient's DID and prekey id,
and the key commitment ``kc = BLAKE2b(G, person p2pchat-kc)``, so a wrap moved to
another channel, epoch, recipient or bundle does not open. The distributor signs
the whole bundle with its DID key (domain ``p2pchat/v1/bundle``); the **epoch id
is BLAKE2b-256 of the bundle bytes**, so replaying a bundle names the same epoch
and re-signing someone else's wraps changes the distributor in the AAD.

*Message keys.* An author encrypts under ``BLAKE2b(G, salt = H(author)[:16],
person p2pchat-msg)``, so two authors never share a (key, nonce) space.

Nothing here decides *who* may distribute or receive: that is the channel's
membership fold; this module only makes and checks the cryptography.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from p2pchat.crypto import Domain, blake2b, open_sealed, seal
from p2pchat.crypto.aead import DecryptionError
from p2pchat.crypto.dh import (
    KeyAgreementError,
    ed25519_public_to_x25519,
    ed25519_seed_to_x25519,
    x25519,
    x25519_keypair,
    x25519_public,
)
from p2pchat.errors import IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.identity.did import MAX_DID_LENGTH
from p2pchat.identity.identity import verify_did_signature

PREKEY_VERSION = 1
BUNDLE_VERSION = 1
PREKEY_ID_SIZE = 16
#: A published prekey lives this long; members renew theirs before it runs out.
PREKEY_TTL_MS = 7 * 24 * 3600 * 1000

SECRET_SIZE = 32
#: Largest bundle we build or accept (about 16,000 recipients at 64 bytes each).
MAX_BUNDLE_RECIPIENTS = 4096
MAX_BUNDLE_PARENTS = 64
_ZERO_NONCE = bytes(24)
_PROBE = bytes([9] * 32)  # any scalar: X25519 with a small-order point yields zero

RandomBytes = Callable[[int], bytes]


class KeyError_(RemoteProtocolError):
    """A prekey or bundle that is malformed, expired, or not signed by its author."""


@dataclass(frozen=True)
class Prekey:
    did: str
    prekey_id: bytes
    public: bytes
    expires_ms: int  # 0: never (the identity fallback)


def make_prekey(identity: Identity, randbytes: RandomBytes, now_ms: int
                ) -> tuple[bytes, bytes]:
    """A signed prekey record to publish, and its private key (keep until expiry)."""
    private, public = x25519_keypair(randbytes)
    body = msgpack.packb([PREKEY_VERSION, identity.did, randbytes(PREKEY_ID_SIZE), public,
                          now_ms + PREKEY_TTL_MS], use_bin_type=True)
    record: bytes = msgpack.packb([body, identity.sign(Domain.PREKEY, body)],
                                  use_bin_type=True)
    return record, private


def open_prekey(record: bytes, now_ms: int) -> Prekey:
    """Check a published prekey record; raises :class:`KeyError_` with the reason."""
    try:
        body, signature = msgpack.unpackb(record, raw=False)
        version, did, prekey_id, public, expires = msgpack.unpackb(body, raw=False)
    except Exception:
        raise KeyError_("prekey record is malformed") from None
    if version != PREKEY_VERSION or type(did) is not str or len(did) > MAX_DID_LENGTH \
            or type(prekey_id) is not bytes or len(prekey_id) != PREKEY_ID_SIZE \
            or type(public) is not bytes \
            or len(public) != 32 or type(expires) is not int or type(signature) is not bytes:
        raise KeyError_("prekey record is malformed")
    if expires <= now_ms:
        raise KeyError_("prekey has expired")
    try:
        x25519(_PROBE, public)  # a small-order point would fix every shared secret
    except KeyAgreementError:
        raise KeyError_("prekey is not a usable X25519 key (small order)") from None
    if not _signed_by(did, Domain.PREKEY, body, signature):
        raise KeyError_("prekey signature does not verify")
    return Prekey(did, prekey_id, public, expires)


def identity_prekey_id(did: str) -> bytes:
    return blake2b(did.encode(), person=b"p2pchat-idpk", size=PREKEY_ID_SIZE)


def identity_prekey(did: str) -> Prekey:
    """The first-contact fallback: the DID's Ed25519 key converted to X25519."""
    try:
        public = ed25519_public_to_x25519(public_key_from_did(did).raw)
    except (IdentityError, KeyAgreementError) as exc:
        raise KeyError_(f"no fallback prekey for {did[:64]}: {exc}") from None
    return Prekey(did, identity_prekey_id(did), public, 0)


def identity_prekey_private(identity: Identity) -> bytes:
    return ed25519_seed_to_x25519(identity.secret_key.seed)


# --- bundles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleHeader:
    """What a bundle says without opening it (enough for membership checks)."""

    epoch: bytes  # BLAKE2b-256 of the bundle bytes
    channel: bytes
    parents: tuple[bytes, ...]
    distributor: str
    created_ms: int
    recipients: tuple[bytes, ...]  # prekey ids (published prekeys name their DIDs)
    commitment: bytes


def key_commitment(secret: bytes) -> bytes:
    return blake2b(secret, person=b"p2pchat-kc")


def epoch_id(bundle: bytes) -> bytes:
    return blake2b(bundle, person=b"p2pchat-epoch")


def _aad(tag: bytes, channel: bytes, parents: tuple[bytes, ...], distributor: str,
         recipient: str, prekey_id: bytes, commitment: bytes) -> bytes:
    data: bytes = msgpack.packb([tag, channel, list(parents), distributor, recipient, prekey_id,
                                 commitment], use_bin_type=True)
    return data


def _wrap_key(shared: bytes, ephemeral: bytes, prekey: bytes) -> bytes:
    return blake2b(shared + ephemeral + prekey, person=b"p2pchat-wrap")


_BUNDLE_TAG = b"p2pchat/v1/wrap"
_SHARE_TAG = b"p2pchat/v1/share"


def _seal_wraps(domain: Domain, tag: bytes, distributor: Identity, channel: bytes,
                parents: tuple[bytes, ...], secret: bytes, recipients: list[Prekey],
                randbytes: RandomBytes, now_ms: int, extra: list[bytes]) -> bytes:
    if len(secret) != SECRET_SIZE:
        raise ValueError("an epoch secret is 32 bytes")
    if len(recipients) > MAX_BUNDLE_RECIPIENTS:
        raise ValueError("too many recipients for one bundle")
    commitment = key_commitment(secret)
    eph_private, eph_public = x25519_keypair(randbytes)
    wraps = []
    if len({r.prekey_id for r in recipients}) != len(recipients):
        raise ValueError("a prekey is named twice")
    for r in sorted(recipients, key=lambda p: p.prekey_id):
        key = _wrap_key(x25519(eph_private, r.public), eph_public, r.public)
        aad = _aad(tag, channel, parents, distributor.did, r.did, r.prekey_id, commitment)
        wraps.append([r.prekey_id, seal(key, _ZERO_NONCE, secret, aad)])
    body = msgpack.packb([BUNDLE_VERSION, channel, list(parents), distributor.did, now_ms,
                          eph_public, commitment, wraps, *extra], use_bin_type=True)
    bundle: bytes = msgpack.packb([body, distributor.sign(domain, body)], use_bin_type=True)
    return bundle


def seal_bundle(distributor: Identity, channel: bytes, parents: tuple[bytes, ...],
                secret: bytes, recipients: list[Prekey], randbytes: RandomBytes,
                now_ms: int) -> bytes:
    """Seal ``secret`` to every recipient's prekey; signed by ``distributor``."""
    if len(parents) > MAX_BUNDLE_PARENTS:
        raise ValueError("too many parents for one bundle")
    return _seal_wraps(Domain.BUNDLE, _BUNDLE_TAG, distributor, channel, parents, secret,
                       recipients, randbytes, now_ms, [])


def _parse(bundle: bytes, domain: Domain = Domain.BUNDLE, max_parents: int = MAX_BUNDLE_PARENTS,
           extra: int = 0
           ) -> tuple[BundleHeader, bytes, list[tuple[bytes, bytes]], list[bytes]]:
    try:
        body, signature = msgpack.unpackb(bundle, raw=False)
        fields = msgpack.unpackb(body, raw=False)
        version, channel, parents, distributor, created, eph, commitment, wraps, *more = \
            fields
    except Exception:
        raise KeyError_("bundle is malformed") from None
    if version != BUNDLE_VERSION or type(channel) is not bytes or len(channel) != 32 \
            or not isinstance(parents, list) or len(parents) > max_parents \
            or not all(type(p) is bytes and len(p) == 32 for p in parents) \
            or type(distributor) is not str or len(distributor) > MAX_DID_LENGTH \
            or type(created) is not int or type(eph) is not bytes or len(eph) != 32 \
            or type(commitment) is not bytes or len(commitment) != 32 \
            or not isinstance(wraps, list) or len(wraps) > MAX_BUNDLE_RECIPIENTS \
            or type(signature) is not bytes or len(more) != extra \
            or not all(type(m) is bytes for m in more):
        raise KeyError_("bundle is malformed")
    parsed = []
    for w in wraps:
        if not isinstance(w, list) or len(w) != 2 or type(w[0]) is not bytes \
                or len(w[0]) != PREKEY_ID_SIZE or type(w[1]) is not bytes \
                or len(w[1]) != SECRET_SIZE + 16:
            raise KeyError_("bundle is malformed")
        parsed.append((w[0], w[1]))
    if len({p for p, _ in parsed}) != len(parsed):
        raise KeyError_("bundle names a prekey twice")
    if not _signed_by(distributor, domain, body, signature):
        raise KeyError_("bundle signature does not verify")
    header = BundleHeader(epoch_id(bundle), channel, tuple(parents), distributor, created,
                          tuple(p for p, _ in parsed), commitment)
    return header, eph, parsed, more


def read_bundle(bundle: bytes) -> BundleHeader:
    """Check the signature and structure; does not need any key."""
    return _parse(bundle)[0]


def open_bundle(bundle: bytes, me: str, private_for: Callable[[bytes], bytes | None]
                ) -> tuple[BundleHeader, bytes]:
    """(header, epoch secret) for recipient ``me``, whose prekey private keys come from
    ``private_for(prekey id)``. Raises :class:`KeyError_` if it cannot be opened."""
    header, eph, wraps, _ = _parse(bundle)
    return header, _unwrap(_BUNDLE_TAG, header, eph, wraps, me, private_for)


def _unwrap(tag: bytes, header: BundleHeader, eph: bytes, wraps: list[tuple[bytes, bytes]],
            me: str, private_for: Callable[[bytes], bytes | None]) -> bytes:
    for prekey_id, wrapped in wraps:
        private = private_for(prekey_id)
        if private is None:
            continue  # not one of ours (or one we no longer have)
        key = _wrap_key(x25519(private, eph), eph, x25519_public(private))
        aad = _aad(tag, header.channel, header.parents, header.distributor, me, prekey_id,
                   header.commitment)
        try:
            secret = open_sealed(key, _ZERO_NONCE, wrapped, aad)
        except DecryptionError:
            raise KeyError_("bundle wrap does not open") from None
        if key_commitment(secret) != header.commitment:
            raise KeyError_("bundle key commitment does not match")
        return secret
    raise KeyError_("bundle is not sealed to any prekey this node has")


# --- history shares ------------------------------------------------------------------------

#: Most epoch secrets one history share carries (larger histories take several shares).
MAX_SHARE_EPOCHS = 512


def _share_payload_aad(header: BundleHeader) -> bytes:
    data: bytes = msgpack.packb([_SHARE_TAG, header.channel, list(header.parents),
                                 header.distributor, header.commitment], use_bin_type=True)
    return data


def seal_share(distributor: Identity, channel: bytes, secrets: dict[bytes, bytes],
               recipients: list[Prekey], randbytes: RandomBytes, now_ms: int) -> bytes:
    """A *history share*: the secrets of existing epochs (``epoch id -> secret``) for
    some recipients. Built like a bundle (the "parents" are the shared epoch ids, the
    wrapped secret a one-time share key) but signed in another domain, so a share is
    never taken for an epoch; the secrets travel encrypted under the share key."""
    if not 0 < len(secrets) <= MAX_SHARE_EPOCHS:
        raise ValueError(f"a share carries 1..{MAX_SHARE_EPOCHS} epoch secrets")
    if any(len(s) != SECRET_SIZE or len(e) != 32 for e, s in secrets.items()):
        raise ValueError("malformed epoch secret")
    epochs = tuple(sorted(secrets))
    share_key = randbytes(SECRET_SIZE)
    header = BundleHeader(b"", channel, epochs, distributor.did, now_ms, (),
                          key_commitment(share_key))
    payload = seal(share_key, _ZERO_NONCE, b"".join(secrets[e] for e in epochs),
                   _share_payload_aad(header))
    return _seal_wraps(Domain.SHARE, _SHARE_TAG, distributor, channel, epochs, share_key,
                       recipients, randbytes, now_ms, [payload])


def read_share(share: bytes) -> BundleHeader:
    """Check a share's signature and structure (``parents`` are the shared epochs)."""
    return _parse(share, Domain.SHARE, MAX_SHARE_EPOCHS, extra=1)[0]


def open_share(share: bytes, me: str, private_for: Callable[[bytes], bytes | None]
               ) -> tuple[BundleHeader, dict[bytes, bytes]]:
    """(header, epoch id -> secret) for recipient ``me``; raises :class:`KeyError_`."""
    header, eph, wraps, (payload,) = _parse(share, Domain.SHARE, MAX_SHARE_EPOCHS, extra=1)
    share_key = _unwrap(_SHARE_TAG, header, eph, wraps, me, private_for)
    try:
        joined = open_sealed(share_key, _ZERO_NONCE, payload, _share_payload_aad(header))
    except DecryptionError:
        raise KeyError_("share payload does not open") from None
    if len(joined) != SECRET_SIZE * len(header.parents):
        raise KeyError_("share payload is malformed")
    return header, {e: joined[i * SECRET_SIZE:(i + 1) * SECRET_SIZE]
                    for i, e in enumerate(header.parents)}


def message_key(secret: bytes, author: str) -> bytes:
    """The key ``author`` encrypts its envelopes with in the epoch of ``secret``."""
    salt = hashlib.blake2b(author.encode(), digest_size=16).digest()
    return hashlib.blake2b(secret, digest_size=32, salt=salt, person=b"p2pchat-msg").digest()


def _signed_by(did: str, domain: Domain, body: bytes, signature: bytes) -> bool:
    try:
        return verify_did_signature(did, domain, body, signature)
    except IdentityError:
        return False
