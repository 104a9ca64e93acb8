"""Which key opens which epoch of one channel.

Three sources, in this order: the *clear epoch* (its key derives from the channel id,
so anyone who knows the channel reads it), the group secrets learnt so far (the dict
:class:`~p2pchat.channel.group.GroupKeys` fills; each author's message key derives from
the secret, cached here), and static keys known out of band (channels from before group
keys). ``current_epoch`` names the static epoch such a channel writes with; ``None``
means the channel uses group keys (:attr:`Keyring.e2ee`).
"""

from __future__ import annotations

from collections.abc import Callable

from p2pchat.channel.keys import message_key
from p2pchat.channel.operation import clear_key, epoch_id_for

KeyLookup = Callable[[bytes], bytes | None]


class Keyring:
    def __init__(self, channel_id: bytes, secrets: dict[bytes, bytes],
                 keys: KeyLookup | None = None) -> None:
        self._keys: KeyLookup = keys or (lambda e: None)
        #: the group secrets (owned by GroupKeys, read here)
        self._secrets = secrets
        self._message_keys: dict[tuple[bytes, str], bytes] = {}
        self.clear_key = clear_key(channel_id)
        self.clear_epoch = epoch_id_for(self.clear_key)
        #: the static epoch of a channel from before group keys (None: group keys)
        self.current_epoch: bytes | None = None

    @property
    def e2ee(self) -> bool:
        """Group keys (bundles), not a static key."""
        return self.current_epoch is None

    def key_for(self, epoch: bytes, author: str) -> bytes | None:
        if epoch == self.clear_epoch:
            return self.clear_key
        secret = self._secrets.get(epoch)
        if secret is not None:
            key = self._message_keys.get((epoch, author))
            if key is None:
                key = self._message_keys[(epoch, author)] = message_key(secret, author)
            return key
        return self._keys(epoch)

    def forget_message_keys(self, epoch: bytes) -> None:
        """Drop the message keys derived from ``epoch``'s secret (being deleted)."""
        for key in [k for k in self._message_keys if k[0] == epoch]:
            del self._message_keys[key]
