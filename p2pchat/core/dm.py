"""Direct messages beyond a direct link (design.md §10.15). Sans-IO; owned by ChannelHub.

Theory of operation
-------------------
A direct message is a two-member channel (``ChannelHub.dm``). Over a direct link
to the peer it syncs like any channel; this module carries it when there is none:

* **Relayed messages** (the ``relay`` frame). An item for the peer — the DM
  offer (an invite), envelopes of the DM channel, or a *receipt* (what this node
  holds of the channel) — is sealed to the peer's identity key (X25519 of its
  Ed25519 key, a fresh ephemeral key each time) and signed by its origin. It goes
  to the peer over a direct link if there is one, else to up to
  :data:`MAX_RELAY_FANOUT` linked nodes that share a channel with the peer. A
  node that is not the target checks the signature (a bad one closes the link:
  honest relays forward only what verifies), forwards each ``(origin, id)`` once,
  to the target if it has a link to it, else (``hops`` permitting) to its own such
  candidates, and keeps a copy in a bounded queue for when the target connects.
  Relays learn who has something for whom, sizes and timing; never the content.
* **Receipts.** A node that stores envelopes of a DM channel written by the peer
  sends it a receipt (its vector of the channel). The receiver records it (the
  ``delivered`` status of ``dm``) and, when it has no direct link to the peer,
  answers with what the receipt lacks, and with its own receipt if the peer's
  shows something it lacks: the summary exchange of §9, carried by relays.
* **Mailboxes.** The offer is also uploaded to each bootstrap server as an
  envelope (signed by the sender, so a server accepts it unchanged) of the
  recipient's *mailbox topic*, a hash of its DID, whose ciphertext is the sealed
  offer. Every node watches its own mailbox topic on its servers. The DM
  channel's envelopes go to the servers as any channel's do.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from p2pchat.channel.envelope import ENVELOPE_VERSION, decode_envelope
from p2pchat.core.events import Effect
from p2pchat.crypto import DecryptionError, Domain, blake2b, open_sealed, seal, verify
from p2pchat.crypto.dh import (
    X25519_SIZE,
    KeyAgreementError,
    ed25519_public_to_x25519,
    ed25519_seed_to_x25519,
    x25519,
    x25519_keypair,
    x25519_public,
)
from p2pchat.errors import IdentityError, RemoteProtocolError
from p2pchat.identity import Identity, public_key_from_did
from p2pchat.wire.frames import (
    MAX_ENVELOPE_BYTES,
    MAX_RELAY_BODY,
    MAX_RELAY_HOPS,
    RELAY_ID_SIZE,
    SERVER_TOPIC_SIZE,
    Relay,
)

if TYPE_CHECKING:
    from p2pchat.channel.state import ChannelState
    from p2pchat.core.link import Link


class _LinkShares(Protocol):
    """What the router reads of one link's channel bookkeeping."""

    link: Link
    shared: set[bytes]


class DmHost(Protocol):
    """What the router needs of the channel hub that owns it (a narrow port, so this
    module does not import the hub)."""

    identity: Identity
    channels: dict[bytes, ChannelState]
    _dm_offers: dict[str, str]

    @property
    def _links(self) -> Mapping[int, _LinkShares]: ...

    def _randbytes(self, n: int, /) -> bytes: ...

    def accept_offer(self, peer: str, uri: str, now_ms: int) -> tuple[list[Effect], str]: ...

    def receive_stored(self, channel: bytes, raws: list[bytes], now_ms: int
                       ) -> list[Effect]: ...

RELAY_VERSION = 1
#: Linked nodes a relayed message goes to when there is no link to its target.
MAX_RELAY_FANOUT = 3
#: Relayed messages one link may hand us: sustained per second, and burst. More are
#: dropped (counted in ``stats["rate_dropped"]``), the link stays open.
RELAY_RATE = 20.0
RELAY_BURST = 100
#: ``(origin, id)`` pairs remembered, so each relayed message is handled once.
MAX_RELAY_SEEN = 8192
#: Relayed messages kept for targets not linked now: in all, in bytes, per target.
#: Beyond any bound the oldest goes (``stats["queue_dropped"]``).
MAX_RELAY_QUEUE = 512
MAX_RELAY_QUEUE_BYTES = 4 * 1024 * 1024
MAX_RELAY_QUEUE_PER_TARGET = 64
#: How long a queued relayed message waits for its target.
RELAY_QUEUE_TTL_MS = 24 * 3600 * 1000
#: Envelope bytes per relayed ``envelopes`` item (a larger envelope goes alone), and
#: per answer to a receipt (the peer's next receipt fetches the rest).
RELAY_BATCH_BYTES = 64 * 1024
RELAY_WINDOW_BYTES = 256 * 1024
#: Devices one receipt may name (a DM channel has two members).
MAX_RECEIPT_ENTRIES = 64
#: The epoch field of a mailbox envelope (not a channel epoch: it carries no key).
MAILBOX_EPOCH = bytes(32)
_SEAL_PERSON = b"p2pchat-dmseal"
_MAILBOX_PERSON = b"p2pchat-mailbox"
_ZERO_NONCE = bytes(24)


class RelayError(ValueError):
    """A relayed item that does not open or parse (the origin's fault, not the link's)."""


def mailbox_topic(did: str) -> bytes:
    """The server topic under which ``did``'s offers wait on bootstrap servers."""
    return blake2b(public_key_from_did(did).raw, person=_MAILBOX_PERSON,
                   size=SERVER_TOPIC_SIZE)


def _aad(msg_id: bytes, origin: str, target: str) -> bytes:
    data: bytes = msgpack.packb([RELAY_VERSION, msg_id, origin, target], use_bin_type=True)
    return data


def seal_to(target: str, origin: str, msg_id: bytes, plaintext: bytes,
            randbytes: Any) -> bytes:
    """``plaintext`` sealed to ``target``'s identity key: ephemeral public key || AEAD."""
    try:
        recipient = ed25519_public_to_x25519(public_key_from_did(target).raw)
    except (IdentityError, KeyAgreementError) as exc:
        raise ValueError(f"cannot seal to {target[:64]}: {exc}") from None
    eph_private, eph_public = x25519_keypair(randbytes)
    key = blake2b(x25519(eph_private, recipient) + eph_public + recipient, person=_SEAL_PERSON)
    return eph_public + seal(key, _ZERO_NONCE, plaintext, _aad(msg_id, origin, target))


def open_from(identity: Identity, origin: str, msg_id: bytes, body: bytes) -> bytes:
    """Open what :func:`seal_to` sealed to ``identity``; raises :class:`RelayError`."""
    private = ed25519_seed_to_x25519(identity.secret_key.seed)
    recipient = x25519_public(private)
    if len(body) <= X25519_SIZE:
        raise RelayError("sealed body too short")
    eph = body[:X25519_SIZE]
    try:
        key = blake2b(x25519(private, eph) + eph + recipient, person=_SEAL_PERSON)
        return open_sealed(key, _ZERO_NONCE, body[X25519_SIZE:],
                           _aad(msg_id, origin, identity.did))
    except (KeyAgreementError, DecryptionError) as exc:
        raise RelayError(f"sealed body does not open: {exc}") from None


def _signed(msg_id: bytes, origin: str, target: str, body: bytes) -> bytes:
    data: bytes = msgpack.packb([RELAY_VERSION, msg_id, origin, target, body],
                                use_bin_type=True)
    return data


def make_relay(identity: Identity, target: str, plaintext: bytes, randbytes: Any,
               hops: int = MAX_RELAY_HOPS) -> Relay:
    msg_id = randbytes(RELAY_ID_SIZE)
    body = seal_to(target, identity.did, msg_id, plaintext, randbytes)
    if len(body) > MAX_RELAY_BODY:
        raise ValueError(f"relayed item larger than {MAX_RELAY_BODY} bytes")
    signature = identity.sign(Domain.RELAY, _signed(msg_id, identity.did, target, body))
    return Relay(id=msg_id, origin=identity.did, target=target, hops=hops, body=body,
                 signature=signature)


def check_relay(frame: Relay) -> None:
    """Raise :class:`RemoteProtocolError` unless ``frame`` is signed by its origin."""
    try:
        origin = public_key_from_did(frame.origin)
        public_key_from_did(frame.target)
    except IdentityError as exc:
        raise RemoteProtocolError(f"relayed message names a bad DID: {exc}") from None
    if not verify(origin, Domain.RELAY, _signed(frame.id, frame.origin, frame.target,
                                                frame.body), frame.signature):
        raise RemoteProtocolError("relayed message signature does not verify")


def mailbox_item(identity: Identity, target: str, plaintext: bytes, randbytes: Any) -> bytes:
    """An envelope of ``target``'s mailbox topic carrying ``plaintext`` sealed to it. It is
    signed like any envelope (over the topic), so a bootstrap server stores it as one."""
    nonce = randbytes(24)
    body = seal_to(target, identity.did, nonce[:RELAY_ID_SIZE], plaintext, randbytes)
    signed: bytes = msgpack.packb([ENVELOPE_VERSION, identity.public_key.raw,
                                   identity.device_salt, 1, [], MAILBOX_EPOCH, nonce, body],
                                  use_bin_type=True)
    if len(signed) + 64 > MAX_ENVELOPE_BYTES:
        raise ValueError("mailbox item too large")
    topic = mailbox_topic(target)
    return signed + identity.sign(Domain.ENVELOPE, topic + signed)


def open_mailbox_item(identity: Identity, raw: bytes) -> tuple[str, bytes]:
    """(origin DID, plaintext) of a mailbox envelope for ``identity``; RelayError if not."""
    try:
        env = decode_envelope(raw, mailbox_topic(identity.did))
    except RemoteProtocolError as exc:
        raise RelayError(f"mailbox item: {exc}") from None
    if not env.verify_signature():
        raise RelayError("mailbox item signature does not verify")
    return env.author, open_from(identity, env.author, env.nonce[:RELAY_ID_SIZE],
                                 env.ciphertext)


def _pack(*fields: Any) -> bytes:
    data: bytes = msgpack.packb([RELAY_VERSION, *fields], use_bin_type=True)
    return data


def _unpack(plaintext: bytes) -> list[Any]:
    try:
        fields = msgpack.unpackb(plaintext, raw=False, strict_map_key=True, use_list=True)
    except Exception:
        raise RelayError("relayed item is not msgpack") from None
    if not isinstance(fields, list) or len(fields) < 2 or fields[0] != RELAY_VERSION \
            or not isinstance(fields[1], str):
        raise RelayError("unknown relayed item")
    return fields[1:]


@dataclass
class _Queued:
    target: str
    frame: Relay
    size: int
    expires_ms: int


class DmRouter:
    """Relayed DM items, receipts and mailbox offers for one node (module docstring)."""

    def __init__(self, hub: DmHost) -> None:
        self.hub = hub
        self.identity = hub.identity
        self._seen: OrderedDict[tuple[str, bytes], None] = OrderedDict()
        self._queue: OrderedDict[tuple[str, bytes], _Queued] = OrderedDict()
        self._queue_bytes = 0
        self._now_ms = 0  # the latest wall time seen (queue expiry on link open)
        self._buckets: dict[int, tuple[float, int]] = {}  # link id -> (tokens, at ms)
        #: per DM channel, what the peer's last receipt said it holds
        self.peer_vectors: dict[bytes, dict[tuple[str, bytes], int]] = {}
        #: per DM channel, the highest seq of ours handed to a link (the peer's or a relay)
        self.handed: dict[bytes, int] = {}
        #: mailbox items (sealed offers) per peer DID, uploaded to every bootstrap server
        self.mailbox: dict[str, bytes] = {}
        #: mailbox items made since NodeCore last looked (it uploads them)
        self.mailbox_new: list[tuple[str, bytes]] = []
        self.stats: dict[str, int] = {
            "relayed": 0, "queued": 0, "queue_dropped": 0, "rate_dropped": 0,
            "duplicates": 0, "undeliverable": 0, "unknown_target": 0}

    # --- queries ----------------------------------------------------------------------

    def peer_of(self, state: ChannelState) -> str:
        """The other member of a DM channel ("" if ``state`` is not a DM of ours)."""
        me = self.identity.did
        if not state.dm_peer or me not in (state.founder, state.dm_peer):
            return ""
        return state.dm_peer if state.founder == me else state.founder

    def delivered(self, channel: bytes, seq: int) -> bool:
        """Whether the peer's receipts show it holds our envelope ``seq`` of ``channel``."""
        state = self.hub.channels.get(channel)
        if state is None:
            return False
        me = (state.identity.did, state.identity.device_salt)  # the device it writes as
        return self.peer_vectors.get(channel, {}).get(me, 0) >= seq

    def _link_to(self, did: str) -> Link | None:
        for lc in self.hub._links.values():
            if lc.link.peer_did == did and lc.link.is_open:
                return lc.link
        return None

    def _authors(self, state: ChannelState) -> set[str]:
        return {author for author, _ in state.vector}

    def _known(self, did: str) -> bool:
        """Whether ``did`` wrote in a channel this node holds (a relay queues only for
        those: a stranger cannot make it store for arbitrary DIDs)."""
        return any(did in self._authors(s) for s in self.hub.channels.values()
                   if not self.peer_of(s))

    def _candidates(self, target: str, exclude: set[int]) -> list[Link]:
        """Linked nodes that share a (non-DM) channel with ``target``: they may reach it."""
        rooms = [c for c, s in self.hub.channels.items()
                 if not self.peer_of(s) and target in self._authors(s)]
        out = []
        for link_id, lc in sorted(self.hub._links.items()):
            peer = lc.link.peer_did or ""
            if link_id in exclude or peer == target or not lc.link.is_open:
                continue
            if any(c in lc.shared and peer in self._authors(self.hub.channels[c])
                   for c in rooms):
                out.append(lc.link)
        return out[:MAX_RELAY_FANOUT]

    # --- sending ----------------------------------------------------------------------

    def _route(self, target: str, plaintext: bytes, after_store: bool = False,
               only: Link | None = None) -> tuple[list[Effect], bool]:
        """Seal ``plaintext`` for ``target`` and send it: over the link to it, else to the
        candidates (or only over ``only``). (effects, whether any link took it)."""
        direct = self._link_to(target)
        links: list[Link]
        if only is not None:
            links = [only]
        elif direct is not None:
            links = [direct]
        else:
            links = self._candidates(target, set())
        if not links:
            return [], False
        try:
            frame = make_relay(self.identity, target, plaintext, self.hub._randbytes)
        except ValueError:
            return [], False
        self._remember((frame.origin, frame.id))
        return [link.send(frame, after_store) for link in links], True

    def _remember(self, key: tuple[str, bytes]) -> bool:
        """Record ``key``; False if it was seen already."""
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > MAX_RELAY_SEEN:
            self._seen.popitem(last=False)
        return True

    def new_offer(self, peer: str, uri: str, now_ms: int) -> list[Effect]:
        """A DM offer for ``peer``: relayed if there is no direct link, and put in its
        mailbox on every bootstrap server."""
        effects: list[Effect] = []
        if self._link_to(peer) is None:
            effects, _ = self._route(peer, _pack("offer", uri))
        try:
            item = mailbox_item(self.identity, peer, _pack("offer", uri), self.hub._randbytes)
        except ValueError:
            return effects
        self.mailbox[peer] = item
        self.mailbox_new.append((peer, item))
        return effects

    def mailbox_items(self) -> list[tuple[str, bytes]]:
        """Mailbox items of offers still pending (the peer has not written yet)."""
        for did in [d for d in self.mailbox if d not in self.hub._dm_offers]:
            del self.mailbox[did]
        return sorted(self.mailbox.items())

    def _envelopes_for(self, state: ChannelState, ids: list[bytes], only: Link | None = None
                       ) -> tuple[list[Effect], bool]:
        peer = self.peer_of(state)
        effects: list[Effect] = []
        handed = False
        batch: list[bytes] = []
        size = 0
        raws = [state.raw[i] for i in ids]
        for raw in [*raws, b""]:
            if batch and (not raw or size + len(raw) > RELAY_BATCH_BYTES):
                sent, ok = self._route(peer, _pack("envelopes", state.channel_id, batch),
                                       after_store=True, only=only)
                effects += sent
                handed |= ok
                batch, size = [], 0
            if raw:
                batch.append(raw)
                size += len(raw)
        if handed:
            me = (state.identity.did, state.identity.device_salt)
            own = [state.envs[i].seq for i in ids if (state.envs[i].author,
                                                       state.envs[i].device) == me]
            if own:
                self.handed[state.channel_id] = max(self.handed.get(state.channel_id, 0),
                                                    *own)
        return effects, handed

    def _receipt(self, state: ChannelState, only: Link | None = None) -> list[Effect]:
        entries = [[a, d, s] for (a, d), s in sorted(state.vector.items()) if s > 0]
        effects, _ = self._route(self.peer_of(state),
                                 _pack("summary", state.channel_id,
                                       entries[:MAX_RECEIPT_ENTRIES]), only=only)
        return effects

    def after(self, effects: list[Effect]) -> list[Effect]:
        """After an event: envelopes just stored in DM channels. Ours go to the peer by
        relay when no link to it shares the channel (else the link's push carries them);
        the peer's are acknowledged with a receipt."""
        from p2pchat.core.events import PersistEnvelopes

        out: list[Effect] = []
        stored: dict[bytes, list[bytes]] = {}
        for effect in effects:
            if isinstance(effect, PersistEnvelopes):
                state = self.hub.channels.get(effect.channel)
                if state is not None and self.peer_of(state):
                    stored.setdefault(effect.channel, []).extend(i for i, _ in effect.items)
        for channel, ids in stored.items():
            state = self.hub.channels[channel]
            me = (state.identity.did, state.identity.device_salt)
            peer = self.peer_of(state)
            known = [i for i in ids if i in state.envs]
            own = [i for i in known if (state.envs[i].author, state.envs[i].device) == me]
            theirs = any(state.envs[i].author == peer for i in known)
            link = self._link_to(peer)
            shared = link is not None and any(
                lc.link is link and channel in lc.shared for lc in self.hub._links.values())
            if own and shared:
                self.handed[channel] = max(self.handed.get(channel, 0),
                                           *(state.envs[i].seq for i in own))
            elif own:
                sent, _ = self._envelopes_for(state, own)
                out += sent
            if theirs:
                out += self._receipt(state)
        return out

    # --- links ------------------------------------------------------------------------

    def on_link_open(self, link: Link) -> list[Effect]:
        """Queued items for this peer go to it; pending offers and unacknowledged DM
        envelopes for peers we have no link to go through it if it may reach them."""
        peer = link.peer_did or ""
        effects: list[Effect] = []
        self._expire(self._now_ms)
        for key, item in list(self._queue.items()):
            if item.target == peer:
                self._drop(key)
                effects.append(link.send(item.frame))
                self.stats["relayed"] += 1
        for did, uri in sorted(self.hub._dm_offers.items()):
            if did != peer and self._link_to(did) is None \
                    and link in self._candidates(did, set()):
                sent, _ = self._route(did, _pack("offer", uri), only=link)
                effects += sent
        for channel, state in sorted(self.hub.channels.items()):
            me = (state.identity.did, state.identity.device_salt)
            other = self.peer_of(state)
            if not other or other == peer or self._link_to(other) is not None \
                    or link not in self._candidates(other, set()):
                continue
            acked = self.peer_vectors.get(channel, {}).get(me, 0)
            own = [i for i in state.log if (state.envs[i].author, state.envs[i].device) == me
                   and state.envs[i].seq > acked]
            sent, _ = self._envelopes_for(state, self._window(state, own), only=link)
            effects += sent
            effects += self._receipt(state, only=link)
        return effects

    def _window(self, state: ChannelState, ids: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        size = 0
        for i in ids:
            size += len(state.raw[i])
            if out and size > RELAY_WINDOW_BYTES:
                break
            out.append(i)
        return out

    def on_link_closed(self, link_id: int) -> None:
        self._buckets.pop(link_id, None)

    # --- receiving --------------------------------------------------------------------

    def _allow(self, link_id: int, now_ms: int) -> bool:
        tokens, at = self._buckets.get(link_id, (float(RELAY_BURST), now_ms))
        tokens = min(float(RELAY_BURST), tokens + (now_ms - at) / 1000 * RELAY_RATE)
        if tokens < 1:
            self._buckets[link_id] = (tokens, now_ms)
            return False
        self._buckets[link_id] = (tokens - 1, now_ms)
        return True

    def on_relay(self, link: Link, frame: Relay, now_ms: int) -> list[Effect]:
        """A relayed message from a link: checked, then delivered, forwarded or queued.
        A bad signature or DID raises (the link is closed); everything else is bounded
        and dropped quietly."""
        self._now_ms = max(self._now_ms, now_ms)
        if not self._allow(link.link_id, now_ms):
            self.stats["rate_dropped"] += 1
            return []
        check_relay(frame)
        if not self._remember((frame.origin, frame.id)):
            self.stats["duplicates"] += 1
            return []
        me = self.identity.did
        if frame.origin == me:
            return []
        if frame.target == me:
            return self._deliver(frame, now_ms)
        direct = self._link_to(frame.target)
        if direct is not None:
            self.stats["relayed"] += 1
            return [direct.send(frame)]
        if not self._known(frame.target):
            self.stats["unknown_target"] += 1
            return []
        self._enqueue(frame, now_ms)
        if frame.hops == 0:
            return []
        onward = Relay(id=frame.id, origin=frame.origin, target=frame.target,
                       hops=frame.hops - 1, body=frame.body, signature=frame.signature)
        origin_link = self._link_to(frame.origin)
        exclude = {link.link_id} | ({origin_link.link_id} if origin_link else set())
        links = self._candidates(frame.target, exclude)
        self.stats["relayed"] += len(links)
        return [lk.send(onward) for lk in links]

    def _enqueue(self, frame: Relay, now_ms: int) -> None:
        self._expire(now_ms)
        key = (frame.origin, frame.id)
        size = len(frame.body) + 256
        self._queue[key] = _Queued(frame.target, frame, size, now_ms + RELAY_QUEUE_TTL_MS)
        self._queue_bytes += size
        self.stats["queued"] += 1
        mine = [k for k, q in self._queue.items() if q.target == frame.target]
        while len(mine) > MAX_RELAY_QUEUE_PER_TARGET:
            self._drop(mine.pop(0))
            self.stats["queue_dropped"] += 1
        while len(self._queue) > MAX_RELAY_QUEUE or self._queue_bytes > MAX_RELAY_QUEUE_BYTES:
            self._drop(next(iter(self._queue)))
            self.stats["queue_dropped"] += 1

    def _drop(self, key: tuple[str, bytes]) -> None:
        item = self._queue.pop(key)
        self._queue_bytes -= item.size

    def _expire(self, now_ms: int) -> None:
        for key, item in list(self._queue.items()):
            if item.expires_ms <= now_ms:
                self._drop(key)

    def queued(self) -> int:
        return len(self._queue)

    def _deliver(self, frame: Relay, now_ms: int) -> list[Effect]:
        try:
            fields = _unpack(open_from(self.identity, frame.origin, frame.id, frame.body))
            return self._item(frame.origin, fields, now_ms)
        except RelayError:
            self.stats["undeliverable"] += 1
            return []

    def on_mailbox(self, raws: list[bytes], now_ms: int) -> list[Effect]:
        """Items from our mailbox topic on a bootstrap server: offers only."""
        effects: list[Effect] = []
        for raw in raws:
            try:
                origin, plaintext = open_mailbox_item(self.identity, raw)
                fields = _unpack(plaintext)
                if fields[0] != "offer":
                    raise RelayError("a mailbox carries offers only")
                effects += self._item(origin, fields, now_ms)
            except RelayError:
                self.stats["undeliverable"] += 1
        return effects

    def _item(self, origin: str, fields: list[Any], now_ms: int) -> list[Effect]:
        kind = fields[0]
        if kind == "offer" and len(fields) == 2 and isinstance(fields[1], str):
            effects, error = self.hub.accept_offer(origin, fields[1], now_ms)
            if error:
                raise RelayError(error)
            return effects
        if kind in ("envelopes", "summary") and len(fields) == 3 \
                and isinstance(fields[1], bytes) and isinstance(fields[2], list):
            state = self.hub.channels.get(fields[1])
            if state is None or self.peer_of(state) != origin:
                raise RelayError("not a direct-message channel with that peer")
            if kind == "envelopes":
                raws = [r for r in fields[2] if isinstance(r, bytes)
                        and 0 < len(r) <= MAX_ENVELOPE_BYTES]
                return self.hub.receive_stored(state.channel_id, raws, now_ms)
            return self._on_receipt(state, fields[2])
        raise RelayError("malformed relayed item")

    def _on_receipt(self, state: ChannelState, entries: list[Any]) -> list[Effect]:
        theirs: dict[tuple[str, bytes], int] = {}
        for entry in entries[:MAX_RECEIPT_ENTRIES]:
            if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) \
                    and isinstance(entry[1], bytes) and type(entry[2]) is int:
                theirs[(entry[0], entry[1])] = entry[2]
        known = self.peer_vectors.setdefault(state.channel_id, {})
        for device, seq in theirs.items():
            known[device] = max(known.get(device, 0), seq)
        if self._link_to(self.peer_of(state)) is not None:
            return []  # the direct link's sync answers; this was an acknowledgement
        effects, _ = self._envelopes_for(state, self._window(state, state.missing_for(theirs)))
        if any(seq > state.vector.get(device, 0) for device, seq in theirs.items()):
            effects += self._receipt(state)  # it holds what we lack: ask for it
        return effects
