"""The node home: where a node keeps its identity, database, socket and config.

Layout (all files 0600, the directory 0700)::

    identity.json   secret key seed, device salt, display name  (written once, atomically;
                    never next to an existing node.db, which belongs to its own key)
    config.toml     optional settings, validated at start (see docs/operations.md)
    node.db         SQLite store (WAL)
    control.sock    local control API (Unix socket)
    node.lock       held (flock) while a node runs on this home

Resolution order: ``--home``, then ``$P2PCHAT_HOME``, then the platform user-data dir.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from p2pchat.core.config import LinkConfig, NodeConfig
from p2pchat.crypto import generate_secret_key, secret_key_from_seed
from p2pchat.errors import ConfigError, IdentityError, LocalError
from p2pchat.identity import Identity
from p2pchat.identity.identity import DEVICE_SALT_SIZE, MAX_NAME_LENGTH

HOME_ENV = "P2PCHAT_HOME"
IDENTITY_FILE = "identity.json"
CONFIG_FILE = "config.toml"
DB_FILE = "node.db"
SOCKET_FILE = "control.sock"
LOCK_FILE = "node.lock"
IDENTITY_FORMAT = 1
#: Longest path a Unix socket address can hold on Linux (sun_path minus the NUL).
MAX_SOCKET_PATH = 107
DEFAULT_LISTEN = ("127.0.0.1", 7445)
MAX_IDENTITY_FILE_SIZE = 4096


def resolve_home(option: str | os.PathLike[str] | None) -> Path:
    if option:
        return Path(option).expanduser().absolute()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("p2pchat", appauthor=False))


def validate_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise LocalError(f"name is longer than {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        # the same rule the wire applies to hello.name (see wire/frames.py, printable)
        raise LocalError("name must not contain control or format characters")
    return name


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (tmp + fsync + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port), with a clear error."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise LocalError(f"invalid address {value!r}: expected [IPV6]:PORT")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            raise LocalError(f"invalid address {value!r}: expected HOST:PORT")
        if ":" in host:
            raise LocalError(f"invalid address {value!r}: write IPv6 addresses as [IPV6]:PORT")
    if not host:
        raise LocalError(f"invalid address {value!r}: missing host")
    if not (port_s.isascii() and port_s.isdigit()) or not 0 <= int(port_s) <= 65535:
        raise LocalError(f"invalid address {value!r}: port must be 0..65535")
    return host, int(port_s)


@dataclass(frozen=True)
class Settings:
    """Everything ``config.toml`` can set (CLI options override ``listen``)."""

    listen: tuple[str, int] = DEFAULT_LISTEN
    node: NodeConfig = field(default_factory=NodeConfig)
    #: advertise and browse on the LAN (``--no-mdns`` turns it off for one run)
    mdns: bool = True
    #: bootstrap servers (``--bootstrap`` replaces them for one run)
    bootstrap: tuple[tuple[str, int], ...] = ()


_LINK_KEYS = {"handshake_timeout", "keepalive_interval", "idle_timeout", "max_frames_per_second",
              "frame_burst", "max_frame_size"}
_NODE_KEYS = {"max_links", "dial_timeout", "reconnect_base", "reconnect_max", "max_wanted_peers",
              "listen", "mdns", "bootstrap"}
MAX_BOOTSTRAP_SERVERS = 8


def parse_settings(text: str, origin: str = CONFIG_FILE) -> Settings:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc
    unknown = set(raw) - {"node", "link"}
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s) {', '.join(sorted(unknown))}")
    for section in ("node", "link"):
        if not isinstance(raw.get(section, {}), dict):
            raise ConfigError(f"{origin}: [{section}] must be a table")
    node_raw: dict[str, Any] = dict(raw.get("node", {}))
    link_raw: dict[str, Any] = dict(raw.get("link", {}))
    for section, keys, got in (("node", _NODE_KEYS, node_raw), ("link", _LINK_KEYS, link_raw)):
        bad = set(got) - keys
        if bad:
            raise ConfigError(f"{origin}: unknown key(s) in [{section}]: {', '.join(sorted(bad))}")
    listen = DEFAULT_LISTEN
    if "listen" in node_raw:
        value = node_raw.pop("listen")
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: node.listen must be a string HOST:PORT")
        try:
            listen = parse_listen(value)
        except LocalError as exc:
            raise ConfigError(f"{origin}: node.listen: {exc}") from exc
    mdns = node_raw.pop("mdns", True)
    if not isinstance(mdns, bool):
        raise ConfigError(f"{origin}: node.mdns must be true or false")
    servers = node_raw.pop("bootstrap", [])
    if not isinstance(servers, list) or not all(isinstance(v, str) for v in servers) \
            or len(servers) > MAX_BOOTSTRAP_SERVERS:
        raise ConfigError(f"{origin}: node.bootstrap must be a list of at most "
                          f"{MAX_BOOTSTRAP_SERVERS} \"HOST:PORT\" strings")
    try:
        bootstrap = tuple(parse_listen(v) for v in servers)
    except LocalError as exc:
        raise ConfigError(f"{origin}: node.bootstrap: {exc}") from exc
    try:
        link = LinkConfig(**link_raw)
        node = NodeConfig(link=link, **node_raw)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc
    return Settings(listen=listen, node=node, mdns=mdns, bootstrap=bootstrap)


class NodeHome:
    """Paths and files of one node home."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    @property
    def identity_path(self) -> Path:
        return self.path / IDENTITY_FILE

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    @property
    def socket_path(self) -> Path:
        return self.path / SOCKET_FILE

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE


    def ensure(self) -> None:
        """Create the home directory (0700) if needed."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"cannot create node home {self.path}: {exc.strerror}") from exc
        if not self.path.is_dir():
            raise LocalError(f"node home {self.path} is not a directory")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            # it holds the secret key and the control socket: keep other users out
            try:
                self.path.chmod(0o700)
            except OSError as exc:
                raise LocalError(f"node home {self.path} has mode {mode:04o} and cannot be "
                                 f"made private: {exc.strerror}") from exc

    def has_identity(self) -> bool:
        return self.identity_path.exists()

    def create_identity(self, name: str = "") -> Identity:
        name = validate_name(name)
        self.ensure()
        if self.has_identity():
            existing = self.load_identity()
            raise LocalError(f"an identity already exists in {self.path}: {existing.did}")
        self.refuse_orphaned_store()
        identity = Identity(generate_secret_key(), os.urandom(DEVICE_SALT_SIZE), name)
        doc = {
            "format": IDENTITY_FORMAT,
            "did": identity.did,
            "name": identity.name,
            "seed": identity.secret_key.seed.hex(),
            "device_salt": identity.device_salt.hex(),
        }
        write_private_file(self.identity_path, json.dumps(doc, indent=1).encode() + b"\n")
        return identity

    def refuse_orphaned_store(self) -> None:
        """A store without its key: a new identity would not own it (its channels, its
        prekeys), and the store's own key would be lost for good. Refuse, naming it."""
        if not self.db_path.exists():
            return
        from p2pchat.store import store_owner

        owner = store_owner(self.db_path)
        whose = owner if owner is not None else "another identity (its DID is not recorded)"
        raise IdentityError(
            f"{self.identity_path} is missing, but {self.db_path} belongs to {whose}: "
            f"restore identity.json from a backup (the key cannot be made again), "
            f"or move node.db away to start afresh as a new identity")

    def load_identity(self) -> Identity:
        path = self.identity_path
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.refuse_orphaned_store()  # lost, not new: say whose key to restore
            raise IdentityError(
                f"no identity in {self.path}: run 'p2pchat init' (or 'p2pchat run')") from None
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise IdentityError(
                f"{path} is readable by other users (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"run: chmod 600 {path}")
        if st.st_size > MAX_IDENTITY_FILE_SIZE:
            raise IdentityError(f"{path} is too large to be an identity file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != IDENTITY_FORMAT:
                raise ValueError("unknown format")
            seed = bytes.fromhex(doc["seed"])
            salt = bytes.fromhex(doc["device_salt"])
            name = doc.get("name", "")
            if not isinstance(name, str) or len(salt) != DEVICE_SALT_SIZE:
                raise ValueError("bad field")
            identity = Identity(secret_key_from_seed(seed), salt, validate_name(name))
        except (ValueError, KeyError, TypeError, RecursionError, LocalError) as exc:
            raise IdentityError(f"{path} is corrupt or not an identity file ({exc})") from None
        if doc.get("did") != identity.did:
            raise IdentityError(f"{path}: stored DID does not match the key")
        return identity

    def load_or_create_identity(self) -> tuple[Identity, bool]:
        if self.has_identity():
            return self.load_identity(), False
        return self.create_identity(), True

    def load_settings(self) -> Settings:
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Settings()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {self.config_path}: {exc}") from exc
        return parse_settings(text, str(self.config_path))

    def check_socket_path(self) -> None:
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH:
            raise LocalError(
                f"node home path is too long for a Unix socket ({self.socket_path}); "
                f"use a shorter --home")
