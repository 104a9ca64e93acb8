"""The channel's Automerge document, and authoring changes with restricted deps.

Theory of operation
-------------------
Every device writes its Automerge changes on a private *authoring document*
that holds only the genesis change and the device's own changes, so each
change depends on nothing but genesis and the device's previous change. The
shared document then needs no other author's change to apply one, which
matters twice:

* envelopes from different authors apply in any order their envelope deps allow;
* an equivocating device (two different changes with one seq) cannot block
  honest authors, whose changes never depend on either branch.

The schema uses only flat, top-level maps created by genesis (``meta``,
``messages``, ``reactions``, ``modlog``, ``keys``), keyed by ULID or by
``target:emoji:actor``, so no author ever needs another author's object.
Because Automerge lets any change write any key of those maps, the document is
never read naively: :mod:`p2pchat.channel.state` validates each change's declared
operation by reading the document *at that change's own heads*, where only the
author's own history is visible, and serves views from that validated index.

Applying a change: automerge 1.0.0rc1 has no ``apply_changes``; a sync message
``0x42, 0 heads, 0 need, 0 have, n changes`` passed to ``receive_sync_message``
applies them (in causal order only; a change with missing deps is dropped).

A change whose header is well formed can still carry op columns that make
automerge *panic* (e.g. an actor index past the change's actor table). The
panic surfaces as ``pyo3_runtime.PanicException``, a ``BaseException``, and
leaves the ``Document`` unusable (every later call fails). A hostile member can
sign and encrypt such a change, so :meth:`SharedDocument.apply` catches any
failure, rebuilds the document as it was before the call -- from the bytes it
was loaded from (``base``) plus every change applied since, which it keeps until
the next :meth:`SharedDocument.save` -- and raises :class:`ChangeApplyError`.
"""

from __future__ import annotations

from typing import Any

from automerge.core import ROOT, Document, Message, ObjType, ScalarType, SyncState

from p2pchat.channel.change import ChangeHeader

TOP_LEVEL = ("meta", "messages", "reactions", "modlog", "keys")


def _uleb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def changes_message(changes: list[bytes]) -> bytes:
    body = bytearray(b"\x42") + _uleb(0) + _uleb(0) + _uleb(0) + _uleb(len(changes))
    for raw in changes:
        body += _uleb(len(raw)) + raw
    return bytes(body)


class _Unreadable:
    """A value automerge holds but the binding cannot hand to Python (it panics): equal
    to nothing, so every check against the document fails."""

    def __repr__(self) -> str:
        return "UNREADABLE"


UNREADABLE: Any = _Unreadable()


#: What ``except BaseException`` around an automerge call (to catch its panics) must let
#: through.
_NOT_AUTOMERGE = (KeyboardInterrupt, SystemExit, MemoryError)


class ChangeApplyError(ValueError):
    """Automerge failed (or panicked) applying a change; the document is as before it."""


def load_document(data: bytes) -> Document:
    """``Document.load``, with automerge's panics on damaged bytes (a ``BaseException``)
    turned into ``ValueError``."""
    try:
        return Document.load(data)
    except _NOT_AUTOMERGE:
        raise
    except BaseException as exc:  # pyo3 panics on some damaged documents
        raise ValueError(f"automerge cannot load the document ({type(exc).__name__})") from None


def _apply_changes(doc: Document, changes: list[bytes]) -> None:
    doc.receive_sync_message(SyncState(), Message.decode(changes_message(changes)))


class SharedDocument:
    """The replicated document of one channel (all authors' changes)."""

    def __init__(self, doc: Document | None = None, base: bytes = b"") -> None:
        self._doc = doc if doc is not None else Document()
        #: changes known to apply, not applied yet (see :meth:`defer`)
        self._deferred: list[bytes] = []
        self._objs: dict[str, bytes] = {}
        #: the genesis change: top-level maps are the ones it created, whatever later
        #: changes wrote to the root
        self.genesis: bytes | None = None
        #: what rebuilds ``doc`` after a failed apply: the saved bytes it started from
        #: (b"": empty) and the changes applied since (cleared by :meth:`save`)
        self._base = base
        self._since: list[bytes] = []

    @property
    def doc(self) -> Document:
        """The automerge document, with every deferred change applied."""
        if self._deferred:
            self._flush()
        return self._doc

    def defer(self, raw_change: bytes) -> None:
        """Apply a change that is known to apply (another replica in this process applied
        it: p2pchat.testing.shared) the next time the document is used, with any others
        deferred so far, in one automerge call."""
        self._deferred.append(raw_change)

    def _flush(self) -> None:
        changes, self._deferred = self._deferred, []
        if self.apply_all(changes, set()):
            return
        for change in changes:  # known to apply, yet one did not: apply the rest
            try:
                self.apply(change)
            except ChangeApplyError:
                continue

    def apply(self, raw_change: bytes) -> None:
        """Apply one change; :class:`ChangeApplyError` (document unchanged) if automerge
        cannot."""
        try:
            _apply_changes(self.doc, [raw_change])
        except _NOT_AUTOMERGE:
            raise
        except BaseException as exc:
            self._rebuild()
            raise ChangeApplyError(
                f"automerge cannot apply the change ({type(exc).__name__})") from None
        self._since.append(raw_change)

    def apply_all(self, changes: list[bytes], tips: set[bytes]) -> bool:
        """Apply ``changes`` (in causal order) in one call. True if they all applied, as
        far as ``tips`` (the last change of each author's run, which nothing else in the
        document can depend on yet) are all heads after it; else the document is as
        before and False."""
        try:
            _apply_changes(self.doc, changes)
            ok = tips.issubset(self.doc.get_heads())
        except _NOT_AUTOMERGE:
            raise
        except BaseException:  # as in apply: pyo3 panics
            ok = False
        if not ok:
            self._rebuild()
            return False
        self._since += changes
        return True

    def _rebuild(self) -> None:
        doc = load_document(self._base) if self._base else Document()
        if self._since:
            _apply_changes(doc, self._since)
        self._doc = doc
        self._objs = {}


    def obj(self, name: str) -> bytes | None:
        obj = self._objs.get(name)
        if obj is None:
            if self.genesis is None:
                return None
            got = self.doc.get(ROOT, name, [self.genesis])
            if got is None or got[0] != ObjType.Map:
                return None
            obj = self._objs[name] = got[1]
        return obj

    def read_map(self, top: str, key: str, heads: list[bytes]) -> dict[str, Any] | None:
        """The scalar fields of ``top[key]`` as seen at ``heads``, or None if absent.
        A field the binding cannot convert reads as :data:`UNREADABLE`."""
        parent = self.obj(top)
        if parent is None:
            return None
        try:
            got = self.doc.get(parent, key, heads)
            if got is None or got[0] != ObjType.Map:
                return None
            obj = got[1]
            # values() lists the fields in keys() order: two calls instead of one per field
            return {field: _scalar(value)
                    for field, (value, _) in zip(self.doc.keys(obj, heads),
                                                 self.doc.values(obj, heads), strict=True)
                    if isinstance(value, tuple)}
        except _NOT_AUTOMERGE:
            raise
        except BaseException:
            return {"": UNREADABLE}

    def read_scalar(self, top: str, key: str, heads: list[bytes]) -> Any:
        parent = self.obj(top)
        if parent is None:
            return None
        try:
            got = self.doc.get(parent, key, heads)
        except _NOT_AUTOMERGE:
            raise
        except BaseException:
            return UNREADABLE
        if got is None or not isinstance(got[0], tuple):
            return None
        return got[0][1]

    def save(self) -> bytes:
        data: bytes = self.doc.save()
        self._base, self._since = data, []
        return data

    @classmethod
    def load(cls, data: bytes) -> SharedDocument:
        return cls(load_document(data), base=data)


class AuthoringDocument:
    """Genesis + this device's own changes; new changes are made here."""

    def __init__(self, actor: bytes, doc: Document | None = None) -> None:
        self.doc = doc if doc is not None else Document(actor_id=actor)
        self.doc.set_actor(actor)
        #: header of the change made last (what parse_change would read from it)
        self.last_header: ChangeHeader | None = None

    def apply(self, raw_change: bytes) -> None:
        _apply_changes(self.doc, [raw_change])

    def _last_change(self, heads_before: list[bytes]) -> bytes:
        changes = self.doc.get_changes(heads_before)
        if not changes:
            # automerge records nothing for a put that changes nothing
            raise ValueError("nothing to change")
        if len(changes) != 1:
            raise RuntimeError("expected exactly one new change")
        change = changes[0]
        self.last_header = ChangeHeader(bytes(change.hash), tuple(bytes(d) for d in change.deps),
                                        bytes(change.actor_id), change.seq, change.start_op)
        return bytes(change.raw_bytes)

    def genesis(self, meta: dict[str, Any]) -> bytes:
        before = self.doc.get_heads()
        with self.doc.transaction() as tx:
            objs = {name: tx.put_object(ROOT, name, ObjType.Map) for name in TOP_LEVEL}
            for k, v in meta.items():
                _put(tx, objs["meta"], k, v)
        return self._last_change(before)

    def put_entry(self, top: str, key: str, fields: dict[str, Any]) -> bytes:
        """Create ``top[key]`` as a map with ``fields``; returns the raw change."""
        before = self.doc.get_heads()
        parent = _top(self.doc, top)
        with self.doc.transaction() as tx:
            obj = tx.put_object(parent, key, ObjType.Map)
            for k, v in fields.items():
                _put(tx, obj, k, v)
        return self._last_change(before)

    def put_entries(self, top: str, entries: list[tuple[str, dict[str, Any]]]) -> bytes:
        """Create several ``top[key]`` maps in one change (a multi-post envelope)."""
        before = self.doc.get_heads()
        parent = _top(self.doc, top)
        with self.doc.transaction() as tx:
            for key, fields in entries:
                obj = tx.put_object(parent, key, ObjType.Map)
                for k, v in fields.items():
                    _put(tx, obj, k, v)
        return self._last_change(before)

    def update_entry(self, top: str, key: str, fields: dict[str, Any]) -> bytes:
        """Set fields of an existing ``top[key]`` map (the author's own entry)."""
        before = self.doc.get_heads()
        parent = _top(self.doc, top)
        got = self.doc.get(parent, key)
        if got is None or got[0] != ObjType.Map:
            raise KeyError(f"{top}[{key}] does not exist in this device's document")
        with self.doc.transaction() as tx:
            for k, v in fields.items():
                _put(tx, got[1], k, v)
        return self._last_change(before)

    def put_scalar(self, top: str, key: str, value: Any) -> bytes:
        before = self.doc.get_heads()
        parent = _top(self.doc, top)
        with self.doc.transaction() as tx:
            _put(tx, parent, key, value)
        return self._last_change(before)

    def save(self) -> bytes:
        return self.doc.save()

    @classmethod
    def load(cls, actor: bytes, data: bytes) -> AuthoringDocument:
        return cls(actor, load_document(data))


def _scalar(value: tuple[Any, Any]) -> Any:
    """A scalar as Python sees it: the binding hands bytes back as a list of ints."""
    kind, data = value
    return bytes(data) if kind == ScalarType.Bytes else data


def _top(doc: Document, name: str) -> bytes:
    got = doc.get(ROOT, name)
    if got is None:
        raise KeyError(f"document has no {name!r} map (no genesis yet?)")
    return got[1]


def _put(tx: Any, obj: bytes, key: str, value: Any) -> None:
    if isinstance(value, bool):
        tx.put(obj, key, ScalarType.Boolean, value)
    elif isinstance(value, int):
        tx.put(obj, key, ScalarType.Int, value)
    elif isinstance(value, str):
        tx.put(obj, key, ScalarType.Str, value)
    elif isinstance(value, bytes):
        tx.put(obj, key, ScalarType.Bytes, value)
    elif value is None:
        tx.put(obj, key, ScalarType.Null, None)
    else:
        raise TypeError(f"unsupported value type {type(value).__name__}")
