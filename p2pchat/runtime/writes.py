"""Ordered store writes for the node runtime: one queue, group commit, callbacks that
run once everything queued before them has committed.

The core emits persistence effects in the order they must land (envelopes before the
cursor that covers them, a prekey before its record is published). The writer takes
everything queued so far, commits its writes in one transaction
(:meth:`Store.write <p2pchat.store.sqlite.Store.write>`), then runs the callbacks in
order with ``ok`` (committed or rolled back): an answer that depends on a write
(``connect`` succeeded -> peer saved; a post's envelope stored -> its answer and its
push) is released only then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from p2pchat.core.events import Effect
from p2pchat.store import Store

log = logging.getLogger("p2pchat.node")


class StoreWriter:
    """The write queue of one node (see the module docstring)."""

    def __init__(self, store: Store | None, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        # (True, persistence effect) or (False, callback(ok)); None stops the writer
        self._queue: asyncio.Queue[tuple[bool, Any] | None] = asyncio.Queue()
        self._task = loop.create_task(self._run())
        #: writes and callbacks queued and not yet done
        self.pending = 0

    def write(self, effect: Effect) -> None:
        """Queue a persistence effect (dropped when the node runs without a store)."""
        if self.store is None:
            return
        self.pending += 1
        self._queue.put_nowait((True, effect))

    def after(self, callback: Callable[[bool], None]) -> None:
        """Run ``callback(ok)`` once the writes queued so far are done (ok: committed)."""
        if self.pending == 0:
            callback(True)
            return
        self.pending += 1
        self._queue.put_nowait((False, callback))

    async def stop(self) -> None:
        """Commit what is queued, then end the writer."""
        await self._queue.put(None)
        await self._task

    async def _commit(self, writes: list[Effect]) -> bool:
        assert self.store is not None
        try:
            await self.store.write(writes, time.time())
            ok = True
        except Exception:
            log.exception("store write failed (%d writes rolled back)", len(writes))
            ok = False
        self.pending -= len(writes)
        return ok

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            await asyncio.sleep(0)  # group commit: let work that is already runnable queue up
            batch = [item]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # Everything queued so far goes into one transaction; the callbacks run after it,
            # in order (a callback waits for at least the writes queued before it).
            stop = None in batch
            writes = [fn for entry in batch if entry is not None and entry[0]
                      for fn in (entry[1],)]
            callbacks = [fn for entry in batch if entry is not None and not entry[0]
                         for fn in (entry[1],)]
            ok = await self._commit(writes) if writes else True
            for callback in callbacks:
                self.pending -= 1
                callback(ok)
            if stop:
                return
