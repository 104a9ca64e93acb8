"""The replica's record types: what it keeps per envelope and per post, what it shows,
and what one call reports back. Data only; no logic beyond trivial properties.

* :class:`EnvMeta`: one recorded envelope (its slot, deps, verdict, display order);
* :class:`MessageRecord`: one post and the later edits/deletes of its device;
* :class:`MessageView`: a post as views give it out;
* :class:`ReceiveResult`: what one ``receive`` did (and, with ``changed`` and
  ``new_secrets``, what the caller must index and persist because of it);
* :class:`Written`: the same for one local write;
* :class:`Outcome`: the per-call collector both are filled from (internal).

Errors raised to callers (:class:`Rejected`, :class:`PendingFull`) live here too, with
the internal signals of the receive pipeline (:class:`Sealed`, :class:`Unreadable`,
:class:`Forked`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from p2pchat.channel.envelope import Envelope
from p2pchat.errors import RemoteProtocolError


class Status(Enum):
    APPLIED = "applied"
    INVALID = "invalid"  # applied to the document, but its operation broke a rule
    QUARANTINED = "quarantined"  # equivocation: kept as evidence, not applied
    #: its author was banned in its causal past: kept (later envelopes may depend on it,
    #: and sync must not fetch it again) but not applied, shown or pushed to peers
    REFUSED = "refused"
    #: recorded in the DAG (forwarded, counted in vectors) but not readable here: its
    #: epoch's secret is not in the keyring, or it depends on an envelope that is not;
    #: opened (in causal order) when the secret arrives
    SEALED = "sealed"


class Sealed(Exception):
    """Internal: the envelope's epoch key is not (yet) in this replica's keyring."""


class Unreadable(Exception):
    """Internal: under a group epoch this replica holds, the envelope does not open or
    its plaintext is malformed (possible for anyone who knows an epoch id)."""


class Rejected(RemoteProtocolError):
    """An envelope failed verification; it is not stored and changes nothing."""


class PendingFull(Rejected):
    """The pending buffer (the channel's, or its author's share) is full: the envelope is
    dropped, not the forwarder's fault; a later summary exchange fetches it again."""


class Forked(Exception):
    """Internal: a signed change continues another change than the one this replica
    holds at its device's previous seq: its author signed two histories (a fork at
    ``seq``), whether it ever sent the other branch here or not."""

    def __init__(self, seq: int) -> None:
        super().__init__(seq)
        self.seq = seq


@dataclass(slots=True)
class EnvMeta:
    author: str
    device: bytes
    seq: int
    deps: tuple[bytes, ...]
    change_hash: bytes
    status: Status
    order: int
    eff: int
    depth: int
    why: str = ""
    epoch: bytes = b""


@dataclass(slots=True)
class MessageRecord:
    """A post and the later edits/deletes of its device, in that device's seq order."""

    id: str
    author: str
    device: bytes
    text: str
    reply_to: str
    ts: int
    env: bytes
    seq: int
    key: tuple[int, int, str]
    #: (seq, "edit" | "delete", text, ts) of later operations on this message
    ops: list[tuple[int, str, str, int]] = field(default_factory=list)

    @property
    def deleted_in_chain(self) -> bool:
        return any(kind == "delete" for _, kind, _, _ in self.ops)


def position(record: MessageRecord) -> tuple[tuple[int, int, str], bytes]:
    """A post's place in display order (design.md §10.6): its key, then its envelope id."""
    return record.key, record.env


@dataclass(frozen=True, slots=True)
class MessageView:
    id: str
    author: str
    text: str
    reply_to: str
    ts: int
    edited: int | None
    deleted: bool
    reactions: dict[str, list[str]]
    #: why moderation hides it ("" if shown); only in ``history(with_hidden=True)``,
    #: which gives hidden posts as placeholders (no text) for moderators' views
    hidden: str = ""


@dataclass(slots=True)
class Outcome:
    """What one call changed that the caller acts on (internal collector): ids of
    messages whose visible content changed (to index) and epoch secrets learnt (to
    persist). The replica's public calls empty it into what they return."""

    changed: list[str] = field(default_factory=list)
    new_secrets: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class ReceiveResult:
    """What one ``receive`` did: envelopes applied now (in order), or why not."""

    applied: list[Envelope] = field(default_factory=list)
    #: stored as evidence of an equivocation, not applied
    quarantined: list[Envelope] = field(default_factory=list)
    #: stored but not applied: the author was banned in the envelope's causal past
    refused: list[Envelope] = field(default_factory=list)
    #: stored and forwarded, not readable here (yet): no key for its epoch
    sealed: list[Envelope] = field(default_factory=list)
    #: stored (it fills its author's seq, so nobody sends it again) but never applied
    #: and never pushed: under a key this replica holds it does not open, or its change
    #: is malformed or oversized (protocol.md §9.3)
    invalid: list[Envelope] = field(default_factory=list)
    #: earlier sealed envelopes that a new key opened (already stored)
    unsealed: list[Envelope] = field(default_factory=list)
    pending: bool = False
    duplicate: bool = False
    equivocation: bool = False
    #: ids of messages whose visible content changed (for the search index), in order,
    #: repeats possible
    changed: list[str] = field(default_factory=list)
    #: epoch secrets this call added to the keyring (to persist)
    new_secrets: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Written:
    """What one local write did: the envelope it authored (the last, if it had to
    rotate first: the bundle precedes it in the log), the id it made (a post's or a
    modlog entry's, else ""), and, as for :class:`ReceiveResult`, the messages whose
    view changed and the secrets learnt. Unpacks as ``(envelope, id)``."""

    envelope: Envelope
    new_id: str = ""
    changed: tuple[str, ...] = ()
    new_secrets: tuple[tuple[bytes, bytes], ...] = ()

    def __iter__(self) -> Iterator[Any]:
        return iter((self.envelope, self.new_id))
