"""mDNS discovery between real nodes in two network namespaces joined by a veth pair.

Each test makes its own namespaces (random names, so concurrent runs do not
collide) and deletes them at teardown, after killing the nodes inside. Where
namespaces cannot be created (not root, no CAP_NET_ADMIN, no ``ip``) the
tests are skipped with the reason. The CLI reaches each node over the Unix
socket in its home, which works from the root namespace.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.channelkit import create_channel, history, join, synced, wait_until
from tests.integration.nodeproc import (
    FAST_CONFIG,
    READY,
    NodeProcess,
    _env,
    _Lines,
    cli_json,
)

pytestmark = pytest.mark.integration

PORT = 7445
ADVERTISING = "mDNS: advertising"
#: discovery takes about a second (probe, announce); generous for a loaded 2-core box
FIND_TIMEOUT = 30.0


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)


@dataclass
class Lan:
    """Two namespaces ``a`` and ``b``, one veth end in each, on a /24."""

    suffix: str
    a: str
    b: str
    ip_a: str
    ip_b: str


def _make_lan() -> tuple[Lan | None, list[tuple[str, ...]], str]:
    """Create the namespaces; returns the LAN (or None), how to undo it, and the error."""
    suffix = secrets.token_hex(3)
    subnet = f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(256)}"
    lan = Lan(suffix, f"p2pa{suffix}", f"p2pb{suffix}", f"{subnet}.1", f"{subnet}.2")
    undo: list[tuple[str, ...]] = []
    steps: list[tuple[str, ...]] = [
        ("netns", "add", lan.a),
        ("netns", "add", lan.b),
        ("link", "add", lan.a, "type", "veth", "peer", "name", lan.b),
        ("link", "set", lan.a, "netns", lan.a),
        ("link", "set", lan.b, "netns", lan.b),
    ]
    for ns, ip in ((lan.a, lan.ip_a), (lan.b, lan.ip_b)):
        # the veth end is named after its namespace
        steps += [
            ("-n", ns, "addr", "add", f"{ip}/24", "dev", ns),
            ("-n", ns, "link", "set", "dev", ns, "multicast", "on"),
            ("-n", ns, "link", "set", "dev", "lo", "up"),
            ("-n", ns, "link", "set", "dev", ns, "up"),
        ]
    for step in steps:
        result = _ip(*step)
        if result.returncode != 0:
            return None, undo, f"ip {' '.join(step)}: {result.stderr.strip()}"
        if step[:2] == ("netns", "add"):
            undo.append(("netns", "delete", step[2]))
        elif step[:2] == ("link", "add"):
            # gone with its namespace once moved; deleted by hand if the move failed
            undo.append(("link", "delete", step[2]))
    probe = subprocess.run(["ip", "netns", "exec", lan.a, sys.executable, "-c", "pass"],
                           capture_output=True, text=True, timeout=30, check=False)
    if probe.returncode != 0:
        return None, undo, f"ip netns exec: {probe.stderr.strip()}"
    return lan, undo, ""


@pytest.fixture
def lan() -> Iterator[Lan]:
    if shutil.which("ip") is None:
        pytest.skip("cannot create network namespaces here: no `ip` command")
    made, undo, error = _make_lan()
    try:
        if made is None:
            pytest.skip(f"cannot create network namespaces here: {error}")
        yield made
    finally:
        for step in undo:  # a namespace goes with the veth end inside it
            _ip(*step)


class NsNode(NodeProcess):
    """A ``p2pchat run`` child inside a network namespace, listening on ``host``."""

    def __init__(self, home: Path, netns: str, host: str, port: int = PORT,
                 extra: tuple[str, ...] = ()) -> None:
        super().__init__(home, port, FAST_CONFIG)
        self.netns = netns
        self.host = host
        self.extra = extra

    def start(self, timeout: float = 20.0) -> NsNode:
        # `ip netns exec` execs the command: the pid is the node's, so kill() reaches it
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-m", "p2pchat",
             "--home", str(self.home), "run", "--listen", f"{self.host}:{self.port}",
             "--log-level", "debug", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self.out = _Lines(self.proc.stdout, self._cond)
        self.err = _Lines(self.proc.stderr, self._cond)
        line = self.wait_for(lambda: next((m for ln in self.out.lines if (m := READY.match(ln))),
                                          None), timeout, "ready line")
        self.did, self.address = line.group(1), line.group(2)
        return self

    def logged(self, text: str) -> bool:
        with self._cond:
            return any(text in ln for ln in self.err.lines)


@pytest.fixture
def ns_spawn(short_tmp: Path) -> Iterator[Callable[..., NsNode]]:
    nodes: list[NsNode] = []

    def make(name: str, netns: str, host: str, port: int = PORT,
             extra: tuple[str, ...] = ()) -> NsNode:
        node = NsNode(short_tmp / name, netns, host, port, extra)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.cleanup()


def peers(node: NodeProcess) -> dict[str, dict[str, Any]]:
    return {p["did"]: p for p in cli_json(node.home, "peers")}


def linked_by_mdns(x: NodeProcess, y: NodeProcess) -> bool:
    """``x`` and ``y`` are linked, by a dial that mDNS caused.

    Both sides dial when they see each other; the duplicate link is closed and
    the one dialled by the smaller DID kept, so the survivor shows
    ``found_by: mdns`` on its dialler's side and ``inbound`` on the other.
    """
    px, py = peers(x), peers(y)
    if y.did not in px or x.did not in py:
        return False
    return "mdns" in (px[y.did]["found_by"], py[x.did]["found_by"])


def send(node: NodeProcess, channel: str, text: str) -> None:
    result = node.cli("send", channel, text)
    assert 0 == result.returncode, result.stderr


def texts(node: NodeProcess, channel: str) -> list[str]:
    return [m["text"] for m in history(node, channel)]


def stays_false(predicate: Callable[[], Any], seconds: float) -> bool:
    """Poll ``predicate`` for ``seconds``; True if it never held."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return False
        pause.wait(0.2)
    return not predicate()


def test_nodes_on_a_lan_find_each_other_and_converge(
        lan: Lan, ns_spawn: Callable[..., NsNode]) -> None:
    a = ns_spawn("a", lan.a, lan.ip_a)
    b = ns_spawn("b", lan.b, lan.ip_b)
    channel, _ = create_channel(a, "lan")
    invite = cli_json(a.home, "invite", channel, "--no-peers")["invite"]
    join(b, invite)  # no addresses: b can only find a by mDNS

    wait_until(lambda: linked_by_mdns(b, a), FIND_TIMEOUT, "b and a to find each other")
    assert {lan.ip_a} == {p["address"].rsplit(":", 1)[0] for p in peers(b).values()}
    wait_until(lambda: synced(b, channel), FIND_TIMEOUT, "b to receive the channel")

    send(a, channel, "hello from a")
    send(b, channel, "hello from b")
    wait_until(lambda: 2 == len(texts(a, channel)) == len(texts(b, channel)), FIND_TIMEOUT,
               "both messages on both nodes")
    assert history(a, channel) == history(b, channel)
    assert ["hello from a", "hello from b"] == sorted(texts(b, channel))

    assert a.logged(f"{ADVERTISING} p2pchat-{a.did[-16:]}")
    assert b.logged(f"{ADVERTISING} p2pchat-{b.did[-16:]}")
    status = cli_json(a.home, "doctor")["mdns"]
    assert f"advertising on {lan.ip_a}:{PORT}, 1 peer seen" == status


def test_no_mdns_node_is_neither_seen_nor_seeing(
        lan: Lan, ns_spawn: Callable[..., NsNode]) -> None:
    a = ns_spawn("a", lan.a, lan.ip_a)
    quiet = ns_spawn("quiet", lan.b, lan.ip_b, extra=("--no-mdns",))
    channel, _ = create_channel(a, "lan")
    join(quiet, cli_json(a.home, "invite", channel, "--no-peers")["invite"])
    # control: a node next to `quiet`, started after it, with mDNS on; once a and it
    # have found each other, mDNS demonstrably worked while `quiet` was up
    loud = ns_spawn("loud", lan.b, lan.ip_b, PORT + 1)
    wait_until(lambda: linked_by_mdns(a, loud), FIND_TIMEOUT, "a and the control to link")

    assert "off" == cli_json(quiet.home, "doctor")["mdns"]
    assert not quiet.logged("mDNS:")
    assert stays_false(lambda: peers(quiet) or quiet.did in peers(a), 2.0)
    assert not synced(quiet, channel)
