"""Channels across real ``p2pchat run`` processes (acceptance, issue 3)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from p2pchat.channel.invite import parse_channel_id
from p2pchat.home import DB_FILE
from tests.integration.channelkit import (
    history,
    invite_of,
    join,
    shared_channel,
    synced,
    wait_until,
)
from tests.integration.nodeproc import NodeProcess, free_udp_port, patience

pytestmark = pytest.mark.integration


class Burst:
    """``p2pchat send CHANNEL --stdin`` in a child process; collects acknowledged ids."""

    def __init__(self, node: NodeProcess, channel: str, texts: list[str]) -> None:
        self.acked: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel,
             "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._writer = threading.Thread(target=self._write, args=(texts,), daemon=True)
        self._writer.start()

    def _write(self, texts: list[str]) -> None:
        assert self.proc.stdin is not None
        try:
            for text in texts:
                self.proc.stdin.write(text + "\n")
                self.proc.stdin.flush()
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the node was killed under us: that is the point of some tests

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.acked.append(line.strip())
                self._cond.notify_all()

    def wait_acked(self, n: int, timeout: float) -> list[str]:
        deadline = time.monotonic() + patience(timeout)
        with self._cond:
            while len(self.acked) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and len(self.acked) < n
                                      and not self._reader.is_alive()):
                    raise AssertionError(f"only {len(self.acked)} of {n} messages acknowledged")
                self._cond.wait(min(remaining, 1.0))
            return list(self.acked)

    def finish(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        self._writer.join(timeout)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rc


def test_line_topology_converges(spawn: Callable[..., NodeProcess]) -> None:
    """A-B-C (A and C never connect): 1,000 posts each from A and C, interleaved."""
    a = spawn("A")
    b = spawn("B")
    c = spawn("C")
    channel, _ = shared_channel(a, b, "line")
    join(c, invite_of(b, channel))  # B's invite names only B
    wait_until(lambda: synced(c, channel), 10, "C to receive the channel")

    n = 1000
    start = time.monotonic()
    burst_a = Burst(a, channel, [f"a{i}" for i in range(n)])
    burst_c = Burst(c, channel, [f"c{i}" for i in range(n)])
    assert 0 == burst_a.finish(), burst_a.stderr
    assert 0 == burst_c.finish(), burst_c.stderr

    def identical() -> list[dict[str, Any]] | None:
        ha, hb, hc = history(a, channel), history(b, channel), history(c, channel)
        return ha if len(ha) == 2 * n and ha == hb == hc else None

    final = wait_until(identical, 30, "identical histories on A, B and C")
    elapsed = time.monotonic() - start
    assert {f"a{i}" for i in range(n)} | {f"c{i}" for i in range(n)} == {m["text"] for m in final}
    # A and C never linked: each sees only B
    peers_a = json.loads(a.cli("peers", "--json").stdout)
    assert [b.did] == [p["did"] for p in peers_a]
    peers_c = json.loads(c.cli("peers", "--json").stdout)
    assert [b.did] == [p["did"] for p in peers_c]
    print(f"line topology: 2x{n} messages converged {elapsed:.1f} s after the bursts started")


def test_offline_merge(spawn: Callable[..., NodeProcess]) -> None:
    port_a = free_udp_port()
    a = spawn("A", port_a)
    b = spawn("B")
    channel, _ = shared_channel(a, b, "merge")
    assert 0 == b.stop()

    assert 0 == Burst(a, channel, [f"a{i}" for i in range(500)]).finish()
    assert 0 == a.stop()  # A goes offline too, so B restarts with no peer to reach

    b2 = spawn("B")
    loaded = b2.wait_log(f"loaded channel {channel} (#merge): snapshot covers", 5)
    # genesis, the first epoch's bundle, A's prekey, B's join (with its prekey) and A's
    # share of the keys with B: all from the snapshot written at B's stop
    assert loaded.endswith("snapshot covers 5 of 5 envelopes, 0 replayed"), loaded
    burst = Burst(b2, channel, [f"b{i}" for i in range(500)])
    assert 0 == burst.finish()
    own = history(b2, channel)
    assert [f"b{i}" for i in range(500)] == [m["text"] for m in own]  # visible at once

    start = time.monotonic()
    a2 = spawn("A", port_a)  # back on its address: the peers find each other again

    def merged() -> list[dict[str, Any]] | None:
        ha, hb = history(a2, channel), history(b2, channel)
        return ha if len(ha) == 1000 and ha == hb else None

    final = wait_until(merged, 10, "both sides to show the same 1,000 messages")
    print(f"offline merge: converged {time.monotonic() - start:.1f} s after A came back")
    # A's messages were all written before B's: causal-then-time order keeps them first
    assert [f"a{i}" for i in range(500)] + [f"b{i}" for i in range(500)] == \
        [m["text"] for m in final]


def test_sigkill_mid_burst_keeps_every_acknowledged_message(
    spawn: Callable[..., NodeProcess],
) -> None:
    port_a = free_udp_port()
    a = spawn("A", port_a)
    b = spawn("B")
    channel, _ = shared_channel(a, b, "crash")

    burst = Burst(a, channel, [f"m{i}" for i in range(1000)])
    burst.wait_acked(300, 30)
    a.kill()
    burst.finish()
    acked = set(burst.acked)
    assert len(acked) >= 300

    a2 = spawn("A", port_a)
    ids_a = {m["id"] for m in history(a2, channel)}
    assert set() == acked - ids_a, "acknowledged messages lost by the crash"
    wait_until(lambda: acked <= {m["id"] for m in history(b, channel)}, 15,
               "B to receive every acknowledged message")


def test_edit_delete_react_replicate(spawn: Callable[..., NodeProcess]) -> None:
    a = spawn("A")
    b = spawn("B")
    channel, _ = shared_channel(a, b, "ops")
    first = a.cli("send", channel, "frist").stdout.strip()
    second = a.cli("send", channel, "to be deleted").stdout.strip()
    assert 0 == a.cli("edit", channel, first, "first").returncode
    assert 0 == a.cli("delete", channel, second).returncode
    wait_until(lambda: len(history(b, channel)) == 2, 10, "B to see both messages")
    assert 0 == b.cli("react", channel, first, "+1").returncode
    refused = b.cli("edit", channel, first, "mine now")
    assert 1 == refused.returncode and "not a message of this device" in refused.stderr

    def settled() -> list[dict[str, Any]] | None:
        ha, hb = history(a, channel), history(b, channel)
        done = ha == hb and ha[0]["reactions"] == {"+1": [b.did]} and ha[1]["deleted"]
        return ha if done else None

    final = wait_until(settled, 10, "edits, deletes and reactions to replicate")
    assert ("first", True) == (final[0]["text"], final[0]["edited"] is not None)
    assert ("", True) == (final[1]["text"], final[1]["deleted"])


def test_a_pipelined_burst_shares_envelopes_and_arrives_whole(
    spawn: Callable[..., NodeProcess],
) -> None:
    """``send --stdin`` pipelines its requests: the node seals the posts of one event-loop
    turn into one envelope (each answered once it is stored), B gets every post in
    order, and far fewer envelopes than posts were written."""
    a = spawn("A")
    b = spawn("B")
    channel, _ = shared_channel(a, b, "burst")
    texts = [f"burst {i} " + "z" * (i % 200) for i in range(600)]
    burst = Burst(a, channel, texts)
    assert len(set(burst.wait_acked(len(texts), 60))) == len(texts)
    assert 0 == burst.finish()
    wait_until(lambda: [m["text"] for m in history(b, channel)] == texts, 30,
               "B to get the whole burst in order")
    with sqlite3.connect(a.home / DB_FILE) as db:
        envelopes = db.execute("SELECT COUNT(*) FROM envelopes WHERE channel = ?",
                               (parse_channel_id(channel),)).fetchone()[0]
    print(f"{len(texts)} posts in {envelopes} envelopes (with the channel's own)")
    assert envelopes < len(texts) // 2
