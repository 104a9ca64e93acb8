"""Rendezvous on a bootstrap server: the peer records of each topic (protocol.md §12).

Sans-IO like :mod:`bootstrap.service`, which owns one :class:`Rendezvous` and
answers ``announce`` and ``lookup`` frames with it (after its rate limit).

Records are in memory (persisted write-behind with ``SaveRecord``, reloaded at
start with :meth:`Rendezvous.load`): per topic, one record per DID, each signed by
the DID proven on the link that announced it; ``lookup`` answers the unexpired ones
except the asker's, newest announce first. A record lives until the expiry it
carries, at most ``record_max_ttl`` from its announce; :meth:`Rendezvous.sweep`
forgets the expired ones (and has the store delete them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bootstrap.config import ServiceConfig
from bootstrap.events import DeleteRecords, SaveRecord, ServiceOutput, StoredRecord
from p2pchat.bootstrap_proto import RecordError, open_record
from p2pchat.identity import short_did
from p2pchat.wire.frames import MAX_PEER_RECORDS, Announce, PeerRecord


@dataclass
class _Record:
    peer: PeerRecord
    expires_ms: int
    announced_ms: int


class Rendezvous:
    """The peer records of every topic. See the module docstring."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._records: dict[bytes, dict[str, _Record]] = {}
        #: records held, over every topic
        self.count = 0

    def announce(self, did: str, frame: Announce, wall_ms: int
                 ) -> SaveRecord | tuple[str, str]:
        """Take the record ``did`` announces: the ``SaveRecord`` that persists it, or
        the refusal (code, reason) if it is not valid or there is no room for it."""
        topic = frame.topic
        try:
            info = open_record(frame.peer, wall_ms)
        except RecordError as exc:
            return "bad-record", str(exc)
        if info.topic != topic:
            return "bad-record", "the record names another topic"
        if info.did != did:
            return "bad-record", (f"the record is signed by {short_did(info.did)}, not by the "
                                  "DID proven on this link")
        records = self._records.get(topic, {})
        if did not in records:
            if len(records) >= self.config.max_records_per_topic:
                return "too-many-records", f"the topic holds {len(records)} peer records"
            if self.count >= self.config.max_records:
                return "too-many-records", "the server holds its maximum of peer records"
            self.count += 1
            self._records[topic] = records
        expires = min(info.expires_ms, wall_ms + int(self.config.record_max_ttl * 1000))
        records[did] = _Record(frame.peer, expires, wall_ms)
        return SaveRecord(StoredRecord(topic, did, frame.peer.record, frame.peer.signature,
                                       expires, wall_ms))

    def lookup(self, asker: str, topic: bytes, wall_ms: int) -> tuple[PeerRecord, ...]:
        """The unexpired records of ``topic`` but ``asker``'s, newest announce first."""
        records = self._records.get(topic, {})
        found = sorted(((r.announced_ms, did, r) for did, r in records.items()
                        if did != asker and r.expires_ms > wall_ms),
                       key=lambda x: (-x[0], x[1]))[:MAX_PEER_RECORDS]
        return tuple(r.peer for _, _, r in found)

    def sweep(self, wall_ms: int) -> list[ServiceOutput]:
        """Forget the records expired at ``wall_ms``; the store deletes its copies."""
        expired = 0
        for topic in list(self._records):
            records = self._records[topic]
            for did in [d for d, r in records.items() if r.expires_ms <= wall_ms]:
                del records[did]
                expired += 1
            if not records:
                del self._records[topic]
        self.count -= expired
        return [DeleteRecords(wall_ms)]

    def load(self, stored: Iterable[StoredRecord], wall_ms: int) -> None:
        """The records the store holds at start (``StoreLoaded``), expired ones apart."""
        for rec in stored:
            if rec.expires_ms <= wall_ms:
                continue
            records = self._records.setdefault(rec.topic, {})
            if rec.did not in records:
                self.count += 1
            records[rec.did] = _Record(PeerRecord(record=rec.record, signature=rec.signature),
                                       rec.expires_ms, rec.announced_ms)
