"""Bootstrap server configuration: every limit is a named constant and a field here.

``ServiceConfig`` is what the sans-IO service enforces (quotas, rates, retention);
``ServerConfig`` adds what only the runtime needs (listen address, database,
metrics endpoint, link and connection limits). Both validate themselves in
``__post_init__``, so a bad ``bootstrap.toml`` stops the server at start with a
message naming the key, never later.

``bootstrap.toml`` in the server home overrides the defaults (command-line options
override ``[server]`` in turn)::

    [server]
    listen = "0.0.0.0:7446"
    db = "server.db"              # relative to the home
    metrics = "127.0.0.1:9446"    # off unless set
    max_connections = 1024
    max_connections_per_ip = 16

    [limits]      # ServiceConfig fields, see below
    [retention]   # retention_* fields without the prefix: max_age_days, topic_bytes, ...
    [link]        # p2pchat LinkConfig fields (timeouts, frame limits)

Sizes are bytes, rates are per second, times are seconds unless the key says days.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from p2pchat.core.config import LinkConfig, NodeConfig
from p2pchat.errors import ConfigError, LocalError
from p2pchat.home import parse_listen
from p2pchat.wire.frames import MAX_BATCH_ITEMS, MAX_ENVELOPE_BYTES

CONFIG_FILE = "bootstrap.toml"
DB_FILE = "server.db"
DEFAULT_LISTEN = ("127.0.0.1", 7446)
MiB = 1024 * 1024

# --- quotas ---------------------------------------------------------------------------
#: Topics holding envelopes at once; a new topic beyond this is refused (too-many-topics).
MAX_TOPICS = 10_000
#: Hard cap on one topic's stored envelope bytes / envelopes (topic-full). Retention keeps
#: topics below RETENTION_TOPIC_* (smaller), so this is only hit by uploads outrunning it.
TOPIC_MAX_BYTES = 128 * MiB
TOPIC_MAX_ENVELOPES = 250_000
#: Stored envelope bytes one uploader identity may hold across all topics (quota).
IDENTITY_MAX_BYTES = 64 * MiB
#: Stored envelope bytes all identities uploading from one address block may hold together
#: (address-quota): fresh identities are free, addresses are not. Four identity quotas, so a
#: community behind one NAT fits several full topics (docs/operations.md §7.5).
ADDRESS_MAX_BYTES = 256 * MiB
#: The address block: an IPv4 /24, an IPv6 /56 (a typical delegation to one site). An
#: IPv4-mapped IPv6 address counts as IPv4. Shorter prefixes than the minimums would put
#: unrelated networks (a whole provider) into one budget.
ADDRESS_PREFIX_V4 = 24
ADDRESS_PREFIX_V6 = 56
MIN_ADDRESS_PREFIX_V4 = 8
MIN_ADDRESS_PREFIX_V6 = 16
#: Networks (CIDR) exempt from ADDRESS_MAX_BYTES (the identity quota still applies): none by
#: default, loopback included. At most this many (each link open checks them all).
MAX_ADDRESS_EXEMPT = 256
# --- rates (token buckets: sustained rate, burst) -------------------------------------------
#: Envelopes uploaded per second per identity, and the burst (a node's first upload of a
#: channel's backlog). The burst must hold at least one full upload frame.
UPLOADS_PER_SECOND_PER_IDENTITY = 200.0
UPLOAD_BURST_PER_IDENTITY = 4096
#: The same per client IP address (IPv6: per /64), shared by every identity behind it.
UPLOADS_PER_SECOND_PER_IP = 400.0
UPLOAD_BURST_PER_IP = 8192
#: announce, lookup and watch requests per second per identity, and the burst (a node
#: sends all three for each of its channels when it connects).
REQUESTS_PER_SECOND = 20.0
REQUEST_BURST = 600
# --- rendezvous -------------------------------------------------------------------------
#: Peer records per topic / in total; announces beyond are refused (too-many-records).
MAX_RECORDS_PER_TOPIC = 256
MAX_RECORDS = 50_000
#: Longest a stored peer record lives here, whatever expiry it carries (seconds).
RECORD_MAX_TTL = 3600.0
# --- per link ---------------------------------------------------------------------------
#: Topics one link may watch at once (too-many-watches).
MAX_WATCHES_PER_LINK = 256
#: Envelope bytes per ``stored`` frame (at least one envelope; the frame limit is 1 MiB).
STORED_FRAME_BYTES = 512 * 1024
# --- retention ----------------------------------------------------------------------------
#: Envelopes older than this are deleted (days; 0 keeps them until size retention).
RETENTION_MAX_AGE_DAYS = 30.0
#: A topic above either size is trimmed, oldest first, down to it.
RETENTION_TOPIC_BYTES = 64 * MiB
RETENTION_TOPIC_ENVELOPES = 200_000
#: Seconds between retention sweeps (a topic growing past its size is trimmed at once).
RETENTION_INTERVAL = 300.0
# --- connections ----------------------------------------------------------------------------
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_IP = 16


def _check_int(name: str, value: object, lo: int = 1) -> None:
    if type(value) is not int or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")


def _check_range(name: str, value: object, lo: int, hi: int) -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer from {lo} to {hi}, got {value!r}")


def _exempt_networks(value: object) -> tuple[str, ...]:
    """Validate ``address_exempt`` (a list of CIDR strings); returns it normalised."""
    if not isinstance(value, (list, tuple)) or len(value) > MAX_ADDRESS_EXEMPT:
        raise ConfigError(f"address_exempt must be a list of at most {MAX_ADDRESS_EXEMPT} "
                          f"networks such as \"192.0.2.0/24\", got {value!r}")
    out = []
    for entry in value:
        if not isinstance(entry, str):
            raise ConfigError(f"address_exempt: {entry!r} is not a string")
        try:
            net = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise ConfigError(f"address_exempt: {exc}") from None
        if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(
                ipaddress.IPv6Network("::ffff:0:0/96")):
            raise ConfigError(f"address_exempt: write the IPv4-mapped network {entry!r} as IPv4 "
                              "(mapped addresses count as IPv4)")
        out.append(str(net))
    return tuple(out)


def _check_number(name: str, value: object, lo: float = 0.0, strict: bool = True) -> None:
    if type(value) not in (int, float) or (value <= lo if strict else value < lo):  # type: ignore[operator]
        raise ConfigError(f"{name} must be a number {'>' if strict else '>='} {lo:g}, "
                          f"got {value!r}")


@dataclass(frozen=True)
class ServiceConfig:
    """What the sans-IO service enforces. Field names are the ``bootstrap.toml`` keys
    (``[limits]``; ``retention_*`` ones go in ``[retention]`` without the prefix)."""

    max_topics: int = MAX_TOPICS
    topic_max_bytes: int = TOPIC_MAX_BYTES
    topic_max_envelopes: int = TOPIC_MAX_ENVELOPES
    identity_max_bytes: int = IDENTITY_MAX_BYTES
    address_max_bytes: int = ADDRESS_MAX_BYTES
    address_prefix_v4: int = ADDRESS_PREFIX_V4
    address_prefix_v6: int = ADDRESS_PREFIX_V6
    address_exempt: tuple[str, ...] = ()
    uploads_per_second_per_identity: float = UPLOADS_PER_SECOND_PER_IDENTITY
    upload_burst_per_identity: int = UPLOAD_BURST_PER_IDENTITY
    uploads_per_second_per_ip: float = UPLOADS_PER_SECOND_PER_IP
    upload_burst_per_ip: int = UPLOAD_BURST_PER_IP
    requests_per_second: float = REQUESTS_PER_SECOND
    request_burst: int = REQUEST_BURST
    max_records_per_topic: int = MAX_RECORDS_PER_TOPIC
    max_records: int = MAX_RECORDS
    record_max_ttl: float = RECORD_MAX_TTL
    max_watches_per_link: int = MAX_WATCHES_PER_LINK
    stored_frame_bytes: int = STORED_FRAME_BYTES
    retention_max_age_days: float = RETENTION_MAX_AGE_DAYS
    retention_topic_bytes: int = RETENTION_TOPIC_BYTES
    retention_topic_envelopes: int = RETENTION_TOPIC_ENVELOPES
    retention_interval: float = RETENTION_INTERVAL

    def __post_init__(self) -> None:
        for name in ("max_topics", "topic_max_bytes", "topic_max_envelopes",
                     "identity_max_bytes", "address_max_bytes", "max_records_per_topic",
                     "max_records", "max_watches_per_link", "retention_topic_bytes",
                     "retention_topic_envelopes"):
            _check_int(name, getattr(self, name))
        for name in ("uploads_per_second_per_identity", "uploads_per_second_per_ip",
                     "requests_per_second", "record_max_ttl", "retention_interval"):
            _check_number(name, getattr(self, name))
        _check_number("retention_max_age_days", self.retention_max_age_days, strict=False)
        for name in ("upload_burst_per_identity", "upload_burst_per_ip"):
            _check_int(name, getattr(self, name), MAX_BATCH_ITEMS)
        _check_int("request_burst", self.request_burst)
        _check_int("stored_frame_bytes", self.stored_frame_bytes, 1024)
        if self.stored_frame_bytes > 768 * 1024:
            raise ConfigError("stored_frame_bytes must be at most 786432 (frames are <= 1 MiB)")
        for name in ("topic_max_bytes", "address_max_bytes"):
            if getattr(self, name) < MAX_ENVELOPE_BYTES:
                raise ConfigError(f"{name} must be at least one envelope "
                                  f"({MAX_ENVELOPE_BYTES})")
        _check_range("address_prefix_v4", self.address_prefix_v4, MIN_ADDRESS_PREFIX_V4, 32)
        _check_range("address_prefix_v6", self.address_prefix_v6, MIN_ADDRESS_PREFIX_V6, 128)
        object.__setattr__(self, "address_exempt", _exempt_networks(self.address_exempt))
        if self.retention_topic_bytes > self.topic_max_bytes:
            raise ConfigError("retention topic_bytes must not exceed limits topic_max_bytes")
        if self.retention_topic_envelopes > self.topic_max_envelopes:
            raise ConfigError("retention topic_envelopes must not exceed limits "
                              "topic_max_envelopes")

    @property
    def retention_max_age_ms(self) -> int:
        return int(self.retention_max_age_days * 86_400_000)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``bootstrap.toml`` sets; ``None`` paths and addresses mean the default."""

    listen: tuple[str, int] = DEFAULT_LISTEN
    db: Path | None = None
    metrics: tuple[str, int] | None = None
    max_connections: int = MAX_CONNECTIONS
    max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP
    link: LinkConfig = field(default_factory=LinkConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)

    def __post_init__(self) -> None:
        _check_int("max_connections", self.max_connections)
        _check_int("max_connections_per_ip", self.max_connections_per_ip)

    @property
    def node(self) -> NodeConfig:
        return NodeConfig(link=self.link, max_links=self.max_connections)


_SERVER_KEYS = {"listen", "db", "metrics", "max_connections", "max_connections_per_ip"}
_LIMIT_KEYS = {f.name for f in fields(ServiceConfig) if not f.name.startswith("retention_")}
_RETENTION_KEYS = {f.name.removeprefix("retention_") for f in fields(ServiceConfig)
                   if f.name.startswith("retention_")}
_LINK_KEYS = {f.name for f in fields(LinkConfig)}


def _address(origin: str, key: str, value: object) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigError(f"{origin}: {key} must be a string HOST:PORT")
    try:
        return parse_listen(value)
    except LocalError as exc:
        raise ConfigError(f"{origin}: {key}: {exc}") from exc


def parse_config(text: str, origin: str = CONFIG_FILE, home: Path | None = None) -> ServerConfig:
    """Parse ``bootstrap.toml``; errors name the file and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc
    sections = {"server": _SERVER_KEYS, "limits": _LIMIT_KEYS, "retention": _RETENTION_KEYS,
                "link": _LINK_KEYS}
    unknown = set(raw) - set(sections)
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s) {', '.join(sorted(unknown))}")
    tables: dict[str, dict[str, Any]] = {}
    for name, keys in sections.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
        bad = set(table) - keys
        if bad:
            raise ConfigError(f"{origin}: unknown key(s) in [{name}]: {', '.join(sorted(bad))}")
        tables[name] = dict(table)
    server = tables["server"]
    kwargs: dict[str, Any] = {}
    if "listen" in server:
        kwargs["listen"] = _address(origin, "server.listen", server.pop("listen"))
    if "metrics" in server:
        kwargs["metrics"] = _address(origin, "server.metrics", server.pop("metrics"))
    if "db" in server:
        db = server.pop("db")
        if not isinstance(db, str) or not db:
            raise ConfigError(f"{origin}: server.db must be a path string")
        path = Path(db).expanduser()
        kwargs["db"] = path if path.is_absolute() or home is None else home / path
    try:
        service = ServiceConfig(**tables["limits"],
                                **{f"retention_{k}": v for k, v in tables["retention"].items()})
        link = LinkConfig(**tables["link"])
        return ServerConfig(link=link, service=service, **kwargs, **server)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc


def load_config(home: Path) -> ServerConfig:
    path = home / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServerConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return parse_config(text, str(path), home)
