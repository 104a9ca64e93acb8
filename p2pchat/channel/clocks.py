"""Causal clocks: "is envelope A in the causal past of envelope B?" in O(1).

Theory of operation
-------------------
Moderation and group keys ask that question constantly, about envelopes of a few
authors: moderation authors and targets (*watched* authors, :meth:`CausalClocks.watch`).
Each device of a watched author gets a slot; every recorded envelope gets a clock, the
highest seq of each watched device in its causal past (itself included), computed from
its deps' clocks when it is recorded (:meth:`note`). Then A is in B's past iff B's
clock at A's device is at least A's seq, since a device's envelopes form a chain.

A forked device's envelopes do not form one chain, and an unwatched author has no
slot: those questions fall back to a walk of the DAG
(:meth:`~p2pchat.channel.dag.Dag.in_causal_past`). Watching a new author, or a new
device of a watched one, drops every clock; they are rebuilt on the next question,
in log order (deps first).
"""

from __future__ import annotations

from p2pchat.channel.dag import Dag
from p2pchat.channel.records import EnvMeta


class CausalClocks:
    def __init__(self, dag: Dag) -> None:
        self._dag = dag
        self._watched: set[str] = set()
        self._slots: dict[tuple[str, bytes], int] = {}
        self._clocks: dict[bytes, tuple[int, ...]] = {}
        self._wrote_cache: dict[tuple[str, bytes], bool] = {}

    def note(self, env_id: bytes, meta: EnvMeta) -> None:
        """A new envelope was recorded: give it a clock (if clocks are built)."""
        if self._clocks:
            if (meta.author, meta.device) not in self._slots and meta.author in self._watched:
                self._slots.clear()  # a new device of a watched author: rebuild lazily
                self._clocks.clear()
            else:
                self._clocks[env_id] = self._clock_for(meta)

    def watch(self, *dids: str) -> None:
        new = {d for d in dids if d} - self._watched
        if new:
            self._watched |= new
            self._slots.clear()  # slots and clocks are rebuilt on the next query
            self._clocks.clear()

    def wrote_before(self, did: str, env_id: bytes) -> bool:
        """Some envelope by ``did`` is in the causal past of ``env_id`` (cached: a device's
        first envelope is in that past if any of its envelopes is)."""
        key = (did, env_id)
        known = self._wrote_cache.get(key)
        if known is None:
            firsts = [i for (author, _, seq), i in self._dag.slots.items()
                      if author == did and seq == 1]
            known = self._wrote_cache[key] = any(self.in_past(i, env_id) for i in firsts)
        return known

    def in_past(self, ancestor: bytes, env_id: bytes) -> bool:
        """``ancestor`` is in the causal past of envelope ``env_id`` (both recorded here)."""
        if ancestor == env_id:
            return False
        envs = self._dag.envs
        meta = envs[ancestor]
        slot = self._clock_slot(meta.author, meta.device)
        if slot is None:
            return self._dag.in_causal_past(ancestor, envs[env_id].deps)
        return self._clock(env_id)[slot] >= meta.seq

    def in_past_of_deps(self, ancestor: bytes, deps: tuple[bytes, ...]) -> bool:
        """``ancestor`` is among ``deps`` or their causal past (an envelope not recorded)."""
        meta = self._dag.envs[ancestor]
        slot = self._clock_slot(meta.author, meta.device)
        if slot is None:
            return self._dag.in_causal_past(ancestor, deps)
        return any(self._clock(d)[slot] >= meta.seq for d in deps)

    def _clock_slot(self, author: str, device: bytes) -> int | None:
        """The clock slot of a watched, non-forked device (forks break the chain)."""
        if author not in self._watched or (author, device) in self._dag.equivocators:
            return None
        if not self._slots:
            self._rebuild()
        return self._slots.get((author, device))

    def _clock(self, env_id: bytes) -> tuple[int, ...]:
        clock = self._clocks.get(env_id)
        if clock is None:
            self._rebuild()
            clock = self._clocks[env_id]
        return clock

    def _rebuild(self) -> None:
        envs = self._dag.envs
        devices = sorted({(m.author, m.device) for m in envs.values()
                          if m.author in self._watched})
        self._slots = {d: i for i, d in enumerate(devices)}
        self._clocks = {}
        for env_id in self._dag.log:  # causal order: deps first
            self._clocks[env_id] = self._clock_for(envs[env_id])

    def _clock_for(self, meta: EnvMeta) -> tuple[int, ...]:
        clock = [0] * len(self._slots)
        for dep in meta.deps:
            for i, seq in enumerate(self._clocks[dep]):
                if seq > clock[i]:
                    clock[i] = seq
        slot = self._slots.get((meta.author, meta.device))
        if slot is not None:
            clock[slot] = max(clock[slot], meta.seq)
        return tuple(clock)
