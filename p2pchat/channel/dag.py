"""The envelope DAG of one replica: what is recorded, in which order, and what waits.

Theory of operation
-------------------
Every envelope that passed verification is *recorded* once (:meth:`Dag.record`), in a
causal order (``log``; deps always come first), whatever its verdict (:class:`Status`).
Per envelope the DAG keeps its metadata (``envs``) and bytes (``raw``); per device,
its slots ``(author, device, seq) -> id`` (the first envelope recorded for a slot
wins; a second one is evidence of equivocation) and its contiguous ``vector`` seq;
``heads`` are the recorded envelopes nothing recorded depends on yet.

On the wire an envelope leaves out its device's previous envelope (an implicit dep)
and, when it is the same, the epoch that envelope implies (:meth:`implied_epoch`).
:meth:`resolve` fills both in from the slot, or says the previous one is not here.
An envelope whose deps (or previous slot) are not all recorded is *parked* in a
bounded pending buffer, indexed by what it waits for; :meth:`waiters` hands the
receive pipeline the parked envelopes a newly recorded one may release.

``sealed`` and ``unreadable`` are the recorded envelopes this replica cannot read
(yet, or ever); :meth:`readable_frontier` is what a new write may depend on.
"""

from __future__ import annotations

from p2pchat.channel.envelope import MAX_ENVELOPE_DEPS, Envelope, decode_envelope
from p2pchat.channel.keyring import Keyring
from p2pchat.channel.keys import epoch_id
from p2pchat.channel.operation import decode_operation
from p2pchat.channel.records import EnvMeta, PendingFull, ReceiveResult, Rejected, Status
from p2pchat.crypto import DecryptionError

#: Envelopes a write looks through, back from sealed heads, for the newest readable
#: ones to depend on (see Dag.readable_frontier).
MAX_FRONTIER_WALK = 4096
#: Envelopes waiting for missing dependencies, per channel.
MAX_PENDING = 10_000
#: Of those, from any one author (so one member cannot fill the buffer for everyone).
MAX_PENDING_PER_AUTHOR = 2_000

Slot = tuple[str, bytes, int]
Device = tuple[str, bytes]


class Dag:
    def __init__(self, channel_id: bytes, topic: bytes, keyring: Keyring) -> None:
        self.channel_id = channel_id
        self.topic = topic
        self._keyring = keyring
        self.genesis_id: bytes | None = None
        self.genesis_hash: bytes | None = None
        self.envs: dict[bytes, EnvMeta] = {}
        self.raw: dict[bytes, bytes] = {}
        self.log: list[bytes] = []
        self.slots: dict[Slot, bytes] = {}
        self.vector: dict[Device, int] = {}
        self.equivocators: dict[Device, int] = {}
        self.heads: set[bytes] = set()
        #: ids of envelopes with status SEALED
        self.sealed: set[bytes] = set()
        #: envelopes under a group epoch we hold that do not open (or depend on one that
        #: does not): stored as invalid, never applied; a node without that epoch keeps
        #: them sealed, so both agree to store them and neither blames the forwarder
        self.unreadable: set[bytes] = set()
        self.pending: dict[bytes, Envelope] = {}
        self._pending_by_author: dict[str, int] = {}
        self._waiting: dict[bytes, set[bytes]] = {}
        #: parked envelopes waiting for their device's previous envelope, by its slot
        self._waiting_slot: dict[Slot, set[bytes]] = {}
        #: what an elided epoch means after a clear-epoch envelope (see implied_epoch)
        self._implied: dict[bytes, bytes] = {}

    # --- recording --------------------------------------------------------------------

    def record(self, env: Envelope, change_hash: bytes, status: Status, eff: int, depth: int,
               why: str = "") -> EnvMeta:
        meta = EnvMeta(env.author, env.device, env.seq, env.deps, change_hash, status,
                       len(self.log), eff, depth, why, env.epoch)
        self.envs[env.id] = meta
        self.raw[env.id] = env.encode()
        self.log.append(env.id)
        self.slots.setdefault((env.author, env.device, env.seq), env.id)
        device = (env.author, env.device)
        seq = self.vector.get(device, 0)
        while (env.author, env.device, seq + 1) in self.slots:
            seq += 1
        self.vector[device] = seq
        self.heads.difference_update(env.deps)
        self.heads.add(env.id)
        return meta

    def mark_fork(self, device: Device, seq: int) -> None:
        """Record ``device`` as forked from ``seq`` (the lowest fork seen wins, so every
        replica with the same evidence agrees)."""
        start = self.equivocators.get(device)
        self.equivocators[device] = seq if start is None else min(start, seq)

    def is_known(self, env_id: bytes) -> bool:
        return env_id in self.envs or env_id in self.pending

    # --- the implicit dependency --------------------------------------------------------

    def stored(self, env_id: bytes) -> Envelope:
        """A recorded envelope, resolved as when it was recorded."""
        meta = self.envs[env_id]
        env = decode_envelope(self.raw[env_id], self.topic)
        prev = self.slots.get((meta.author, meta.device, meta.seq - 1), b"")
        return env.resolve(prev, self.implied_epoch(prev)) if prev else env

    def implied_epoch(self, prev: bytes) -> bytes:
        """What an elided epoch means after the device's previous envelope ``prev``: the
        epoch that ``prev`` distributes if it is a key bundle (a sender rotates, then
        writes under the new epoch), else ``prev``'s own epoch."""
        epoch = self.envs[prev].epoch
        if epoch != self._keyring.clear_epoch:
            return epoch
        implied = self._implied.get(prev)
        if implied is None:
            # read from the bundle itself, not from the fold: whether the bundle counts
            # may change later (an unban), what the elided epoch means must not
            implied = epoch
            try:
                wire = decode_envelope(self.raw[prev], self.topic)
                op, _ = decode_operation(wire.decrypt(self._keyring.clear_key,
                                                      self.channel_id))
                if op["op"] == "bundle" and type(op.get("bundle")) is bytes:
                    implied = epoch_id(op["bundle"])
            except (Rejected, DecryptionError):
                pass
            self._implied[prev] = implied
        return implied

    def resolve(self, env: Envelope) -> Envelope | None:
        """``env`` with its implicit dependency (its device's previous envelope) and
        elided epoch filled in, or None while that envelope is not recorded here."""
        if env.seq == 1:
            return env
        prev = self.slots.get((env.author, env.device, env.seq - 1))
        if prev is None:
            return None
        # by the slot, whatever a caller filled in: the wire decides what it depends on
        return env if env.prev == prev else env.resolve(prev, self.implied_epoch(prev))

    # --- the pending buffer -------------------------------------------------------------

    def park(self, env: Envelope) -> ReceiveResult:
        if len(self.pending) >= MAX_PENDING:
            raise PendingFull("pending buffer full")
        if self._pending_by_author.get(env.author, 0) >= MAX_PENDING_PER_AUTHOR:
            raise PendingFull("pending buffer full for this author")
        self._pending_by_author[env.author] = self._pending_by_author.get(env.author, 0) + 1
        self.pending[env.id] = env
        if not env.resolved:
            slot = (env.author, env.device, env.seq - 1)
            self._waiting_slot.setdefault(slot, set()).add(env.id)
        for dep in env.deps:
            if dep not in self.envs:
                self._waiting.setdefault(dep, set()).add(env.id)
        return ReceiveResult(pending=True)

    def waiters(self, arrived: bytes) -> set[bytes]:
        """Ids of parked envelopes that waited for ``arrived`` (as a dep or as their
        device's previous envelope); forgotten as waiters of it."""
        meta = self.envs[arrived]
        waiting = self._waiting.pop(arrived, set())
        waiting |= self._waiting_slot.pop((meta.author, meta.device, meta.seq), set())
        return waiting

    def unpark(self, env_id: bytes, author: str) -> None:
        del self.pending[env_id]
        self._pending_by_author[author] -= 1

    # --- causal queries -----------------------------------------------------------------

    def in_causal_past(self, ancestor: bytes, deps: tuple[bytes, ...]) -> bool:
        """True if ``ancestor`` is one of ``deps`` or their ancestors (all known)."""
        floor = self.envs[ancestor].depth
        todo = list(deps)
        seen = set(deps)
        while todo:
            current = todo.pop()
            if current == ancestor:
                return True
            for dep in self.envs[current].deps:
                if dep not in seen and self.envs[dep].depth >= floor:
                    seen.add(dep)
                    todo.append(dep)
        return False

    def all_in_causal_past(self, ancestors: set[bytes], deps: tuple[bytes, ...]) -> bool:
        """Every one of ``ancestors`` is among ``deps`` or their ancestors: one walk back
        to the shallowest of them (a share may name a hundred epochs)."""
        if not ancestors:
            return True
        floor = min(self.envs[a].depth for a in ancestors)
        missing = set(ancestors)
        todo = [d for d in deps]
        seen = set(deps)
        while todo and missing:
            current = todo.pop()
            missing.discard(current)
            for dep in self.envs[current].deps:
                if dep not in seen and self.envs[dep].depth >= floor:
                    seen.add(dep)
                    todo.append(dep)
        return not missing

    def readable_frontier(self) -> set[bytes]:
        """The newest envelopes this replica can read: its heads, with each sealed or
        unreadable head replaced by its nearest readable ancestors. Own writes never
        depend on what this replica cannot read (every replica would have to wait for
        it, or, if it never opens, for ever), but they must still follow everything
        readable we saw: a kicked member's join has to follow the kick, which sits
        under the sealed messages written since (issue 16)."""
        out: set[bytes] = set()
        todo = [h for h in self.heads]
        seen: set[bytes] = set(todo)
        visits = 0
        while todo and visits < MAX_FRONTIER_WALK:
            env_id = todo.pop()
            visits += 1
            if env_id not in self.sealed and env_id not in self.unreadable:
                out.add(env_id)
                continue
            for dep in self.envs[env_id].deps:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return out

    def deps_for_new(self, me: Device) -> tuple[bytes, ...]:
        """The deps of a new envelope of device ``me``: its previous envelope, then the
        newest readable envelopes, up to MAX_ENVELOPE_DEPS."""
        own_prev = self.slots.get((me[0], me[1], self.vector.get(me, 0)))
        heads = sorted(self.readable_frontier(), key=lambda i: self.envs[i].order,
                       reverse=True)
        chosen = [own_prev] if own_prev is not None else []
        for h in heads:
            if len(chosen) >= MAX_ENVELOPE_DEPS:
                break
            if h != own_prev:
                chosen.append(h)
        return tuple(sorted(chosen))

    def missing_for(self, vector: dict[Device, int]) -> list[bytes]:
        """Envelope ids the holder of ``vector`` lacks, in causal (local log) order.

        A seq vector cannot say which of two forked envelopes it holds, so every
        envelope of a known equivocator from its fork on is included as evidence.
        """
        out = []
        for i in self.log:
            m = self.envs[i]
            start = self.equivocators.get((m.author, m.device))
            if m.seq > vector.get((m.author, m.device), 0) or (start is not None
                                                              and m.seq >= start):
                out.append(i)
        return out
