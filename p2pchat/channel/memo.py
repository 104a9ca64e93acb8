"""The seam for sharing pure receive work between replicas in one process.

A replica decodes, opens and validates every envelope of its channel. Where many
replicas of one channel live in one process (the simulator's nodes), those steps give
every replica the same answer for the same content-addressed input, so the simulator
injects a memo (``p2pchat.testing.shared.SharedWork``) that computes each once. A real
node has one replica per channel and uses :data:`PLAIN`, which computes everything.

Each hook is handed the computation itself, so a memo can only return what the replica
would have computed (or raise what it would have raised):

* ``decode``/``envelope_id``: an envelope's bytes under a channel topic;
* ``opened``: an envelope opened with one key (keyed by envelope id and key);
* ``header``: the checked header of a key bundle or share;
* ``read``: one entry of the document as of given heads (change hashes);
* ``was_applied``/``note_applied``: that automerge applied a change somewhere in the
  process, so the document may *defer* it (see ``SharedDocument.defer``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

from p2pchat.channel.envelope import Envelope, envelope_id_of
from p2pchat.channel.keys import BundleHeader
from p2pchat.channel.operation import Opened


class ReceiveMemo(Protocol):
    """Memos of pure, content-addressed steps of receiving an envelope."""

    def decode(self, topic: bytes, data: bytes, compute: Callable[[], Envelope]
               ) -> Envelope: ...

    def envelope_id(self, topic: bytes, data: bytes, decode: Callable[[], Envelope]
                    ) -> bytes: ...

    def opened(self, env_id: bytes, key: bytes, compute: Callable[[], Opened]) -> Opened: ...

    def header(self, kind: str, raw: bytes, compute: Callable[[], BundleHeader]
               ) -> BundleHeader: ...

    def read(self, key: tuple[str, str, str, tuple[bytes, ...]], compute: Callable[[], Any]
             ) -> Any: ...

    def was_applied(self, change_hash: bytes) -> bool: ...

    def all_applied(self, hashes: Collection[bytes]) -> bool: ...

    def note_applied(self, change_hash: bytes) -> None: ...


class PlainMemo:
    """No sharing: every step computed here (a real node's replicas)."""

    def decode(self, topic: bytes, data: bytes, compute: Callable[[], Envelope]) -> Envelope:
        return compute()

    def envelope_id(self, topic: bytes, data: bytes, decode: Callable[[], Envelope]) -> bytes:
        return envelope_id_of(data, topic)  # without decoding

    def opened(self, env_id: bytes, key: bytes, compute: Callable[[], Opened]) -> Opened:
        return compute()

    def header(self, kind: str, raw: bytes, compute: Callable[[], BundleHeader]
               ) -> BundleHeader:
        return compute()

    def read(self, key: tuple[str, str, str, tuple[bytes, ...]], compute: Callable[[], Any]
             ) -> Any:
        return compute()

    def was_applied(self, change_hash: bytes) -> bool:
        return False

    def all_applied(self, hashes: Collection[bytes]) -> bool:
        return False

    def note_applied(self, change_hash: bytes) -> None:
        pass


#: the memo of a replica that shares nothing
PLAIN: ReceiveMemo = PlainMemo()
