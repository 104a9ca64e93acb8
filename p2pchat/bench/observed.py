"""A node that timestamps the messages it applies, for the channel benchmarks.

:class:`ObservedNode` is a :class:`~p2pchat.runtime.node.Node` that looks at
the ``IndexMessages`` effects its core emits: the core emits one, listing every
newly visible message, in the same step that verified and applied their
envelopes (with ``store=None`` the runtime otherwise ignores it). A
:class:`Recorder` armed for a channel counts those messages, keeps the
``time.monotonic_ns()`` of the first and the last, and for each benchmark text
(:func:`~p2pchat.bench.pipeline.bench_text`) the one-way latency from the send
time written into it. Nothing else about the node changes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from p2pchat.bench.pipeline import parse_bench_text
from p2pchat.core import NodeConfig
from p2pchat.core.events import Effect, IndexMessages
from p2pchat.errors import LocalError
from p2pchat.identity import Identity
from p2pchat.runtime.node import Node
from p2pchat.store import Store


class Recorder:
    """Counts a channel's newly applied messages until ``expected`` have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        #: ``(seq, applied_ns - sent_ns)`` per benchmark text, in apply order
        self.latencies: list[tuple[int, int]] = []
        self.done = asyncio.Event()

    def feed(self, rows: tuple[tuple[str, str, str, bool], ...], now_ns: int) -> None:
        if not rows:
            return
        if self.count == 0:
            self.first_ns = now_ns
        self.last_ns = now_ns
        for _msg_id, _author, text, _hidden in rows:
            self.count += 1
            parsed = parse_bench_text(text)
            if parsed is not None:
                self.latencies.append((parsed[0], now_ns - parsed[1]))
        if self.count >= self.expected:
            self.done.set()

    async def wait(self, limit: float) -> None:
        """Until ``expected`` messages arrived; LocalError with the count after ``limit``."""
        try:
            async with asyncio.timeout(limit):
                await self.done.wait()
        except TimeoutError:
            raise LocalError(f"{self.count} of {self.expected} messages applied "
                             f"within {limit:g} s") from None

    def to_json(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {"count": self.count, "first_ns": self.first_ns, "last_ns": self.last_ns,
                "latencies_ns": [lat for _, lat in ordered]}


class ObservedNode(Node):
    """A :class:`Node` with per-channel :class:`Recorder`\\ s on the messages it applies."""

    def __init__(self, identity: Identity, config: NodeConfig, store: Store | None = None
                 ) -> None:
        if not callable(getattr(Node, "_execute", None)):  # the hook below would never run
            raise LocalError("Node._execute is gone: update p2pchat.bench.observed")
        self.recorders: dict[bytes, Recorder] = {}
        super().__init__(identity, config, store)
        self.core.hub.index_messages = True  # applied messages are observed through it

    def record(self, channel: bytes, expected: int) -> Recorder:
        """Arm a recorder for ``channel`` (replacing an earlier one)."""
        recorder = self.recorders[channel] = Recorder(expected)
        return recorder

    def _execute(self, effect: Effect) -> None:
        if isinstance(effect, IndexMessages):
            recorder = self.recorders.get(effect.channel)
            if recorder is not None:
                recorder.feed(effect.rows, time.monotonic_ns())
        super()._execute(effect)
