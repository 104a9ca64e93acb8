"""Parallel signature checks give exactly the sequential verdicts, in order."""

from __future__ import annotations

import dataclasses
import random

from p2pchat.channel.envelope import seal_envelope
from p2pchat.core.channels import verify_in_order
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity
from p2pchat.runtime.verify import PARALLEL_VERIFY_MIN, ParallelVerifier


def test_batch_verdicts_match_sequential_ones() -> None:
    rng = random.Random(3)
    me = Identity(secret_key_from_seed(rng.randbytes(32)), rng.randbytes(16), "v")
    envelopes = [seal_envelope(me, channel=rng.randbytes(32), seq=1, deps=(),
                               epoch=rng.randbytes(32), key=rng.randbytes(32),
                               nonce=rng.randbytes(24), plaintext=rng.randbytes(50))
                 for _ in range(PARALLEL_VERIFY_MIN * 3 + 1)]
    for i in (0, 7, len(envelopes) - 1):  # break a few signatures, first and last included
        sig = bytes([envelopes[i].signature[0] ^ 1]) + envelopes[i].signature[1:]
        envelopes[i] = dataclasses.replace(envelopes[i], signature=sig)

    def run() -> list[bool]:
        verifier = ParallelVerifier()
        try:
            return verifier(envelopes)
        finally:
            verifier.shutdown()

    expected = verify_in_order(envelopes)
    assert [i for i, ok in enumerate(expected) if not ok] == [0, 7, len(envelopes) - 1]
    assert expected == run()
