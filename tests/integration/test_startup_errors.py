"""A node home in a bad state: ``run`` and ``init`` refuse with one clear line (issue 16,
break 8), and write no new identity.

Each case starts from a home written by a real node (a channel with posts, so the
store holds envelopes and prekeys), then breaks one file the way a user or a disk
would: identity.json deleted or swapped for another node's, node.db damaged,
identity.json or config.toml garbage.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.channelkit import create_channel
from tests.integration.nodeproc import FAST_CONFIG, NodeProcess, _env, cli

pytestmark = pytest.mark.integration

#: SQLite's page size for node.db (the default); damage is written in whole pages.
PAGE = 4096


def run_once(home: Path) -> subprocess.CompletedProcess[str]:
    """``p2pchat run`` that is expected to refuse to start (a node that does start is
    stopped and the test fails)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pchat", "--home", str(home), "run",
         "--listen", "127.0.0.1:0", "--no-mdns"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the node started instead of refusing:\n{out}\n{err}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert 1 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 == len(lines), result.stderr
    [line] = lines
    assert line.startswith("p2pchat: "), line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture(scope="module")
def written_home() -> Iterator[tuple[Path, str]]:
    """A home a real node ran in, wrote a channel with posts to, and stopped cleanly
    (made once; each test breaks its own copy)."""
    base = Path(tempfile.mkdtemp(prefix="p2p-"))
    node = NodeProcess(base / "A")
    try:
        node.start()
        channel, _ = create_channel(node, "general")
        posts = "".join(f"message {i} {'x' * 200}\n" for i in range(60))
        sent = subprocess.run(
            [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel,
             "--stdin"], input=posts, capture_output=True, text=True, timeout=60, env=_env(),
            check=False)
        assert 0 == sent.returncode, sent.stderr
        assert 0 == node.stop()
        yield node.home, node.did
    finally:
        node.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def used_home(written_home: tuple[Path, str], short_tmp: Path) -> tuple[Path, str]:
    source, did = written_home
    home = short_tmp / "A"
    home.mkdir(mode=0o700)
    for name in ("identity.json", "node.db", "node.db-wal", "config.toml"):
        if (source / name).exists():
            shutil.copy2(source / name, home / name)
    return home, did


def files(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(home.iterdir())
            if p.is_file() and p.name in ("identity.json", "node.db", "config.toml")}


# --- the key and the store belong together ------------------------------------------------


def test_missing_identity_next_to_a_store_is_refused(used_home: tuple[Path, str]) -> None:
    home, did = used_home
    (home / "identity.json").unlink()
    before = files(home)
    for _ in range(2):  # and again: nothing was written the first time
        line = assert_one_line_error(run_once(home), did, "identity.json", "node.db")
        assert "backup" in line and "move" in line, line
        assert not (home / "identity.json").exists(), "no new identity may be written"
        assert before == files(home)


def test_init_next_to_an_orphaned_store_is_refused(used_home: tuple[Path, str]) -> None:
    home, did = used_home
    (home / "identity.json").unlink()
    assert_one_line_error(cli(home, "init"), did, "identity.json")
    assert not (home / "identity.json").exists()


def test_another_nodes_identity_is_refused(used_home: tuple[Path, str]) -> None:
    home, did = used_home
    other_home = home.parent / "other"
    other_did = cli(other_home, "init").stdout.strip()
    shutil.copy2(other_home / "identity.json", home / "identity.json")
    before = files(home)
    assert_one_line_error(run_once(home), did, other_did)
    assert before == files(home)


def test_the_right_identity_restored_starts_again(
        used_home: tuple[Path, str], spawn: Callable[..., NodeProcess]) -> None:
    home, did = used_home
    key = (home / "identity.json").read_bytes()
    (home / "identity.json").unlink()
    assert_one_line_error(run_once(home), did)
    (home / "identity.json").write_bytes(key)
    os.chmod(home / "identity.json", 0o600)
    node = spawn("A")
    assert did == node.did
    assert 0 == node.stop()


def test_a_store_from_before_the_owner_record_is_claimed_from_its_prekeys(
        used_home: tuple[Path, str]) -> None:
    """A node.db written before the store recorded its owner still names it: the DID
    of its own prekeys."""
    home, did = used_home
    db = sqlite3.connect(home / "node.db")
    db.execute("DROP TABLE owner")
    db.execute("PRAGMA user_version=7")
    db.commit()
    db.close()
    (home / "identity.json").unlink()
    assert_one_line_error(run_once(home), did, "identity.json")
    assert not (home / "identity.json").exists()


# --- a damaged store ------------------------------------------------------------------------


def _overwrite_middle_pages(db: Path) -> None:
    data = bytearray(db.read_bytes())
    pages = len(data) // PAGE
    assert pages >= 8, f"node.db has only {pages} pages"
    for page in range(pages // 2 - 2, pages // 2 + 2):
        data[page * PAGE:(page + 1) * PAGE] = bytes([0xA5]) * PAGE
    db.write_bytes(bytes(data))


def _truncate(db: Path) -> None:
    data = db.read_bytes()
    db.write_bytes(data[:len(data) // 2 + 100])


def _not_sqlite(db: Path) -> None:
    db.write_bytes(b"this is not a database, just some text someone saved as node.db\n" * 100)


@pytest.mark.parametrize("damage", [_overwrite_middle_pages, _truncate, _not_sqlite],
                         ids=["pages-overwritten", "truncated", "not-sqlite"])
def test_a_damaged_store_is_a_clear_error(
        used_home: tuple[Path, str], damage: Callable[[Path], None]) -> None:
    home, _ = used_home
    assert not (home / "node.db-wal").exists() or 0 == (home / "node.db-wal").stat().st_size
    damage(home / "node.db")
    before = files(home)
    line = assert_one_line_error(run_once(home), "node.db", "damaged", "backup", "move")
    assert "sqlite" in line, line
    assert before == files(home), "a damaged store is left as it was"


# --- garbage key and config files -------------------------------------------------------


@pytest.mark.parametrize(("content", "needle"), [
    (b"{not json", "corrupt"),
    (None, "corrupt"),  # valid JSON, but a 31-byte seed
    (b"", "corrupt"),
], ids=["bad-json", "short-key", "empty"])
def test_a_garbage_identity_file_is_a_clear_error(
        used_home: tuple[Path, str], content: bytes | None, needle: str) -> None:
    home, _ = used_home
    path = home / "identity.json"
    if content is None:
        doc = json.loads(path.read_bytes())
        doc["seed"] = doc["seed"][:-2]
        content = json.dumps(doc).encode()
    path.write_bytes(content)
    before = files(home)
    assert_one_line_error(run_once(home), "identity.json", needle)
    assert_one_line_error(cli(home, "init"), "identity.json")
    assert before == files(home)


def test_an_identity_file_readable_by_others_is_a_clear_error(
        used_home: tuple[Path, str]) -> None:
    home, _ = used_home
    os.chmod(home / "identity.json", 0o644)
    assert_one_line_error(run_once(home), "identity.json", "chmod 600")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_identity_file_is_a_clear_error(used_home: tuple[Path, str]) -> None:
    home, _ = used_home
    os.chmod(home / "identity.json", 0o000)
    try:
        assert_one_line_error(run_once(home), "identity.json")
    finally:
        os.chmod(home / "identity.json", 0o600)


@pytest.mark.parametrize("config", [
    "[node\nlisten = 1",
    "[link]\nhandshake_timeout = \"soon\"\n",
    "[node]\nmax_links = 0\n",
    "[node]\nlisten = \"nowhere\"\n",
    "[nodes]\n",
], ids=["bad-toml", "wrong-type", "out-of-range", "bad-address", "unknown-section"])
def test_a_garbage_config_is_a_clear_error(used_home: tuple[Path, str], config: str) -> None:
    home, _ = used_home
    (home / "config.toml").write_text(config)
    assert_one_line_error(run_once(home), "config.toml")
    (home / "config.toml").write_bytes(b"\xff\xfe not utf-8")
    assert_one_line_error(run_once(home), "config.toml")
    (home / "config.toml").write_text(FAST_CONFIG)
