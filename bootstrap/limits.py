"""What clients may spend on a bootstrap server: rates, the quota and the address budget.

Sans-IO like :mod:`bootstrap.service`, which owns one :class:`RateLimits` and one
:class:`Ledger` and asks them before it takes a request or stores an upload.

**Rates** are token buckets (:class:`TokenBucket`) per kind of request and per
identity or IP key (:func:`ip_key`: the IP, or its /64 for IPv6). A request takes
its tokens from every bucket it is counted in, or from none of them; a bucket that
is full again is dropped (:meth:`RateLimits.sweep`), which is the same as a fresh one.

**The quota** bounds the bytes one uploader identity stores; **the address budget**
bounds what every identity uploading from one *address block* stores together
(``address_max_bytes``): fresh identities cost nothing, so the per-identity quota
alone does not bound one attacker. The block is the client's IPv4 /24 or IPv6 /56
(``address_prefix_v4``/``_v6``; an IPv4-mapped IPv6 address counts as IPv4),
computed from the remote address that arrives as data with ``ClientLinked`` (the
transport knows it; nothing here looks it up). Clients in ``address_exempt``
networks are not counted (block ``""``). ``AppendEnvelopes.source`` stores the block
with every row, so retention's ``Removal`` records give the bytes back and
``StoreLoaded`` brings the totals back after a restart; a block stored under a longer
prefix than the one configured now is folded into its shorter block at load (a row
stored under a shorter one keeps its old block until it expires).

The :class:`Ledger` keeps both as committed bytes (on disk) and pending bytes (in
appends not yet written); an upload is checked against the two together.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from bootstrap.config import ServiceConfig


def ip_key(host: str) -> str:
    """Rate-limit and connection-count key of an address: the IP, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP (an IPv4-mapped IPv6 address as IPv4), or None if it is not one."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_block(host: str, prefix_v4: int, prefix_v6: int) -> str:
    """Address-budget key of a client address: its IPv4 /``prefix_v4`` or IPv6
    /``prefix_v6`` network (IPv4-mapped IPv6 counts as IPv4); a host that is not an IP
    literal is its own key."""
    ip = _ip(host)
    if ip is None:
        return host
    length = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network((ip, length), strict=False))


def fold_block(source: str, prefix_v4: int, prefix_v6: int) -> str:
    """A stored block under the prefixes configured now: one stored under a longer prefix
    is folded into its shorter block; anything else is kept as it is."""
    try:
        net = ipaddress.ip_network(source, strict=False)
    except ValueError:
        return source
    length = prefix_v4 if net.version == 4 else prefix_v6
    return str(net.supernet(new_prefix=length)) if net.prefixlen > length else str(net)


def _adjust(counter: dict[str, int], key: str, delta: int) -> None:
    """Add ``delta`` to ``counter[key]``, dropping the key at zero (or below)."""
    value = counter.get(key, 0) + delta
    if value > 0:
        counter[key] = value
    else:
        counter.pop(key, None)


# --- rates ---------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def wait_for(self, n: float, now: float) -> float:
        """Seconds until ``n`` tokens are there (0: now). Takes nothing."""
        self.refill(now)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate


class RateLimits:
    """Token buckets by (kind, who), made full on first use."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, kind: str, who: str, rate: float, burst: int, now: float) -> TokenBucket:
        bucket = self._buckets.get((kind, who))
        if bucket is None:
            bucket = self._buckets[(kind, who)] = TokenBucket(rate, float(burst), float(burst),
                                                              now)
        return bucket

    def take(self, buckets: list[tuple[TokenBucket, str]], n: int, now: float) -> str | None:
        """Take ``n`` tokens from every bucket, or none and say which limit and when."""
        for bucket, what in buckets:
            wait = bucket.wait_for(n, now)
            if wait > 0:
                return f"{what} ({bucket.rate:g}/s, burst {bucket.burst:g}); retry in {wait:.1f} s"
        for bucket, _ in buckets:
            bucket.tokens -= n
        return None

    def sweep(self, now: float) -> None:
        """Drop the buckets that are full again (the same as a fresh one)."""
        for key in [k for k, b in self._buckets.items() if b.wait_for(b.burst, now) == 0]:
            del self._buckets[key]


# --- stored bytes: the quota and the address budget ---------------------------------------


class Ledger:
    """Stored bytes per uploader and per address block, committed and pending."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self._usage: dict[str, int] = {}  # committed bytes per uploader
        self._pending_usage: dict[str, int] = {}
        self._blocks: dict[str, int] = {}  # committed bytes per address block
        self._pending_blocks: dict[str, int] = {}
        self._exempt = [ipaddress.ip_network(n) for n in config.address_exempt]

    def usage_of(self, did: str) -> int:
        return self._usage.get(did, 0)

    def block_usage_of(self, block: str) -> int:
        """Committed bytes attributed to an address block (see :func:`address_block`)."""
        return self._blocks.get(block, 0)

    def block_totals(self) -> tuple[int, int]:
        """(address blocks holding bytes, bytes of the fullest one), committed."""
        return len(self._blocks), max(self._blocks.values(), default=0)

    def block_of(self, host: str) -> str:
        """The address block ``host`` is counted in ("" if it is exempt)."""
        ip = _ip(host)
        if ip is not None and any(ip in net for net in self._exempt):
            return ""
        return address_block(host, self.config.address_prefix_v4, self.config.address_prefix_v6)

    def _fold(self, source: str) -> str:
        return fold_block(source, self.config.address_prefix_v4, self.config.address_prefix_v6)

    def over(self, uploader: str, block: str, size: int) -> tuple[str, str] | None:
        """The refusal (code, reason) if ``size`` more bytes from ``uploader`` in ``block``
        would exceed the quota or the address budget, counting pending bytes; else None."""
        cfg = self.config
        used = self._usage.get(uploader, 0) + self._pending_usage.get(uploader, 0)
        if used + size > cfg.identity_max_bytes:
            return "quota", (f"you store {used} bytes here; {size} more would exceed "
                             f"the quota of {cfg.identity_max_bytes}")
        if block:
            held = self._blocks.get(block, 0) + self._pending_blocks.get(block, 0)
            if held + size > cfg.address_max_bytes:
                return "address-quota", (
                    f"your address block {block} stores {held} bytes here (all "
                    f"identities); {size} more would exceed its budget of "
                    f"{cfg.address_max_bytes}")
        return None

    def reserve(self, uploader: str, block: str, size: int) -> None:
        """``size`` bytes of an append are pending until :meth:`written`."""
        self._pending_usage[uploader] = self._pending_usage.get(uploader, 0) + size
        if block:
            _adjust(self._pending_blocks, block, size)

    def written(self, uploader: str, block: str, size: int, committed: bool) -> None:
        """The append of :meth:`reserve` is done: no longer pending, and counted as
        committed unless it failed."""
        pending = self._pending_usage[uploader] - size
        if pending:
            self._pending_usage[uploader] = pending
        else:
            del self._pending_usage[uploader]
        if block:
            _adjust(self._pending_blocks, block, -size)
        if committed:
            self._usage[uploader] = self._usage.get(uploader, 0) + size
            if block:
                _adjust(self._blocks, block, size)

    def removed(self, uploader: str, source: str, size: int) -> None:
        """Retention deleted ``size`` bytes of ``uploader`` stored from block ``source``."""
        left = self._usage.get(uploader, 0) - size
        if left > 0:
            self._usage[uploader] = left
        else:
            self._usage.pop(uploader, None)
        if source:
            _adjust(self._blocks, self._fold(source), -size)

    def load(self, usage: Iterable[tuple[str, int]], sources: Iterable[tuple[str, int]]
             ) -> None:
        """The totals the store holds at start (``StoreLoaded``)."""
        self._usage.update({did: size for did, size in usage if size > 0})
        for source, size in sources:
            if source:
                _adjust(self._blocks, self._fold(source), size)
