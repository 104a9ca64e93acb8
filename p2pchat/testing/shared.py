"""Work shared between many replicas in one process (the simulator's nodes): the
simulator's implementation of :class:`p2pchat.channel.memo.ReceiveMemo`, injected into
each replica (``ChannelState(..., memo=)`` or its ``shared`` attribute).

Theory of operation
-------------------
A real node holds one replica per channel, so nothing here helps it. The
simulator holds fifty, and each of them decodes, decrypts and validates every
envelope of the channel: the same bytes, the same key, the same answer, fifty
times. :class:`SharedWork` memoizes exactly the steps whose answer is a pure
function of *content-addressed* input, so each replica still gets the answer it
would have computed itself:

* ``decode``: the parse of an envelope's bytes under a channel topic (the
  result is a frozen :class:`~p2pchat.channel.envelope.Envelope`; a malformed
  envelope's error is memoized too);
* ``opened``: decrypting an envelope with one key and parsing its plaintext and
  change header (keyed by envelope id and key: the id is a hash over every byte
  that the AEAD authenticates, and a wrong key fails the same way every time);
* ``headers``: the parsed, signature-checked header of a key bundle or share
  (its bytes are the key; what a member can open of it stays per replica);
* ``reads``: one map entry or scalar of the document as of given heads. Heads are
  change hashes, and a change hash commits to the change's whole causal history,
  so the document *as of those heads* is the same on every replica holding them;
* ``applied``: that automerge applied a change. The change's deps name the
  author's previous change, so its causal history is fixed by its hash; once one
  replica has applied it, the others *defer* it
  (:meth:`~p2pchat.channel.doc.SharedDocument.defer`): it joins their documents
  in one batch the next time anything reads them, and with every read above
  shared, a simulated node's document is often never read at all.

What stays per replica is everything that depends on a replica's own state: the
DAG, the slots, the pending buffer, the Automerge document itself, the fold, the
group keys. Each memo is cleared when it reaches :data:`MAX_SHARED_ENTRIES`
(a run's working set is far smaller; clearing only costs recomputation).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.keys import BundleHeader
from p2pchat.channel.operation import Opened

#: Entries each memo holds before it is cleared (and rebuilt on demand).
MAX_SHARED_ENTRIES = 1_000_000

_K = TypeVar("_K")
_V = TypeVar("_V")


class _Failed:
    """A memoized exception: raised again, as a fresh instance, on every lookup."""

    __slots__ = ("args", "kind")

    def __init__(self, exc: Exception) -> None:
        self.kind, self.args = type(exc), exc.args


class SharedWork:
    """Memos of pure, content-addressed steps of receiving an envelope."""

    def __init__(self, limit: int = MAX_SHARED_ENTRIES) -> None:
        self.limit = limit
        self.decoded: dict[tuple[bytes, bytes], Any] = {}
        self.openings: dict[tuple[bytes, bytes], Any] = {}
        self.reads: dict[tuple[str, str, str, tuple[bytes, ...]], Any] = {}
        self.headers: dict[tuple[str, bytes], Any] = {}
        #: hashes of changes some replica applied to its document
        self.applied: set[bytes] = set()
        self.hits = self.misses = 0

    # --- ReceiveMemo --------------------------------------------------------------------

    def decode(self, topic: bytes, data: bytes, compute: Callable[[], Envelope]) -> Envelope:
        return self.memo(self.decoded, (topic, data), compute)

    def envelope_id(self, topic: bytes, data: bytes, decode: Callable[[], Envelope]) -> bytes:
        return decode().id  # the decode is shared: cheaper than hashing the bytes again

    def opened(self, env_id: bytes, key: bytes, compute: Callable[[], Opened]) -> Opened:
        return self.memo(self.openings, (env_id, key), compute)

    def header(self, kind: str, raw: bytes, compute: Callable[[], BundleHeader]
               ) -> BundleHeader:
        return self.memo(self.headers, (kind, raw), compute)

    def read(self, key: tuple[str, str, str, tuple[bytes, ...]], compute: Callable[[], Any]
             ) -> Any:
        return self.memo(self.reads, key, compute)

    def was_applied(self, change_hash: bytes) -> bool:
        return change_hash in self.applied

    def all_applied(self, hashes: Collection[bytes]) -> bool:
        return self.applied.issuperset(hashes)

    def note_applied(self, change_hash: bytes) -> None:
        if len(self.applied) >= self.limit:
            self.applied.clear()
        self.applied.add(change_hash)

    def memo(self, table: dict[_K, Any], key: _K, compute: Callable[[], _V]) -> _V:
        """``compute()`` once per ``key`` (its result or the exception it raised)."""
        got = table.get(key, _MISSING)
        if got is _MISSING:
            self.misses += 1
            if len(table) >= self.limit:
                table.clear()
            try:
                got = table[key] = compute()
            except Exception as exc:
                table[key] = _Failed(exc)
                raise
            return got
        self.hits += 1
        if type(got) is _Failed:
            raise got.kind(*got.args)
        return got  # type: ignore[no-any-return]


_MISSING = object()
