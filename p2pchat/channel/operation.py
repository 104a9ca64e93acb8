"""What an envelope carries inside its encryption, and the ids derived from a channel.

An envelope's plaintext is ``[change, operation]``: one raw Automerge change and the
operation it declares (DESIGN §5). This module encodes and decodes that pair, opens an
envelope with a key and checks its change against the envelope's header
(:func:`open_envelope`, a pure function, hence memoisable), checks the fields of a
moderation action, and derives the ids and keys that depend on the channel alone
(channel id, epoch id, the clear epoch's key). Pure functions only.
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2pchat.channel import moderation as mod
from p2pchat.channel.change import ChangeFormatError, ChangeHeader, parse_change
from p2pchat.channel.envelope import Envelope, actor_id
from p2pchat.channel.records import Rejected
from p2pchat.channel.ulid import ULID_BYTES, is_ulid, ulid_from_bytes, ulid_ms, ulid_to_bytes
from p2pchat.crypto import DecryptionError, blake2b
from p2pchat.errors import IdentityError
from p2pchat.identity import public_key_from_did

#: Largest Automerge change inside one envelope, in bytes.
MAX_CHANGE_SIZE = 64 * 1024
#: Most posts one envelope carries (a burst of sends sealed together, DESIGN §10.2).
MAX_POSTS_PER_ENVELOPE = 64
#: Bytes of text (UTF-8, with reply_to) plus POST_ENTRY_OVERHEAD per post that one
#: multi-post envelope may carry: its change must stay under MAX_CHANGE_SIZE.
MAX_POSTS_BYTES = 56 * 1024
#: A bound on what one messages entry adds to a change besides its text (the map, its
#: id, four keys, the author DID, reply_to; ~140 bytes measured).
POST_ENTRY_OVERHEAD = 256
_CHANNEL_PERSON = b"p2pchat-chan"
_EPOCH_PERSON = b"p2pchat-epoch"

#: what one opened envelope gives: (operation, change, change header)
Opened = tuple[dict[str, Any], bytes, ChangeHeader]


def channel_id_for(founder: str, name: str, nonce: bytes) -> bytes:
    return blake2b(msgpack.packb([founder, name, nonce], use_bin_type=True), person=_CHANNEL_PERSON)


def encode_operation(op: dict[str, Any], change: bytes) -> bytes:
    """An envelope's plaintext: ``[change, operation]``. A post, the commonest, is just
    ``[change, ulid]`` (16 bytes; its time is the ULID's): overhead counts (DESIGN §5).
    Several posts sealed together are ``[change, [ulid, ...]]`` (2 to
    MAX_POSTS_PER_ENVELOPE binary ULIDs, increasing; the time is the latest)."""
    if op["op"] == "post" and len(op) == 3 and is_ulid(op["id"]) \
            and op["ts"] == ulid_ms(op["id"]):
        body: Any = ulid_to_bytes(op["id"])
    elif op["op"] == "posts" and len(op) == 3:
        body = [ulid_to_bytes(i) for i in op["ids"]]
    else:
        body = op
    return msgpack.packb([change, body], use_bin_type=True)  # type: ignore[no-any-return]


def decode_operation(plaintext: bytes) -> tuple[dict[str, Any], bytes]:
    """(operation, change) from an envelope's plaintext; :class:`Rejected` if malformed."""
    try:
        outer = msgpack.unpackb(plaintext, raw=False, strict_map_key=True)
    except Exception as exc:
        raise Rejected(f"envelope plaintext is malformed: {type(exc).__name__}") from None
    if not (isinstance(outer, list) and len(outer) == 2 and type(outer[0]) is bytes):
        raise Rejected("envelope plaintext must be an operation with a change")
    change, body = outer
    if type(body) is bytes and len(body) == ULID_BYTES:
        msg_id = ulid_from_bytes(body)
        if not is_ulid(msg_id):
            raise Rejected("post id is not a ULID")
        return {"op": "post", "id": msg_id, "ts": ulid_ms(msg_id)}, change
    if type(body) is list:
        if not 2 <= len(body) <= MAX_POSTS_PER_ENVELOPE \
                or any(type(b) is not bytes or len(b) != ULID_BYTES for b in body):
            raise Rejected(f"a multi-post envelope names 2..{MAX_POSTS_PER_ENVELOPE} "
                           "binary ULIDs")
        ids = [ulid_from_bytes(b) for b in body]  # every 128-bit value is a ULID
        return {"op": "posts", "ids": ids, "ts": max(ulid_ms(i) for i in ids)}, change
    if not isinstance(body, dict) or type(body.get("op")) is not str \
            or type(body.get("ts")) is not int or "change" in body:
        raise Rejected("envelope plaintext must be an operation with a change")
    return body, change


def post_bytes(text: str, reply_to: str) -> int:
    """What one post of a multi-post envelope counts against MAX_POSTS_BYTES."""
    return len(text.encode()) + len(reply_to) + POST_ENTRY_OVERHEAD


def epoch_id_for(key: bytes) -> bytes:
    """The id of the epoch whose group secret is ``key`` (a commitment to it)."""
    return blake2b(b"epoch", key=key, person=_EPOCH_PERSON)


def clear_key(channel_id: bytes) -> bytes:
    """The key of the *clear epoch*: derived from the channel id alone, so whoever knows
    the channel (members, joiners without a group key yet, servers) can read what is
    sealed under it. Only public material goes there: published prekeys (and, with the
    E2EE issue, key bundles, which are sealed per recipient anyway)."""
    return blake2b(b"clear", key=channel_id, person=b"p2pchat-clear")


def prekey_key(prekey_id: bytes) -> str:
    """The ``keys`` entry a published prekey is written under."""
    return f"prekey:{prekey_id.hex()}"


def reaction_key(target: str, emoji: str, actor: bytes) -> str:
    """The ``reactions`` entry of one device's reaction."""
    return f"{target}:{emoji}:{actor.hex()}"


def mod_fields(action: Any, target: Any, value: Any, on: Any, reason: Any
               ) -> dict[str, Any] | str:
    """The modlog fields of an action, or why it is malformed."""
    if action not in mod.ACTIONS:
        return f"unknown moderation action {str(action)[:32]!r}"
    if type(reason) is not str or len(reason) > mod.MAX_REASON_LENGTH:
        return f"reason must be at most {mod.MAX_REASON_LENGTH} characters"
    if action in mod.TARGET_ACTIONS:
        try:
            public_key_from_did(target)
        except (IdentityError, TypeError, AttributeError):
            return f"{action} needs a member's DID"
        return {"action": action, "target": target, "reason": reason}
    if action == "topic":
        if type(value) is not str or len(value) > mod.MAX_TOPIC_LENGTH:
            return f"topic must be at most {mod.MAX_TOPIC_LENGTH} characters"
        return {"action": action, "value": value, "reason": reason}
    if value not in mod.MODES or type(on) is not bool:
        return f"mode must be one of {', '.join(mod.MODES)}, set on or off"
    return {"action": action, "value": value, "on": on, "reason": reason}


def open_envelope(env: Envelope, key: bytes, channel: bytes) -> Opened:
    """Decrypt ``env`` with ``key`` and check its change against its header: (operation,
    change, change header), or :class:`Rejected`. A pure function of its arguments."""
    try:
        plaintext = env.decrypt(key, channel)
    except DecryptionError as exc:
        raise Rejected(f"envelope does not decrypt: {exc}") from None
    op, change = decode_operation(plaintext)
    if len(change) > MAX_CHANGE_SIZE:
        raise Rejected(f"change of {len(change)} bytes exceeds {MAX_CHANGE_SIZE}")
    try:
        header = parse_change(change)
    except ChangeFormatError as exc:
        raise Rejected(f"bad change: {exc}") from None
    if header.actor != actor_id(env.author, env.device):
        raise Rejected("change actor does not belong to the envelope's author")
    if header.seq != env.seq:
        raise Rejected(f"change seq {header.seq} does not match envelope seq {env.seq}")
    return op, change, header
