"""Primitive floors: what the libraries p2pchat is built on cost per operation, here and now.

DESIGN §13 lists these floors (PyNaCl, msgpack, Automerge) next to the aioquic
ones; the runner measures them in the same run as the node so that per-message
node figures can be put next to the sum of the primitives they cannot avoid
(see ``floor_us`` in the apply cost, ``floor_ms`` in the group-key bundle).

Each primitive runs ``rounds`` batches of ``batch`` operations on fresh, realistic
inputs (a 200-byte message, a 300-byte msgpack frame, one chat post's Automerge
change); the figure is the median batch's time per operation, in microseconds,
with the operations per second it implies.

- ``ed25519_sign`` / ``ed25519_verify``: :func:`p2pchat.crypto.sign` /
  :func:`~p2pchat.crypto.verify` of 200 bytes under the envelope domain
  (PyNaCl, libsodium).
- ``xchacha_seal`` / ``xchacha_open``: XChaCha20-Poly1305 of 200 bytes with
  64 bytes of associated data (:func:`~p2pchat.crypto.seal`).
- ``x25519``: one Diffie-Hellman (a group-key bundle does one per member).
- ``msgpack_pack`` / ``msgpack_unpack``: a 300-byte frame-like list.
- ``automerge_apply``: one post's change (made beforehand by an
  :class:`~p2pchat.channel.doc.AuthoringDocument`) applied to a
  :class:`~p2pchat.channel.doc.SharedDocument` that already holds the earlier
  ones, as a receiver applies them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgpack

from p2pchat.channel.doc import AuthoringDocument, SharedDocument
from p2pchat.crypto import Domain, generate_secret_key, seal, sign, verify
from p2pchat.crypto.aead import open_sealed
from p2pchat.crypto.dh import x25519, x25519_keypair

#: Bytes signed / encrypted per operation (about one chat envelope).
MESSAGE_BYTES = 200
AAD_BYTES = 64
#: Size of the msgpack frame packed and unpacked.
FRAME_BYTES = 300
#: Batches per primitive and operations per batch.
ROUNDS = 5
BATCH = 400


def _per_op_us(run: Callable[[int], object], batch: int, rounds: int) -> float:
    """Median over ``rounds`` of one batch's time per operation (``run(i)`` per op)."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(batch):
            run(i)
        times.append((time.perf_counter() - start) / batch)
    return float(statistics.median(times)) * 1e6


def bench_floors(batch: int = BATCH, rounds: int = ROUNDS) -> dict[str, Any]:
    """Every primitive's ``{"us": per op, "per_s": ops per second}``."""
    total = batch * rounds
    secret = generate_secret_key()
    public = secret.public_key
    messages = [os.urandom(MESSAGE_BYTES) for _ in range(batch)]
    signatures = [sign(secret, Domain.ENVELOPE, m) for m in messages]
    key, aad = os.urandom(32), os.urandom(AAD_BYTES)
    nonces = [os.urandom(24) for _ in range(batch)]
    sealed = [seal(key, n, m, aad) for n, m in zip(nonces, messages, strict=True)]
    private, _ = x25519_keypair(os.urandom)
    peers = [x25519_keypair(os.urandom)[1] for _ in range(batch)]
    frame = [1, os.urandom(32), "did:key:" + "z" * 48, os.urandom(16), 12345,
             [os.urandom(32)], os.urandom(FRAME_BYTES - 200)]
    packed = msgpack.packb(frame, use_bin_type=True)

    author = AuthoringDocument(os.urandom(16))
    genesis = author.genesis({"name": "floor"})
    changes = [author.put_entry("messages", f"{i:026d}", {
        "author": "did:key:z6Mk" + "x" * 44, "text": "x" * 64, "reply_to": "",
        "deleted": False}) for i in range(total)]
    shared = SharedDocument()
    shared.apply(genesis)
    applied = iter(changes)

    def check_verify(i: int) -> None:
        if not verify(public, Domain.ENVELOPE, messages[i], signatures[i]):
            raise AssertionError("floor signature does not verify")

    ops: dict[str, Callable[[int], object]] = {
        "ed25519_sign": lambda i: sign(secret, Domain.ENVELOPE, messages[i]),
        "ed25519_verify": check_verify,
        "xchacha_seal": lambda i: seal(key, nonces[i], messages[i], aad),
        "xchacha_open": lambda i: open_sealed(key, nonces[i], sealed[i], aad),
        "x25519": lambda i: x25519(private, peers[i]),
        "msgpack_pack": lambda i: msgpack.packb(frame, use_bin_type=True),
        "msgpack_unpack": lambda i: msgpack.unpackb(packed, raw=False),
        "automerge_apply": lambda i: shared.apply(next(applied)),
    }
    out: dict[str, Any] = {}
    for name, run in ops.items():
        us = _per_op_us(run, batch, rounds)
        out[name] = {"us": round(us, 3), "per_s": round(1e6 / us)}
    out["batch"] = batch
    out["rounds"] = rounds
    return out


def receive_floor_us(floors: dict[str, Any]) -> float:
    """What receiving one envelope cannot cost less than: verify, decrypt, unpack, apply."""
    return float(sum(floors[k]["us"] for k in
                     ("ed25519_verify", "xchacha_open", "msgpack_unpack", "automerge_apply")))
