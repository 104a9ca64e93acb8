"""mDNS discovery on the LAN (zeroconf).

Theory of operation
-------------------

Every node with mDNS on advertises one DNS-SD service instance of type
``_p2pchat._udp.local.``, named ``p2pchat-<last 16 characters of its DID>``,
whose SRV record gives the QUIC port and whose TXT record holds ``did=<DID>``
and ``v=1``. It browses the same type. Nothing about channels is advertised:
a node offers every p2pchat node it sees to the core, which dials it
expecting that DID; channels then sync over the link as for any other peer.

A record is only a hint. Identity is proven by the QUIC link handshake (the
peer signs with the key behind the DID), so a record naming someone else's
DID, or a wrong address, costs one failed dial and nothing else. The parsing
is strict and never raises out of this module: a record without a valid
``did:key``, with an unknown ``v``, a bad port or no usable address is
ignored with a debug log. Our own DID is ignored. Addresses that could only
reach this host or nothing (loopback, unspecified, multicast) and IPv6
link-local ones (no scope in the record) are dropped, and at most
:data:`MAX_ADDRESSES_PER_RECORD` are taken from one record.

Which interfaces: the address records respect the listen address.

- a specific IP: zeroconf is bound to that interface only
  (``interfaces=[ip]``) and the record carries that one address;
- ``0.0.0.0`` (or ``::``): every interface, and the record carries every
  non-loopback IPv4 address of the host (plus global IPv6 ones for ``::``);
- loopback: mDNS does not start at all (nothing on the LAN could reach the
  node), and :attr:`MdnsDiscovery.status` says so.

IPv6 addresses are dialled only if the node listens on IPv6.

Bounds: a hostile or flapping responder must not make the node dial
constantly. Resolutions run in at most :data:`MAX_RESOLVING` tasks, at most
:data:`MAX_RECORDS` services are tracked, and offers to the core go through
:class:`OfferLimiter`: a token bucket over all records
(:data:`OFFERS_PER_SECOND`, burst :data:`OFFER_BURST`) and a per-record
cooldown (:data:`RECORD_COOLDOWN`). The cooldown is per record rather than
per DID so that a spoofed record carrying a victim's DID cannot crowd out
the real one. The core dials an offered address once and forgets it if the
dial fails, so every :data:`REOFFER_INTERVAL` seconds the records of peers
that are not connected are resolved (from the cache, usually) and offered
again.

zeroconf runs on the node's event loop. Starting opens the sockets (fast)
and returns; the probe and announcement (about a second) run in a task.
:meth:`MdnsDiscovery.close` sends the goodbye packets and closes zeroconf,
within :data:`CLOSE_TIMEOUT`. A failure at start (no multicast, no such
interface) or during registration sets ``status`` to ``failed: ...`` and
logs a warning; the node keeps running without mDNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass

import ifaddr
from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2pchat.core.events import Address, format_address
from p2pchat.errors import IdentityError
from p2pchat.identity import public_key_from_did, short_did
from p2pchat.runtime.node import Node

log = logging.getLogger("p2pchat.mdns")

SERVICE_TYPE = "_p2pchat._udp.local."
INSTANCE_PREFIX = "p2pchat-"
#: characters of the DID (from the end) in the instance name
INSTANCE_DID_CHARS = 16
TXT_VERSION = "1"

#: addresses taken from one record (and advertised in ours)
MAX_ADDRESSES_PER_RECORD = 8
#: services tracked at once; more are ignored until some go away
MAX_RECORDS = 256
#: resolutions in flight at once; more are dropped (the sweep retries them)
MAX_RESOLVING = 16
#: how long one resolution may wait for the records it lacks
RESOLVE_TIMEOUT_MS = 3000
#: offers to the core, over all records: sustained rate and burst
OFFERS_PER_SECOND = 2.0
OFFER_BURST = 16
#: seconds before the same record is offered again
RECORD_COOLDOWN = 10.0
#: seconds between re-offers of records whose peer is not connected
REOFFER_INTERVAL = 15.0
#: seconds close() may spend on goodbye packets and shutting zeroconf down
CLOSE_TIMEOUT = 2.0


class RecordError(ValueError):
    """A service record that cannot be used; the message says why."""


def instance_name(did: str) -> str:
    """The DNS-SD instance name advertised for ``did``."""
    return INSTANCE_PREFIX + did[-INSTANCE_DID_CHARS:]


def service_name(did: str) -> str:
    return f"{instance_name(did)}.{SERVICE_TYPE}"


def txt_properties(did: str) -> dict[str, str]:
    return {"did": did, "v": TXT_VERSION}


def _txt_value(properties: Mapping[bytes, bytes | None], key: bytes) -> str:
    value = properties.get(key)
    if value is None:
        raise RecordError(f"no {key.decode()}= in the TXT record")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{key.decode()}= is not UTF-8") from None


def usable_address(text: str, ipv6: bool) -> str | None:
    """``text`` normalised if a peer may be dialled there, else ``None``.

    Loopback, unspecified and multicast addresses are refused (a LAN record
    has no business pointing the node at itself), and so is IPv6 link-local,
    which needs a scope the record does not carry. IPv4 link-local
    (169.254/16) is kept: it is all a LAN without DHCP has.
    """
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and not ipv6:
        return None
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and (ip.is_link_local
                                                  or ip.ipv4_mapped is not None):
        return None
    return str(ip)


@dataclass(frozen=True, slots=True)
class Record:
    """A usable record: the DID it claims and where to dial it."""

    did: str
    addresses: tuple[Address, ...]


def parse_record(properties: Mapping[bytes, bytes | None], port: int | None,
                 addresses: Iterable[str], *, own_did: str, ipv6: bool) -> Record:
    """Check a resolved service; raises :class:`RecordError` with the reason."""
    version = _txt_value(properties, b"v")
    if version != TXT_VERSION:
        raise RecordError(f"unsupported version v={version[:16]!r}")
    did = _txt_value(properties, b"did")
    try:
        public_key_from_did(did)
    except IdentityError as exc:
        raise RecordError(f"bad did: {exc}") from None
    if did == own_did:
        raise RecordError("our own DID")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise RecordError(f"bad port {port!r}")
    found: list[Address] = []
    for text in addresses:
        ip = usable_address(text, ipv6)
        if ip is not None and (ip, port) not in found:
            found.append((ip, port))
            if len(found) >= MAX_ADDRESSES_PER_RECORD:
                break
    if not found:
        raise RecordError("no usable address")
    return Record(did, tuple(found))


@dataclass(frozen=True, slots=True)
class Plan:
    """What to advertise and where, decided from the listen address."""

    interfaces: list[str] | InterfaceChoice
    ip_version: IPVersion
    addresses: list[str]
    ipv6: bool
    shown: str  # for the status line


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def plan_for(host: str, local_ips: Iterable[str]) -> Plan | str:
    """A :class:`Plan` for a node listening on ``host``, or why mDNS stays off.

    ``local_ips`` are the host's addresses; only used for a wildcard listen.
    """
    if is_loopback(host):
        return "listening on loopback only"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"listen host {host!r} is not an IP address"
    ipv6 = ip.version == 6
    if not ip.is_unspecified:
        version = IPVersion.V6Only if ipv6 else IPVersion.V4Only
        return Plan([str(ip)], version, [str(ip)], ipv6, str(ip))
    addresses: list[str] = []
    for text in local_ips:
        usable = usable_address(text, ipv6)
        if usable is not None and usable not in addresses:
            addresses.append(usable)
    addresses = sorted(addresses, key=lambda a: (":" in a, a))[:MAX_ADDRESSES_PER_RECORD]
    if not addresses:
        return "no non-loopback address to advertise"
    version = IPVersion.All if ipv6 else IPVersion.V4Only
    return Plan(InterfaceChoice.All, version, addresses, ipv6, ", ".join(addresses))


def local_ips() -> list[str]:
    """Every address of every interface of this host (IPv6 without scope)."""
    ips: list[str] = []
    for adapter in ifaddr.get_adapters():
        for entry in adapter.ips:
            ips.append(entry.ip if isinstance(entry.ip, str) else entry.ip[0])
    return ips


class OfferLimiter:
    """Token bucket over all offers plus a cooldown per record (pure; time passed in)."""

    def __init__(self, rate: float = OFFERS_PER_SECOND, burst: int = OFFER_BURST,
                 cooldown: float = RECORD_COOLDOWN) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.cooldown = cooldown
        self._tokens = float(burst)
        self._at: float | None = None
        # Only records offered within the cooldown are kept, and the bucket lets
        # through at most burst + rate·cooldown of those: the dict stays small.
        self._recent: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._recent = {k: t for k, t in self._recent.items() if now - t < self.cooldown}
        if key in self._recent or self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        self._recent[key] = now
        return True

    def tracked(self) -> int:
        return len(self._recent)


class MdnsDiscovery:
    """Advertise this node and report the nodes it sees to ``node.discovered``."""

    def __init__(self, node: Node, address: Address) -> None:
        self.node = node
        self.address = address
        self.did = node.identity.did
        self.name = service_name(self.did)
        self.seen = 0  # distinct DIDs with a usable record right now
        self._state = "off"
        self._plan: Plan | None = None
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._registered = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._teardown: asyncio.Task[None] | None = None
        self._resolving: set[str] = set()
        self._records: dict[str, Record] = {}  # service name -> last usable record
        self._known: set[str] = set()  # names browsed, usable or not (bounded)
        self._limiter = OfferLimiter()

    @property
    def status(self) -> str:
        if self._state != "advertising" or self._plan is None:
            return self._state
        seen = f"{self.seen} peer{'' if self.seen == 1 else 's'} seen"
        return f"advertising on {self._shown()}, {seen}"

    def _shown(self) -> str:
        assert self._plan is not None
        shown = self._plan.shown
        if ":" in shown or "," in shown:
            return f"{shown} port {self.address[1]}"
        return format_address((shown, self.address[1]))

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        host, port = self.address
        try:
            ips = [] if is_loopback(host) else local_ips()
        except OSError as exc:
            self._fail(f"cannot list interfaces: {exc}")
            return
        plan = plan_for(host, ips)
        if isinstance(plan, str):
            self._state = f"off ({plan})"
            log.info("mDNS: off: %s (%s)", plan, format_address(self.address))
            return
        self._plan = plan
        if logging.getLogger("zeroconf").level == logging.NOTSET:
            logging.getLogger("zeroconf").setLevel(logging.INFO)  # DEBUG logs every packet
        try:
            self._zc = AsyncZeroconf(interfaces=plan.interfaces, ip_version=plan.ip_version)
            self._info = AsyncServiceInfo(
                SERVICE_TYPE, self.name, port=port, properties=txt_properties(self.did),
                server=f"{instance_name(self.did)}.local.", parsed_addresses=plan.addresses)
            self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE,
                                                handlers=[self._on_change])
        except Exception as exc:  # zeroconf raises OSError, RuntimeError, its own errors
            self._fail(f"cannot start zeroconf on {self._shown()}: "
                       f"{str(exc) or type(exc).__name__}")
            await self._shutdown()
            return
        self._state = f"starting on {self._shown()}"
        self._spawn(self._register())
        self._spawn(self._sweep())

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown()
        if not self._state.startswith(("off", "failed")):
            self._state = "off (closed)"

    def _shutdown(self) -> asyncio.Future[None]:
        """Stop browsing, say goodbye and close zeroconf; one task, however often asked.

        Shielded: a caller cancelled meanwhile does not leave zeroconf half closed.
        """
        if self._teardown is None:
            self._teardown = asyncio.get_running_loop().create_task(self._close_zeroconf())
        return asyncio.shield(self._teardown)

    async def _close_zeroconf(self) -> None:
        zc, browser = self._zc, self._browser
        self._zc = self._browser = None
        if zc is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if browser is not None:
                    await browser.async_cancel()
                if self._registered and self._info is not None:
                    self._registered = False
                    goodbyes = await zc.async_unregister_service(self._info)
                    await goodbyes
                await zc.async_close()
        except Exception as exc:
            log.warning("mDNS: closing: %s", str(exc) or type(exc).__name__)

    def _fail(self, reason: str) -> None:
        self._state = f"failed: {reason}"
        log.warning("mDNS: failed: %s; the node runs without LAN discovery", reason)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self) -> None:
        assert self._zc is not None and self._info is not None and self._plan is not None
        try:
            announced = await self._zc.async_register_service(self._info, allow_name_change=True)
            self._registered = True
            self._state = "advertising"
            log.info("mDNS: advertising %s on %s (%s)", self._info.name, self._shown(),
                     short_did(self.did))
            await announced
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(f"cannot advertise: {str(exc) or type(exc).__name__}")
            await self._shutdown()

    # --- browsing --------------------------------------------------------------------

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name == self.name or (self._info is not None and name == self._info.name):
            return
        if state_change is ServiceStateChange.Removed:
            self._known.discard(name)
            if self._records.pop(name, None) is not None:
                self._recount()
                log.debug("mDNS: %s went away", name)
            return
        if name not in self._known:
            if len(self._known) >= MAX_RECORDS:
                log.debug("mDNS: ignoring %s: already tracking %d services", name, MAX_RECORDS)
                return
            self._known.add(name)
        self._resolve_soon(name)

    def _resolve_soon(self, name: str) -> None:
        if name in self._resolving or self._zc is None:
            return
        if len(self._resolving) >= MAX_RESOLVING:
            log.debug("mDNS: not resolving %s now: %d resolutions in flight", name,
                      MAX_RESOLVING)
            return
        self._resolving.add(name)
        self._spawn(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            zc = self._zc
            if zc is None:
                return
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                log.debug("mDNS: %s did not resolve within %d ms", name, RESOLVE_TIMEOUT_MS)
                return
            self._handle(name, info)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a record must never take the node down
            log.debug("mDNS: ignoring %s: %s", name, str(exc) or type(exc).__name__)
        finally:
            self._resolving.discard(name)

    def _handle(self, name: str, info: AsyncServiceInfo) -> None:
        assert self._plan is not None
        if name not in self._known:
            return  # removed while resolving
        version = IPVersion.All if self._plan.ipv6 else IPVersion.V4Only
        try:
            record = parse_record(info.properties, info.port, info.parsed_addresses(version),
                                  own_did=self.did, ipv6=self._plan.ipv6)
        except RecordError as exc:
            if self._records.pop(name, None) is not None:
                self._recount()
            log.debug("mDNS: ignoring %s: %s", name, exc)
            return
        if self._records.get(name) != record:
            self._records[name] = record
            self._recount()
        self._offer(name, record)

    def _offer(self, name: str, record: Record) -> None:
        if record.did in self._connected():
            return
        if not self._limiter.allow(name, asyncio.get_running_loop().time()):
            log.debug("mDNS: not offering %s now (rate limit)", name)
            return
        log.info("mDNS: found %s at %s", short_did(record.did),
                 ", ".join(format_address(a) for a in record.addresses))
        for address in record.addresses:
            self.node.discovered(record.did, address, "mdns")

    def _connected(self) -> set[str]:
        return {p.did for p in self.node.peers()}

    def _recount(self) -> None:
        self.seen = len({r.did for r in self._records.values()})

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(REOFFER_INTERVAL)
            connected = self._connected()
            for name in list(self._known):
                record = self._records.get(name)
                if record is None or record.did not in connected:
                    self._resolve_soon(name)  # also retries those that did not resolve
