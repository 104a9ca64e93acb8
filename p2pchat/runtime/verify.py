"""Signature checks of catch-up batches on worker threads (libsodium releases the GIL).

The core takes a ``verify_batch(envelopes) -> verdicts`` function and only receives the
verdicts. Checking a batch while the loop applies earlier batches was tried and is
slower: the busy loop thread keeps the GIL, and the workers wait up to a switch
interval after every signature.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from p2pchat.channel.envelope import Envelope
from p2pchat.core.channels import verify_in_order

#: Threads that check envelope signatures of large batches (catch-up sync): the loop's
#: own thread and VERIFY_THREADS - 1 workers.
VERIFY_THREADS = 2
#: Batches smaller than this are checked on the event loop's thread (no hand-off cost).
PARALLEL_VERIFY_MIN = 16


class ParallelVerifier:
    """``verify_batch`` for the core, spread over VERIFY_THREADS threads."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=VERIFY_THREADS - 1,
                                        thread_name_prefix="p2pchat-verify")

    def __call__(self, envelopes: list[Envelope]) -> list[bool]:
        if len(envelopes) < PARALLEL_VERIFY_MIN:
            return verify_in_order(envelopes)
        # one slice per thread (ThreadPoolExecutor.map would make a future per item)
        slices = [envelopes[i::VERIFY_THREADS] for i in range(VERIFY_THREADS)]
        # the loop's thread checks the first slice itself instead of waiting idle
        futures = [self._pool.submit(verify_in_order, s) for s in slices[1:]]
        results = [verify_in_order(slices[0])] + [f.result() for f in futures]
        verdicts = [False] * len(envelopes)
        for i, result in enumerate(results):
            verdicts[i::VERIFY_THREADS] = result
        return verdicts

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
