"""Rules every store adapter follows the same way, as plain functions (no I/O).

:func:`prekey_owner` says whose a store is when no owner was recorded (``claim``);
:func:`search_rowid` is the fixed row of a post in the search index. Both the
SQLite and the memory adapter use them, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib

import msgpack

from p2pchat.identity.did import MAX_DID_LENGTH


def prekey_owner(records: list[tuple[bytes, int]]) -> str | None:
    """The DID of the oldest prekey among (record, expires) rows: this node's own DID.

    Every prekey in a store is one its node made for itself (channel/keys.py: records are
    ``[body, signature]``, the body ``[version, did, ...]``). The oldest wins, so a
    store where another identity was started by mistake is still claimed by its
    first owner."""
    for record, _ in sorted(records, key=lambda r: r[1]):
        try:
            body, _signature = msgpack.unpackb(record, raw=False)
            did = msgpack.unpackb(body, raw=False)[1]
        except Exception:  # any decoding failure: a malformed record names nobody
            continue
        if isinstance(did, str) and did.startswith("did:key:") and len(did) <= MAX_DID_LENGTH:
            return did
    return None


def owner_mismatch_message(where: str, owner: str, did: str) -> str:
    """The one line ``claim`` refuses another identity with."""
    return (f"{where} belongs to {owner}, but identity.json next to it is {did}: "
            f"restore the identity.json of {owner} from a backup, or move node.db away "
            f"to start afresh as {did}")


def search_rowid(channel: bytes, msg: str, author: str) -> int:
    """The search row of a post: fixed per (channel, id, author), so an update replaces it."""
    digest = hashlib.blake2b(channel + msg.encode() + author.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # a positive 63-bit SQLite integer
