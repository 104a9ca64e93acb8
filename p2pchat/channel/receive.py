"""The receive pipeline: verify, open, admit and apply envelopes, in causal order.

Theory of operation
-------------------
``receive(envelope, now_ms)`` runs the checks of DESIGN §3 in order, cheapest
first, and never touches the document before all of them pass:

1. structure and size (``decode_envelope``), right channel, not a duplicate;
2. the author's Ed25519 signature over the exact signed bytes;
3. a known epoch key, then authenticated decryption (header as associated data);
4. the plaintext: an operation descriptor plus one raw Automerge change whose
   actor is ``actor_id(author, device)`` and whose seq is the envelope's seq;
5. equivocation: a second, different envelope for one ``(author, device, seq)``
   marks that device as equivocating from that seq (see below);
6. causality: every envelope dep known, else the envelope waits in a bounded
   pending buffer (:mod:`p2pchat.channel.dag`) and is retried when its deps arrive;
7. the change's own deps are exactly genesis (first change of a device) or the
   device's previous change (see :mod:`p2pchat.channel.doc`);
8. apply the change, then validate the declared operation against the document
   read *at the change's own heads* (:mod:`p2pchat.channel.fold`); an operation that
   does not match, or that breaks a rule (edit of another author's message…), leaves
   the envelope ``invalid``: kept for replication and dependencies, never shown.

Every check depends only on the envelope and its causal past, so every replica
reaches the same verdict for the same envelope.

Equivocation: both envelopes are kept (so they reach every replica as evidence)
and every envelope of that device from the lower seq on is hidden from views;
its later changes are not applied. Since honest changes never depend on another
device's change, honest authors are unaffected.

Display order: each envelope gets ``eff = max(op.ts, eff(deps))`` and
``depth = 1 + max(depth(deps))``; messages sort by ``(eff, depth, ulid)``. This
is a linear extension of the causal order that follows authors' clocks where
they agree with causality, and it is computed once per envelope.

An envelope under an epoch this replica has no secret for is recorded ``sealed``
(forwarded, counted, not applied); when secrets arrive, :meth:`Receiver.settle` opens
sealed envelopes in causal order. A moderation entry that may lift a ban re-examines
``refused`` envelopes the same way.
"""

from __future__ import annotations

from typing import Any, Protocol

from p2pchat.channel import moderation as mod
from p2pchat.channel.change import ChangeHeader, parse_change
from p2pchat.channel.clocks import CausalClocks
from p2pchat.channel.dag import Dag
from p2pchat.channel.doc import AuthoringDocument, ChangeApplyError
from p2pchat.channel.envelope import Envelope, decode_envelope
from p2pchat.channel.fold import Fold
from p2pchat.channel.group import POLICIES, GroupKeys
from p2pchat.channel.keyring import Keyring
from p2pchat.channel.memo import ReceiveMemo
from p2pchat.channel.operation import Opened, channel_id_for, open_envelope
from p2pchat.channel.records import (
    EnvMeta,
    Forked,
    ReceiveResult,
    Rejected,
    Sealed,
    Status,
    Unreadable,
)
from p2pchat.identity import Identity

#: Changes that automerge failed on remembered per replica, so a resend is refused
#: without another document rebuild (cleared when full).
MAX_UNAPPLIABLE = 256
#: Changes applied ahead of their envelopes (preapply) that may wait for them.
MAX_PREAPPLIED = 10_000


class OwnDevice(Protocol):
    """The device this replica writes as (see :mod:`p2pchat.channel.authoring`): its
    own changes also go on its authoring document."""

    @property
    def identity(self) -> Identity: ...

    @property
    def authoring(self) -> AuthoringDocument: ...


class Receiver:
    def __init__(self, channel_id: bytes, topic: bytes, dag: Dag, clocks: CausalClocks,
                 fold: Fold, group: GroupKeys, keyring: Keyring, own: OwnDevice,
                 memo: ReceiveMemo) -> None:
        self.channel_id = channel_id
        self.topic = topic
        self._dag = dag
        self._clocks = clocks
        self._fold = fold
        self._group = group
        self._keyring = keyring
        self._own = own
        self.memo = memo
        #: hashes of changes automerge failed on (see SharedDocument.apply)
        self._unappliable: set[bytes] = set()
        #: changes already in the document, applied with their frame (see preapply),
        #: and what opening their envelopes gave
        self.preapplied: set[bytes] = set()
        self.preopened: dict[bytes, Opened] = {}

    # --- bytes --------------------------------------------------------------------------

    def decode(self, data: bytes) -> Envelope:
        """Parse an envelope of this channel (unresolved; see :meth:`receive`)."""
        return self.memo.decode(self.topic, data, lambda: decode_envelope(data, self.topic))

    def id_of(self, data: bytes) -> bytes:
        """The id of envelope bytes of this channel, without decoding them."""
        return self.memo.envelope_id(self.topic, data, lambda: self.decode(data))

    # --- receiving ----------------------------------------------------------------------

    def receive(self, env: Envelope, now_ms: int, signature_ok: bool | None = None
                ) -> ReceiveResult:
        """Verify and (when its deps are here) apply ``env``. Raises :class:`Rejected`.

        ``signature_ok``: the caller already checked ``env.verify_signature()`` (e.g. a
        batch verified in parallel); ``None`` checks it here.
        """
        dag = self._dag
        if env.id in dag.envs or env.id in dag.pending:
            return ReceiveResult(duplicate=True)
        if env.topic != self.topic:
            raise Rejected("envelope belongs to another channel")
        if not (env.verify_signature() if signature_ok is None else signature_ok):
            raise Rejected("envelope signature does not verify")
        resolved = dag.resolve(env)
        if resolved is None:
            return dag.park(env)
        env = resolved
        opened, unreadable = self._try_open(env)
        if any(dep not in dag.envs for dep in env.deps):
            return dag.park(env)
        result = ReceiveResult()
        self._admit_opened(env, opened, unreadable, result)
        self._drain(env.id, result)
        self.settle(result)
        return result

    def _try_open(self, env: Envelope) -> tuple[Opened | None, str]:
        """(operation, change, header), or None and why it is unreadable ('' if only
        its key is missing so far). Rejected still raises."""
        got = self.preopened.pop(env.id, None)
        if got is not None:
            return got, ""
        try:
            return self.open(env), ""
        except Sealed:
            return None, ""
        except Unreadable as exc:
            return None, str(exc)

    def _admit_opened(self, env: Envelope, opened: Opened | None, unreadable: str,
                      result: ReceiveResult) -> None:
        if opened is None:
            self._admit_sealed(env, result, unreadable)
        else:
            self.admit(env, *opened, result)

    def settle(self, result: ReceiveResult) -> None:
        """Open what new secrets unseal and apply what an unban readmits, until neither
        is due."""
        while self._group.unseal_due or self._fold.recheck_refused:
            if self._group.unseal_due:
                self._unseal(result)
            if self._fold.recheck_refused:
                self.readmit(result)

    def _record(self, env: Envelope, change_hash: bytes, status: Status, eff: int, depth: int,
                why: str = "") -> EnvMeta:
        meta = self._dag.record(env, change_hash, status, eff, depth, why)
        self._clocks.note(env.id, meta)
        return meta

    def _admit_sealed(self, env: Envelope, result: ReceiveResult, unreadable: str = "") -> None:
        """Record an envelope this replica cannot read (yet): in the DAG, not applied.
        ``unreadable``: it never will be (see ``Dag.unreadable``); recorded invalid."""
        dag = self._dag
        eff = max((dag.envs[d].eff for d in env.deps), default=0)
        depth = 1 + max((dag.envs[d].depth for d in env.deps), default=0)
        device = (env.author, env.device)
        start = dag.equivocators.get(device)
        other = dag.slots.get((env.author, env.device, env.seq))
        if (start is not None and env.seq >= start) or other is not None:
            if other is not None and start is None:
                dag.equivocators[device] = env.seq
                result.equivocation = True
            self._record(env, b"", Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            return
        if unreadable:
            self._record(env, b"", Status.INVALID, eff, depth, unreadable)
            dag.unreadable.add(env.id)
            result.invalid.append(env)  # stored, not forwarded: we could read it
            return
        self._record(env, b"", Status.SEALED, eff, depth, "no key for its epoch here")
        dag.sealed.add(env.id)
        self._group.work_due = True
        result.sealed.append(env)

    def _unseal(self, result: ReceiveResult) -> None:
        """New secrets: open sealed envelopes whose deps are readable, in causal order."""
        dag = self._dag
        while self._group.unseal_due:
            self._group.unseal_due = False
            for env_id in sorted(dag.sealed, key=lambda i: dag.envs[i].order):
                meta = dag.envs[env_id]
                if any(d in dag.sealed for d in meta.deps):
                    continue
                env = dag.stored(env_id)
                why = "depends on an envelope that does not decrypt" \
                    if any(d in dag.unreadable for d in meta.deps) else ""
                if not why:
                    try:
                        op, change, header = self.open(env)
                        self._check_chain(env, op, header)
                    except Sealed:
                        continue
                    except Forked as fork:  # as in admit: evidence, never applied
                        self._mark_fork((env.author, env.device), fork.seq)
                        meta.status, meta.why = Status.QUARANTINED, "equivocation"
                        dag.sealed.discard(env_id)
                        continue
                    except (Rejected, Unreadable) as exc:
                        why = str(exc)
                if why:  # unreadable after all: kept, never applied
                    meta.status, meta.why = Status.INVALID, why
                    dag.sealed.discard(env_id)
                    dag.unreadable.add(env_id)
                    continue
                dag.sealed.discard(env_id)
                meta.change_hash = header.hash
                meta.eff = max([op["ts"], *(dag.envs[d].eff for d in env.deps)])
                refusal = self._refusal(env)
                if refusal:
                    meta.status, meta.why = Status.REFUSED, refusal
                    continue
                inner = ReceiveResult()
                try:
                    self._apply(env, op, change, header, inner, meta.eff, meta.depth)
                except Rejected as exc:  # automerge cannot apply it: as if unreadable
                    meta.status, meta.why = Status.INVALID, str(exc)
                    dag.unreadable.add(env_id)
                    continue
                result.unsealed += inner.applied

    def _refusal(self, env: Envelope) -> str:
        """Why ``env`` (all deps here) is refused: its author was banned in its past."""
        fold = self._fold
        if not fold.mod_events or env.author == fold.founder:
            return ""
        bans = [e for e in fold.moderation().valid
                if e.target == env.author and e.action in ("ban", "unban")]
        if not bans:
            return ""
        past = [e for e in bans if self._clocks.in_past_of_deps(e.env, env.deps)]
        if mod.resolve_flag(past, "ban", "unban", self._clocks.in_past):
            return "author was banned in the envelope's causal past"
        return ""

    def readmit(self, result: ReceiveResult) -> None:
        """The fold changed: apply refused envelopes whose author is no longer banned."""
        self._fold.recheck_refused = False
        dag = self._dag
        for env_id in [i for i in dag.log if dag.envs[i].status is Status.REFUSED]:
            env = dag.stored(env_id)
            if self._refusal(env):
                continue
            op, change, header = self.open(env)
            meta = dag.envs[env_id]
            try:
                self._apply(env, op, change, header, result, meta.eff, meta.depth)
            except Rejected as exc:  # automerge cannot apply it: kept, never applied
                meta.status, meta.why = Status.INVALID, str(exc)

    def open(self, env: Envelope) -> Opened:
        keyring = self._keyring
        key = keyring.key_for(env.epoch, env.author)
        if key is None:
            if not keyring.e2ee:
                raise Rejected("envelope uses an unknown epoch key")
            raise Sealed()
        if not keyring.e2ee or env.epoch == keyring.clear_epoch:
            return self.open_with(env, key)
        try:
            return self.open_with(env, key)
        except Rejected as exc:
            raise Unreadable(str(exc)) from None

    def open_with(self, env: Envelope, key: bytes) -> Opened:
        op, change, header = self.memo.opened(
            env.id, key, lambda: open_envelope(env, key, self.channel_id))
        if env.epoch == self._keyring.clear_epoch and op["op"] in ("bundle", "share"):
            self._group.harvest(env.author, op)
        return op, change, header

    def _drain(self, arrived: bytes, result: ReceiveResult) -> None:
        """Admit parked envelopes whose deps are now all here (and theirs, in turn)."""
        dag = self._dag
        ready = [arrived]
        while ready:
            waiting = dag.waiters(ready.pop())
            for waiting_id in sorted(waiting):
                parked = dag.pending.get(waiting_id)
                env = dag.resolve(parked) if parked is not None else None
                if env is None or any(d not in dag.envs for d in env.deps):
                    continue
                dag.unpark(waiting_id, env.author)
                try:
                    opened, unreadable = self._try_open(env)
                    self._admit_opened(env, opened, unreadable, result)
                except Rejected:
                    continue  # dropped; it neither blocks nor changes anything
                ready.append(env.id)

    def admit(self, env: Envelope, op: dict[str, Any], change: bytes, header: ChangeHeader,
              result: ReceiveResult, trusted: bool = False) -> None:
        """All deps are present: quarantine, reject or apply ``env``."""
        dag = self._dag
        if any(d in dag.sealed for d in env.deps):
            self._admit_sealed(env, result)  # it may rely on what we cannot read yet
            return
        if any(d in dag.unreadable for d in env.deps):
            self._admit_sealed(env, result, "depends on an envelope that does not decrypt")
            return
        device = (env.author, env.device)
        eff = max([op["ts"], *(dag.envs[d].eff for d in env.deps)])
        depth = 1 + max((dag.envs[d].depth for d in env.deps), default=0)
        start = dag.equivocators.get(device)
        if start is not None and env.seq >= start:
            # this device forked: everything from the fork on is evidence, never applied
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            return
        try:
            self._check_chain(env, op, header)
        except Forked as fork:
            # e.g. a device that lost its newest envelopes in a crash and wrote again:
            # its next change continues the new branch, we hold the old one. Quarantine
            # from the fork, as for twins; the forwarder is not at fault (issue 16)
            self._mark_fork(device, fork.seq)
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            result.equivocation = True
            return
        other = dag.slots.get((env.author, env.device, env.seq))
        if other is not None:  # same author, device and seq, different envelope
            self._mark_fork(device, env.seq)
            self._record(env, header.hash, Status.QUARANTINED, eff, depth, "equivocation")
            result.quarantined.append(env)
            result.equivocation = True
            return
        refusal = self._refusal(env)
        if refusal:
            self._record(env, header.hash, Status.REFUSED, eff, depth, refusal)
            result.refused.append(env)
            return
        self._apply(env, op, change, header, result, eff, depth, trusted)

    def _apply(self, env: Envelope, op: dict[str, Any], change: bytes, header: ChangeHeader,
               result: ReceiveResult, eff: int, depth: int, trusted: bool = False) -> None:
        if header.hash in self.preapplied:  # applied with its frame (see preapply)
            self.preapplied.discard(header.hash)
        else:
            self._apply_change(change, header.hash)
        identity, authoring = self._own.identity, self._own.authoring
        own = env.author == identity.did and env.device == identity.device_salt
        if (own or op["op"] == "genesis") and header.hash not in authoring.doc.get_heads():
            authoring.apply(change)  # our authoring document: genesis + our changes
        why = self._fold.fold(env, op, header.hash, eff, depth, trusted)
        status = Status.INVALID if why else Status.APPLIED
        dag = self._dag
        meta = dag.envs.get(env.id)
        if meta is not None:  # a refused envelope admitted after all (see readmit)
            meta.status, meta.why = status, why
        else:
            self._record(env, header.hash, status, eff, depth, why)
        if op["op"] == "genesis":
            dag.genesis_id, dag.genesis_hash = env.id, header.hash
        if env.epoch != self._keyring.clear_epoch:  # rotation counts messages, not envelopes
            n = len(op["ids"]) if op["op"] == "posts" else 1
            self._group.count[env.epoch] = self._group.count.get(env.epoch, 0) + n
        result.applied.append(env)

    def _apply_change(self, change: bytes, change_hash: bytes) -> None:
        doc = self._fold.doc
        if self.memo.was_applied(change_hash):
            doc.defer(change)  # another replica applied it: it applies (see memo)
            return
        if change_hash in self._unappliable:
            raise Rejected("automerge cannot apply the change (seen before)")
        try:
            doc.apply(change)
        except ChangeApplyError as exc:
            if len(self._unappliable) >= MAX_UNAPPLIABLE:
                self._unappliable.clear()
            self._unappliable.add(change_hash)  # a resend costs no second rebuild
            raise Rejected(str(exc)) from None
        if change_hash not in doc.doc.get_heads():
            raise Rejected("automerge could not apply the change")  # document unchanged
        self.memo.note_applied(change_hash)

    def preapply(self, envelopes: list[Envelope], verdicts: dict[bytes, bool]) -> int:
        """Apply, in one automerge call, the changes of the leading run of ``envelopes``
        that :meth:`receive` will certainly apply; returns how many. (One call per change
        costs about twice as much per change as one call for ten: receiving a frame of
        posts is dominated by it.)

        Certainly: messages (post, edit, delete, react: they change neither moderation
        nor keys, so nothing earlier in the run changes how a later one is judged) by
        another device, signature verified, every dep recorded here and readable or
        earlier in the run, the author's previous change in the document or earlier in
        the run, no equivocation, opened with a key held here, change deps that pass
        :meth:`_check_chain`, and no ban or unban of the author anywhere. The run stops
        at the first envelope that is not; :meth:`receive` then handles every envelope
        as usual, skipping only the automerge call for the ones applied here. If the
        batch fails, the document is restored and nothing counts as applied.
        """
        self.preopened.clear()
        dag, fold = self._dag, self._fold
        # parked envelopes may be admitted in between (one could be a ban): not then
        if len(envelopes) < 2 or dag.genesis_hash is None or dag.pending:
            return 0
        identity = self._own.identity
        me = (identity.did, identity.device_salt)
        banned_once = {e.target for e in fold.moderation().valid
                       if e.action in ("ban", "unban")} if fold.mod_events else set()
        ahead: dict[tuple[str, bytes, int], tuple[bytes, bytes, bytes]] = {}
        changes: list[bytes] = []
        tips: dict[tuple[str, bytes], bytes] = {}
        opened: dict[bytes, Opened] = {}
        for env in envelopes:
            device = (env.author, env.device)
            slot = (env.author, env.device, env.seq)
            if verdicts.get(env.id) is not True or env.topic != self.topic \
                    or dag.is_known(env.id) or env.id in opened or device == me \
                    or slot in dag.slots or slot in ahead or device in dag.equivocators \
                    or (env.author in banned_once and env.author != fold.founder):
                break
            if env.seq == 1:
                expected = dag.genesis_hash
            else:
                prev_slot = (env.author, env.device, env.seq - 1)
                if prev_slot in ahead:
                    prev, expected, prev_epoch = ahead[prev_slot]
                else:
                    prev = dag.slots.get(prev_slot, b"")
                    meta = dag.envs.get(prev)
                    if meta is None or meta.status not in (Status.APPLIED, Status.INVALID) \
                            or prev in dag.unreadable:
                        break
                    expected, prev_epoch = meta.change_hash, dag.implied_epoch(prev)
                env = env if env.prev == prev else env.resolve(prev, prev_epoch)
            if env.epoch == self._keyring.clear_epoch or any(
                    d not in opened and (d not in dag.envs or d in dag.sealed
                                         or d in dag.unreadable) for d in env.deps):
                break
            key = self._keyring.key_for(env.epoch, env.author)
            if key is None:
                break
            try:
                op, change, header = got = self.open_with(env, key)
            except Rejected:
                break
            if op["op"] not in ("post", "posts", "edit", "delete", "react") \
                    or tuple(sorted(header.deps)) != (expected,):
                break
            opened[env.id] = got
            ahead[slot] = (env.id, header.hash, env.epoch)
            changes.append(change)
            tips[device] = header.hash
        if len(changes) < 2:
            return 0
        hashes = [h for _, h, _ in ahead.values()]
        if self.memo.all_applied(hashes):
            for change in changes:
                fold.doc.defer(change)
        elif not fold.doc.apply_all(changes, set(tips.values())):
            return 0
        else:
            for change_hash in hashes:
                self.memo.note_applied(change_hash)
        self.preapplied.update(hashes)
        if len(self.preapplied) > MAX_PREAPPLIED:  # only mispredictions linger
            self.preapplied = {h for _, h, _ in ahead.values()}
        self.preopened = opened
        return len(changes)

    def _mark_fork(self, device: tuple[str, bytes], seq: int) -> None:
        """Record ``device`` as forked from ``seq``; its posts' views change."""
        self._dag.mark_fork(device, seq)
        self._fold.device_forked(device)

    def _check_chain(self, env: Envelope, op: dict[str, Any], header: ChangeHeader) -> None:
        """Rules that depend only on ``env`` and its device's previous envelope.

        Checked before the equivocation test, so a malformed twin is rejected on
        every replica, whichever of the two arrives first.
        """
        dag = self._dag
        if op["op"] == "genesis":
            name, nonce = op.get("name"), op.get("nonce")
            if dag.genesis_id is not None or env.seq != 1 or env.deps or header.deps \
                    or type(name) is not str or type(nonce) is not bytes \
                    or op.get("policy", "history") not in POLICIES \
                    or type(op.get("dm", "")) is not str or len(op.get("dm", "")) > 128 \
                    or channel_id_for(env.author, name, nonce) != self.channel_id:
                raise Rejected("not this channel's genesis")
            return
        if dag.genesis_hash is None:
            raise Rejected("envelope before the channel's genesis")
        if env.seq == 1:
            expected = (dag.genesis_hash,)
        else:
            prev = dag.slots.get((env.author, env.device, env.seq - 1))
            if prev is None or prev not in env.deps:
                raise Rejected("envelope does not depend on its author's previous envelope")
            expected = (dag.envs[prev].change_hash,)
        if tuple(sorted(header.deps)) != expected:
            if env.seq > 1 and len(header.deps) == 1:
                # it continues some other change at seq - 1: two histories, one signer
                raise Forked(env.seq - 1)
            raise Rejected("change dependencies do not match the author's previous change")

    def own_header(self, change: bytes, seq: int) -> ChangeHeader:
        """The header of our own change just written (parsed only if the authoring
        document did not keep it)."""
        header = self._own.authoring.last_header
        if header is None or header.seq != seq:
            header = parse_change(change)
        return header
