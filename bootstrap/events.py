"""Inputs to and outputs of the bootstrap service (:mod:`bootstrap.service`).

They form closed unions (:data:`ServiceEvent`, :data:`ServiceEffect`) beside
p2pchat's :data:`~p2pchat.core.events.LinkEvent` / ``Effect``; the server core hands them
through the same ``handle(event, now) -> [effects]`` loop as the link layer's
(:data:`ServerEvent`, :data:`ServerEffect`). Events are facts (past tense); effects
are commands the runtime carries out in order. Store effects are *ports*
(automerge-repo style): the SQLite adapter and the in-memory one in
:mod:`bootstrap.testing` answer each with the event named in its docstring, in the
order the effects were emitted (reads of stored envelopes excepted: they may be
answered in any order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from p2pchat.core.events import Address, CloseLink, Effect, LinkEvent, Transmit
from p2pchat.wire import Frame

# --- from the link layer (ServerCore) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientLinked:
    """A link finished its handshake: ``did`` is proven."""

    link_id: int
    did: str
    address: Address


@dataclass(frozen=True, slots=True)
class FrameArrived:
    link_id: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class ClientGone:
    link_id: int


# --- from the store ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicState:
    """A topic as stored: newest seq assigned, and how much it holds."""

    topic: bytes
    last_seq: int
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class StoredRecord:
    topic: bytes
    did: str
    record: bytes
    signature: bytes
    expires_ms: int
    announced_ms: int


@dataclass(frozen=True, slots=True)
class StoreLoaded:
    """What the store holds at start (records already expired are left out)."""

    topics: tuple[TopicState, ...]
    #: stored envelope bytes per uploader DID
    usage: tuple[tuple[str, int], ...]
    records: tuple[StoredRecord, ...]
    #: seqs of a topic created from now on start above this (see ``PruneDone.emptied``)
    seq_floor: int
    #: stored envelope bytes per source (the address block an upload came from, as
    #: ``AppendEnvelopes.source`` said); unattributed rows ("") are left out
    sources: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class IdsChecked:
    """Answer to :class:`CheckIds`: the ids the topic already holds."""

    op: int
    known: frozenset[bytes]
    error: str = ""


@dataclass(frozen=True, slots=True)
class AppendDone:
    """Answer to :class:`AppendEnvelopes`: committed (``error`` empty) or rolled back."""

    op: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class StoredRead:
    """Answer to :class:`ReadStored`: ``items`` as (seq, envelope), in seq order; the read
    covered every seq up to ``reached`` (``upto`` unless a size limit cut it short)."""

    read: int
    items: tuple[tuple[int, bytes], ...]
    reached: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Removal:
    """Envelopes deleted by retention, per (topic, uploader, source)."""

    topic: bytes
    uploader: str
    count: int
    size: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class PruneDone:
    """Answer to :class:`PruneOlder` and :class:`TrimTopic`. ``emptied``: topics left
    without envelopes, whose rows the store deleted (raising its seq floor to their last
    seq); ``more``: an age prune stopped at its row limit."""

    op: int
    removed: tuple[Removal, ...]
    emptied: tuple[bytes, ...] = ()
    more: bool = False
    error: str = ""


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckIds:
    """Which of ``ids`` does ``topic`` hold? Answered with :class:`IdsChecked`."""

    op: int
    topic: bytes
    ids: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoredRow:
    seq: int
    id: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class AppendEnvelopes:
    """Store ``rows`` (new to the topic, seqs increasing) in one transaction, and record
    ``rows[-1].seq`` as the topic's last seq. Answered with :class:`AppendDone`.
    ``source`` is the address block the upload came from (``""``: not counted against
    one), kept with each row so the address budget survives restarts and retention."""

    op: int
    topic: bytes
    rows: tuple[StoredRow, ...]
    uploader: str
    received_ms: int
    source: str = ""


@dataclass(frozen=True, slots=True)
class ReadStored:
    """Envelopes of ``topic`` with ``after < seq <= upto``, oldest first, at most
    ``max_items`` and ``max_bytes`` (but at least one). Answered with :class:`StoredRead`.
    ``link_id`` lets the runtime pace the read to that link's send backlog."""

    read: int
    link_id: int
    topic: bytes
    after: int
    upto: int
    max_items: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class PruneOlder:
    """Delete envelopes received before ``cutoff_ms`` (at most ``max_rows``, oldest first).
    Answered with :class:`PruneDone`."""

    op: int
    cutoff_ms: int
    max_rows: int


@dataclass(frozen=True, slots=True)
class TrimTopic:
    """Delete ``topic``'s oldest envelopes until at least ``count`` of them and ``size``
    bytes are gone. Answered with :class:`PruneDone`."""

    op: int
    topic: bytes
    count: int
    size: int


@dataclass(frozen=True, slots=True)
class SaveRecord:
    """Store (replace) ``did``'s peer record for ``topic``. No answer."""

    record: StoredRecord


@dataclass(frozen=True, slots=True)
class DeleteRecords:
    """Delete peer records that expire at or before ``expired_ms``. No answer."""

    expired_ms: int


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a structured log line: ``event`` and its fields."""

    level: str  # "debug" | "info" | "warning" | "error"
    event: str
    fields: tuple[tuple[str, object], ...] = ()




#: The service's own events (ServerCore routes them to the service).
ServiceEvent: TypeAlias = (
    ClientLinked | FrameArrived | ClientGone | StoreLoaded | IdsChecked | AppendDone
    | StoredRead | PruneDone
)
#: Store work carried out in order, in one transaction per batch (the runtime's queue).
StoreWrite: TypeAlias = CheckIds | AppendEnvelopes | PruneOlder | TrimTopic | SaveRecord \
    | DeleteRecords
#: Everything a store adapter carries out.
StoreEffect: TypeAlias = StoreWrite | ReadStored
#: What a store adapter answers with.
StoreAnswer: TypeAlias = IdsChecked | AppendDone | StoredRead | PruneDone
#: The service's own effects: store ports and log notes.
ServiceEffect: TypeAlias = (
    CheckIds | AppendEnvelopes | ReadStored | PruneOlder | TrimTopic | SaveRecord
    | DeleteRecords | Note
)
#: What the service returns: its own effects and the link-layer sends and closes.
ServiceOutput: TypeAlias = Transmit | CloseLink | ServiceEffect
#: What the server core takes: the link layer's events and the service's.
ServerEvent: TypeAlias = LinkEvent | ServiceEvent
#: What the server core asks its runtime to do.
ServerEffect: TypeAlias = Effect | ServiceEffect
