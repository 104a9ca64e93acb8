"""The node home: identity file, permissions, settings file, listen addresses."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from p2pchat.core import LinkConfig, NodeConfig
from p2pchat.errors import ConfigError, IdentityError, LocalError
from p2pchat.home import (
    DEFAULT_LISTEN,
    HOME_ENV,
    MAX_IDENTITY_FILE_SIZE,
    NodeHome,
    Settings,
    parse_listen,
    parse_settings,
    resolve_home,
    validate_name,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> NodeHome:
    return NodeHome(tmp_path / "nested" / "home")


def identity_doc(home: NodeHome) -> dict[str, object]:
    return json.loads(home.identity_path.read_text())  # type: ignore[no-any-return]


def write_identity(home: NodeHome, content: bytes | str) -> None:
    data = content.encode() if isinstance(content, str) else content
    home.identity_path.write_bytes(data)
    home.identity_path.chmod(0o600)


# --- identity ---------------------------------------------------------------------------


def test_create_identity_writes_a_private_file_in_a_private_dir(home: NodeHome) -> None:
    home.create_identity("alice")
    assert 0o700 == mode(home.path)
    assert 0o600 == mode(home.identity_path)
    assert ["identity.json"] == sorted(os.listdir(home.path)), "no temporary file left behind"


def test_create_identity_records_the_did(home: NodeHome) -> None:
    identity = home.create_identity("alice")
    doc = identity_doc(home)
    assert identity.did == doc["did"]
    assert "alice" == doc["name"]
    assert 1 == doc["format"]


def test_load_round_trips(home: NodeHome) -> None:
    created = home.create_identity("  alice  ")
    loaded = home.load_identity()
    assert created.did == loaded.did
    assert created.secret_key.seed == loaded.secret_key.seed
    assert created.device_salt == loaded.device_salt
    assert "alice" == loaded.name


def test_each_identity_is_fresh(tmp_path: Path) -> None:
    a = NodeHome(tmp_path / "a").create_identity()
    b = NodeHome(tmp_path / "b").create_identity()
    assert a.did != b.did
    assert a.device_salt != b.device_salt


def test_existing_identity_is_not_overwritten(home: NodeHome) -> None:
    first = home.create_identity("alice")
    before = home.identity_path.read_bytes()
    with pytest.raises(LocalError) as info:
        home.create_identity("bob")
    assert first.did in str(info.value)
    assert str(home.path) in str(info.value)
    assert before == home.identity_path.read_bytes()


def test_load_or_create(home: NodeHome) -> None:
    created, was_new = home.load_or_create_identity()
    loaded, again_new = home.load_or_create_identity()
    assert (True, False) == (was_new, again_new)
    assert created.did == loaded.did


def test_missing_identity_says_how_to_create_one(home: NodeHome) -> None:
    home.ensure()
    with pytest.raises(IdentityError, match="p2pchat init"):
        home.load_identity()


@pytest.mark.parametrize("file_mode", [0o640, 0o644, 0o604, 0o660, 0o606, 0o700])
def test_key_file_readable_by_others_is_refused(home: NodeHome, file_mode: int) -> None:
    home.create_identity()
    home.identity_path.chmod(file_mode)
    if file_mode & 0o077 == 0:
        home.load_identity()  # owner-only modes are fine
        return
    with pytest.raises(IdentityError) as info:
        home.load_identity()
    assert f"chmod 600 {home.identity_path}" in str(info.value)
    assert f"{file_mode:04o}" in str(info.value)


def test_key_file_symlink_is_refused(home: NodeHome, tmp_path: Path) -> None:
    home.create_identity()
    real = tmp_path / "real.json"
    home.identity_path.rename(real)
    home.identity_path.symlink_to(real)
    with pytest.raises(IdentityError, match="not a regular file"):
        home.load_identity()


def test_directory_in_place_of_the_key_file_is_refused(home: NodeHome) -> None:
    home.ensure()
    home.identity_path.mkdir()
    with pytest.raises(IdentityError, match="not a regular file"):
        home.load_identity()


def test_oversized_key_file_is_refused(home: NodeHome) -> None:
    home.ensure()
    write_identity(home, b" " * (MAX_IDENTITY_FILE_SIZE + 1))
    with pytest.raises(IdentityError, match="too large"):
        home.load_identity()


def _valid_doc() -> dict[str, object]:
    return {
        "format": 1,
        "did": "did:key:z6MkhvCh5eNBJAZsbT2STjdLFUubyBrVaFrBBXoHgZjzM1Vq",  # fixed below
        "name": "",
        "seed": "11" * 32,
        "device_salt": "22" * 16,
    }


CORRUPT: dict[str, bytes | str] = {
    "not json": "this is not json",
    "binary": b"\x80\x81\xfe\xff",
    "empty": "",
    "a list": "[]",
    "null": "null",
    "a number": "5",
    "no format": json.dumps({k: v for k, v in _valid_doc().items() if k != "format"}),
    "future format": json.dumps({**_valid_doc(), "format": 2}),
    "no seed": json.dumps({k: v for k, v in _valid_doc().items() if k != "seed"}),
    "seed not hex": json.dumps({**_valid_doc(), "seed": "zz" * 32}),
    "seed too short": json.dumps({**_valid_doc(), "seed": "11" * 31}),
    "seed a number": json.dumps({**_valid_doc(), "seed": 11}),
    "salt too short": json.dumps({**_valid_doc(), "device_salt": "22" * 15}),
    "salt missing": json.dumps({k: v for k, v in _valid_doc().items() if k != "device_salt"}),
    "name not text": json.dumps({**_valid_doc(), "name": 5}),
    "name too long": json.dumps({**_valid_doc(), "name": "n" * 65}),
    "name with control": json.dumps({**_valid_doc(), "name": "a\x07b"}),
    "did of another key": json.dumps(_valid_doc()),
    "deeply nested": "[" * 2000 + "]" * 2000,
}


@pytest.mark.parametrize("content", list(CORRUPT.values()), ids=list(CORRUPT))
def test_corrupt_key_file_is_an_identity_error(home: NodeHome, content: bytes | str) -> None:
    home.ensure()
    write_identity(home, content)
    with pytest.raises(IdentityError) as info:
        home.load_identity()
    assert str(home.identity_path) in str(info.value)


def test_tampered_did_is_detected(home: NodeHome) -> None:
    home.create_identity()
    other = NodeHome(home.path.parent / "other")
    other_did = other.create_identity().did
    doc = identity_doc(home)
    doc["did"] = other_did
    write_identity(home, json.dumps(doc))
    with pytest.raises(IdentityError, match="does not match the key"):
        home.load_identity()


@pytest.mark.parametrize(("raw", "clean"), [("alice", "alice"), ("  bob ", "bob"), ("", ""),
                                            ("n" * 64, "n" * 64), ("émile 🎉", "émile 🎉")])
def test_validate_name_accepts(raw: str, clean: str) -> None:
    assert clean == validate_name(raw)


@pytest.mark.parametrize("name", ["n" * 65, "a\nb", "tab\there", "bell\x07", "del\x7f"])
def test_validate_name_refuses(name: str, home: NodeHome) -> None:
    with pytest.raises(LocalError):
        validate_name(name)
    with pytest.raises(LocalError):
        home.create_identity(name)
    assert not home.identity_path.exists()


# --- home resolution and paths ----------------------------------------------------------


def test_resolve_home_prefers_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert tmp_path / "opt" == resolve_home(tmp_path / "opt")


def test_resolve_home_uses_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert tmp_path / "env" == resolve_home(None)


def test_resolve_home_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tmp_path / "rel" == resolve_home("rel")


def test_resolve_home_falls_back_to_the_platform_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert "p2pchat" == resolve_home(None).name


def test_home_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LocalError):
        NodeHome(tmp_path / "file").ensure()


def test_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="too long for a Unix socket"):
        NodeHome(tmp_path / ("d" * 120)).check_socket_path()


def test_short_socket_path_is_fine(tmp_path: Path) -> None:
    NodeHome(Path("/tmp/h")).check_socket_path()


# --- settings file ------------------------------------------------------------------------


def test_empty_settings_are_the_defaults() -> None:
    assert Settings() == parse_settings("")
    assert DEFAULT_LISTEN == Settings().listen


def test_full_settings_file() -> None:
    text = """
[node]
listen = "[::1]:9000"
max_links = 10
dial_timeout = 3
reconnect_base = 0.25
reconnect_max = 8.0
max_wanted_peers = 5

[link]
handshake_timeout = 4.5
keepalive_interval = 2
idle_timeout = 7
max_frame_size = 65536
max_frames_per_second = 100.0
frame_burst = 200
"""
    expected = Settings(
        listen=("::1", 9000),
        node=NodeConfig(
            link=LinkConfig(handshake_timeout=4.5, keepalive_interval=2, idle_timeout=7,
                            max_frame_size=65536, max_frames_per_second=100.0, frame_burst=200),
            max_links=10, dial_timeout=3, reconnect_base=0.25, reconnect_max=8.0,
            max_wanted_peers=5,
        ),
    )
    assert expected == parse_settings(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[nodes]\nmax_links = 3\n", "unknown section(s) nodes"),
        ("[node]\nmax_link = 3\n", "unknown key(s) in [node]: max_link"),
        ("[link]\nidle = 3\n", "unknown key(s) in [link]: idle"),
        ("[node]\nmax_links = 0\n", "max_links must be a positive integer"),
        ("[node]\nmax_links = true\n", "max_links must be a positive integer"),
        ("[link]\nhandshake_timeout = -1\n", "link.handshake_timeout must be a positive number"),
        ("[link]\nhandshake_timeout = \"10\"\n", "link.handshake_timeout must be a positive"),
        ("[link]\nkeepalive_interval = 30\n", "must exceed link.keepalive_interval"),
        ("[link]\nmax_frame_size = 10\n", "link.max_frame_size"),
        ("[node]\nreconnect_base = 60\n", "reconnect_max must be at least reconnect_base"),
        ("[node]\nlisten = 7445\n", "node.listen must be a string"),
        ("[node]\nlisten = \"nowhere\"\n", "node.listen: invalid address"),
        ("[node\n", ""),  # TOML syntax error
        ("max_links = 3\n", "unknown section(s) max_links"),
    ],
)
def test_bad_settings_are_refused_naming_the_file(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "/etc/p2pchat/config.toml")
    message = str(info.value)
    assert message.startswith("/etc/p2pchat/config.toml: ")
    assert needle in message


@pytest.mark.parametrize("text", ["node = 5\n", "node = \"x\"\n", "link = [1, 2]\n",
                                  "link = true\n"])
def test_section_that_is_not_a_table_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "config.toml")
    assert "config.toml: " in str(info.value)
    assert "must be a table" in str(info.value)


def test_load_settings_reads_the_home_file(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    assert Settings() == home.load_settings()
    home.config_path.write_text("[node]\nlisten = \"0.0.0.0:1234\"\n")
    assert ("0.0.0.0", 1234) == home.load_settings().listen


def test_load_settings_errors_name_the_file(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    home.config_path.write_text("[node]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=str(home.config_path)):
        home.load_settings()


def test_load_settings_refuses_non_utf8(tmp_path: Path) -> None:
    home = NodeHome(tmp_path)
    home.config_path.write_bytes(b"[node]\nlisten = \"\xff\"\n")
    with pytest.raises(ConfigError, match="cannot read"):
        home.load_settings()


# --- listen addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7445", ("127.0.0.1", 7445)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("example.org:443", ("example.org", 443)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::]:7445", ("::", 7445)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("  127.0.0.1:80\n", ("127.0.0.1", 80)),
    ],
)
def test_parse_listen_accepts(text: str, expected: tuple[str, int]) -> None:
    assert expected == parse_listen(text)


@pytest.mark.parametrize(
    "text",
    [
        "", "   ", "nowhere", "7445", ":7445", "host:", "host:port", "host:-1", "host:65536",
        "host:99999999999999999999", "host:+80", "host:8 0", "host:0x50", "[::1]", "[::1]9000",
        "[::1:9000", "[]:80", "[::1]:", "[::1]:abc",
    ],
)
def test_parse_listen_rejects_junk(text: str) -> None:
    with pytest.raises(LocalError, match="invalid address"):
        parse_listen(text)


# superscript two, Arabic-Indic three, fullwidth "80"
@pytest.mark.parametrize("text", ["host:\u00b2", "host:\u0663", "host:\uff18\uff10"])
def test_parse_listen_rejects_non_ascii_digits(text: str) -> None:
    with pytest.raises(LocalError, match="invalid address"):
        parse_listen(text)


@pytest.mark.parametrize("text", ["::1", "fe80::1", "::1:7445", "2001:db8::1:443"])
def test_parse_listen_rejects_ipv6_without_brackets(text: str) -> None:
    # Without brackets the port cannot be told apart from the address:
    # "fe80::1" must not become host "fe80:" port 1.
    with pytest.raises(LocalError, match="invalid address"):
        parse_listen(text)
