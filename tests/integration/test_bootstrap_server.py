"""A real ``p2pchat-bootstrap serve`` process on loopback, driven by a raw QUIC client.

Real envelopes (signed and encrypted by ``ChannelState``) go up with ``upload`` and come
back with ``watch``; the server is killed with SIGKILL and still has them; ``--metrics``
serves counters; limits refuse one client and not another; two real nodes on one address
share its byte budget; and the database files hold none of the plaintexts and no key
material.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from p2pchat.bootstrap_proto import make_record, server_topic
from p2pchat.channel.state import ChannelState
from p2pchat.identity import Identity
from p2pchat.wire import Frame
from p2pchat.wire.frames import (
    Announce,
    Lookup,
    Peers,
    Refused,
    Stored,
    Upload,
    Uploaded,
    Watch,
)
from tests.integration.channelkit import all_stored, create_channel, wait_until
from tests.integration.nodeproc import FAST_CONFIG, NodeProcess, _env, _Lines
from tests.integration.rawclient import RawClient, new_identity, raw_connect

pytestmark = pytest.mark.integration

READY = re.compile(r"^p2pchat-bootstrap (did:key:\S+) listening on (\S+) \(home ")
METRICS = re.compile(r"^p2pchat-bootstrap metrics on (http://\S+/metrics)$")
T = TypeVar("T")


class ServerProcess(NodeProcess):
    """``p2pchat-bootstrap serve`` on 127.0.0.1 with an ephemeral port (and metrics)."""

    metrics_url = ""

    def start(self, timeout: float = 20.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bootstrap.cli import main; main()", "serve",
             "--listen", "127.0.0.1:0", "--home", str(self.home), "--metrics", "127.0.0.1:0",
             "--log-level", "debug"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self.out = _Lines(self.proc.stdout, self._cond)
        self.err = _Lines(self.proc.stderr, self._cond)
        line = self.wait_for(lambda: next((m for ln in self.out.lines if (m := READY.match(ln))),
                                          None), timeout, "server ready line")
        self.did, self.address = line.group(1), line.group(2)
        self.port = int(self.address.rsplit(":", 1)[1])
        self.metrics_url = next(m.group(1) for ln in self.out.lines if (m := METRICS.match(ln)))
        return self

    def restart(self) -> ServerProcess:
        self.out.lines.clear()
        return self.start()

    def kill_hard(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
            assert 200 == answer.status
            return str(answer.read().decode())


@pytest.fixture
def server_home(short_tmp: Path) -> Path:
    return short_tmp / "server"


@pytest.fixture
def server(server_home: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(server_home, config=None)
    yield proc.start()
    proc.cleanup()


class Channel:
    """A real channel: its key, its founder's replica, its envelopes in order."""

    def __init__(self, founder: Identity, texts: list[str]) -> None:
        self.key = os.urandom(32)
        now = int(time.time() * 1000)
        self.state, genesis = ChannelState.create(founder, "relay", self.key, now, os.urandom)
        self.envelopes = [genesis.encode()]
        self.post(texts)
        self.topic = server_topic(self.state.channel_id)

    def post(self, texts: list[str]) -> list[bytes]:
        new = [self.state.post(text, int(time.time() * 1000), os.urandom).envelope.encode()
               for text in texts]
        self.envelopes += new
        return new


def run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro())  # type: ignore[arg-type]


async def linked(server: ServerProcess, identity: Identity) -> Any:
    """An authenticated raw client (an async context manager)."""
    manager = raw_connect(server.port)
    client = await manager.__aenter__()
    await client.authenticate(identity, os.urandom(32), server.did)
    return manager, client


async def recv_until(client: RawClient, done: Callable[[Frame], bool], within: float = 10.0
                     ) -> list[Frame]:
    frames: list[Frame] = []
    while not frames or not done(frames[-1]):
        frames.append(await client.recv(within))
    return frames


async def watch_all(client: RawClient, topic: bytes, cursor: int = 0) -> list[tuple[int, bytes]]:
    client.send(Watch(topic=topic, cursor=cursor))
    frames = await recv_until(client, lambda f: isinstance(f, Stored) and not f.backfill)
    items: list[tuple[int, bytes]] = []
    for f in frames:
        assert isinstance(f, Stored) and topic == f.topic
        items += [(i.seq, i.envelope) for i in f.items]
    return items


def test_upload_watch_crash_restart_and_metrics(server: ServerProcess) -> None:
    alice, bob = new_identity("alice"), new_identity("bob")
    channel = Channel(alice, [f"hello {i}" for i in range(20)])
    topic = channel.topic
    expected = list(enumerate(channel.envelopes, 1))

    async def first_run() -> None:
        ma, a = await linked(server, alice)
        mb, b = await linked(server, bob)
        try:
            a.send(Upload(topic=topic, items=tuple(channel.envelopes)))
            assert Uploaded(topic=topic, accepted=21, duplicates=0, last=21) == await a.recv()
            assert expected == await watch_all(b, topic)
            # live: a new upload is pushed to the watcher
            new = channel.post(["live one"])
            a.send(Upload(topic=topic, items=tuple(new)))
            assert Uploaded(topic=topic, accepted=1, duplicates=0, last=22) == await a.recv()
            pushed = await b.recv()
            assert isinstance(pushed, Stored)
            assert Stored(topic=topic, items=pushed.items, backfill=False) == pushed
            assert [(22, new[0])] == [(i.seq, i.envelope) for i in pushed.items]
            # a refused request leaves the link open
            other = Channel(alice, [])
            a.send(Upload(topic=topic, items=tuple(other.envelopes)))
            answer = await a.recv()
            # signed over their own channel's topic: under this one they do not verify
            assert isinstance(answer, Refused) and "bad-envelope" == answer.code
            a.send(Lookup(topic=topic))
            assert Peers(topic=topic, records=()) == await a.recv()
        finally:
            await mb.__aexit__(None, None, None)
            await ma.__aexit__(None, None, None)

    run(first_run)
    text = server.metrics()
    for line in ("p2pchat_bootstrap_envelopes_in_total 22.0",
                 "p2pchat_bootstrap_store_envelopes 22.0",
                 "p2pchat_bootstrap_store_topics 1.0",
                 'p2pchat_bootstrap_refusals_total{code="bad-envelope"} 1.0',
                 'p2pchat_bootstrap_requests_total{request="watch"} 1.0'):
        assert line in text.splitlines(), line
    assert re.search(r"^p2pchat_bootstrap_envelopes_out_total 22\.0$", text, re.M)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.metrics_url.replace("/metrics", "/other"), timeout=5)
    assert 404 == info.value.code
    info.value.close()

    server.kill_hard()  # no shutdown, no checkpoint: what was acknowledged must be there
    server.restart()

    async def second_run() -> None:
        mb, b = await linked(server, bob)
        try:
            assert [*expected, (22, channel.envelopes[-1])] == await watch_all(b, topic)
            assert [(22, channel.envelopes[-1])] == await watch_all(b, topic, cursor=21)
            b.send(Upload(topic=topic, items=tuple(channel.envelopes)))
            assert Uploaded(topic=topic, accepted=0, duplicates=22, last=22) == await b.recv()
        finally:
            await mb.__aexit__(None, None, None)

    run(second_run)
    assert "p2pchat_bootstrap_store_envelopes 22.0" in server.metrics().splitlines()
    assert 0 == server.stop()
    server.wait_log("event=stopped")


def _scan(home: Path) -> bytes:
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "server.db" for p in files)
    return b"".join(p.read_bytes() for p in files)


def test_the_server_cannot_read_what_it_stores(server: ServerProcess) -> None:
    alice = new_identity("alice")
    secrets = [os.urandom(12).hex() for _ in range(30)]
    channel = Channel(alice, secrets)

    async def upload() -> None:
        ma, a = await linked(server, alice)
        try:
            a.send(Upload(topic=channel.topic, items=tuple(channel.envelopes)))
            assert isinstance(await a.recv(), Uploaded)
            record = make_record(alice, channel.topic, [("127.0.0.1", 7445)],
                                 int(time.time() * 1000) + 60_000)
            a.send(Announce(topic=channel.topic, peer=record))
            a.send(Lookup(topic=channel.topic))
            assert isinstance(await a.recv(), Peers)
        finally:
            await ma.__aexit__(None, None, None)

    run(upload)
    # the secrets really are in the envelopes, for whoever holds the key
    assert set(secrets) <= {view.text for view in channel.state.history()}
    forbidden = [s.encode() for s in secrets] + [channel.key, channel.key.hex().encode()]
    for how in ("killed", "stopped"):
        if how == "killed":
            server.kill_hard()  # the envelopes are in the WAL
        else:
            server.restart()
            assert 0 == server.stop()  # checkpointed into the database
        blob = _scan(server.home)
        assert channel.envelopes[-1][-64:] in blob, "the scan must see the stored envelopes"
        leaked = [f for f in forbidden if f in blob]
        assert [] == leaked, how


def test_a_client_over_a_limit_is_refused_and_others_are_not(server_home: Path) -> None:
    server_home.mkdir(mode=0o700, parents=True)
    (server_home / "bootstrap.toml").write_text(
        "[server]\nmax_connections_per_ip = 3\n\n"
        "[limits]\nrequests_per_second = 0.5\nrequest_burst = 2\n")
    server = ServerProcess(server_home, config=None)
    try:
        server.start()
        alice, bob = new_identity("alice"), new_identity("bob")
        topic = os.urandom(32)

        async def go() -> None:
            ma, a = await linked(server, alice)
            mb, b = await linked(server, bob)
            try:
                for _ in range(2):
                    a.send(Lookup(topic=topic))
                    assert isinstance(await a.recv(), Peers)
                a.send(Lookup(topic=topic))
                answer = await a.recv()
                assert isinstance(answer, Refused), answer
                assert ("lookup", "rate-limited") == (answer.request, answer.code)
                assert "retry in" in answer.reason
                b.send(Lookup(topic=topic))
                assert isinstance(await b.recv(), Peers)  # bob is unaffected
                # a third connection from 127.0.0.1 is fine, a fourth is refused at once
                mc, _ = await linked(server, new_identity("carol"))
                async with raw_connect(server.port) as d:
                    closed = await d.closed(5.0)
                    assert 9 == closed.error_code  # CloseCode.REFUSED
                    assert "too many connections" in closed.reason_phrase
                await mc.__aexit__(None, None, None)
                b.send(Lookup(topic=topic))
                assert isinstance(await b.recv(), Peers)
            finally:
                await mb.__aexit__(None, None, None)
                await ma.__aexit__(None, None, None)

        run(go)
        server.wait_log("event=refused request=lookup code=rate-limited")
        server.wait_log("event=connection-refused")
        assert 0 == server.stop()
    finally:
        server.cleanup()


def test_bad_config_and_a_second_server_on_one_home_are_clear_errors(server: ServerProcess,
                                                                      short_tmp: Path) -> None:
    cmd = [sys.executable, "-c", "from bootstrap.cli import main; main()", "serve",
           "--listen", "127.0.0.1:0"]
    again = subprocess.run([*cmd, "--home", str(server.home)], capture_output=True, text=True,
                           env=_env(), timeout=30, check=False)
    assert 1 == again.returncode
    assert "a bootstrap server is already running" in again.stderr
    bad = short_tmp / "bad"
    bad.mkdir(mode=0o700)
    (bad / "bootstrap.toml").write_text("[limits]\nmax_topics = -1\n")
    result = subprocess.run([*cmd, "--home", str(bad)], capture_output=True, text=True,
                            env=_env(), timeout=30, check=False)
    assert 1 == result.returncode
    assert "bootstrap.toml: max_topics must be an integer >= 1" in result.stderr


#: Messages each node writes in the address-budget test; each is ~16 KiB of random text
HEAVY_MESSAGES = 8
#: The server's address budget there: one node's messages fit, both nodes' do not
ADDRESS_BUDGET = 200_000


def _post_heavy(node: NodeProcess, channel: str) -> None:
    texts = [os.urandom(8000).hex() for _ in range(HEAVY_MESSAGES)]
    sent = subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(node.home), "send", channel, "--stdin"],
        input="\n".join(texts) + "\n", capture_output=True, text=True, env=_env(), timeout=60,
        check=False)
    assert 0 == sent.returncode, sent.stderr


def _server_status(node: NodeProcess) -> dict[str, Any]:
    result = node.cli("doctor", "--json")
    assert 0 == result.returncode, result.stderr
    return dict(json.loads(result.stdout)["bootstrap"][0])


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


def test_two_node_identities_on_one_address_share_its_budget(
        server_home: Path, spawn: Callable[..., NodeProcess]) -> None:
    server_home.mkdir(mode=0o700, parents=True)
    (server_home / "bootstrap.toml").write_text(
        f"[limits]\naddress_max_bytes = {ADDRESS_BUDGET}\n")
    server = ServerProcess(server_home, config=None)
    try:
        server.start()
        config = FAST_CONFIG.replace("[node]\n", f'[node]\nbootstrap = ["{server.address}"]\n')
        a = spawn("A", config=config)
        channel_a, _ = create_channel(a, "alices")
        _post_heavy(a, channel_a)
        wait_until(lambda: all_stored(a), 20, "A's uploads to the server")
        # a second, fresh identity from the same address (127.0.0.0/24) is refused once
        # the two together would pass the address budget; its own quota is far from full
        b = spawn("B", config=config)
        channel_b, _ = create_channel(b, "bobs")
        _post_heavy(b, channel_b)
        status = wait_until(
            lambda: (s := _server_status(b))["last_error"] and "address-quota"
            in s["last_error"] and s, 20, "B's upload to be refused")
        assert "127.0.0.0/24" in status["last_error"] and str(ADDRESS_BUDGET) in status[
            "last_error"], status
        assert status["acknowledged"] < status["uploaded"], status
        assert status["reachable"], status  # the refusal keeps the link
        server.wait_log("event=refused request=upload code=address-quota")
        doctor = b.cli("doctor")
        assert 0 == doctor.returncode and "address-quota" in doctor.stdout, doctor.stdout
        assert all_stored(a)
        text = server.metrics()
        refusals = _metric(text, 'p2pchat_bootstrap_refusals_total{code="address-quota"}')
        # each refused upload was sent once: B does not retry it in a loop
        assert 1 <= refusals <= status["uploaded"] - status["acknowledged"]
        assert 0 == _metric(text, 'p2pchat_bootstrap_refusals_total{code="quota"}')
        assert 1 == _metric(text, "p2pchat_bootstrap_address_blocks")
        assert _metric(text, "p2pchat_bootstrap_address_block_max_bytes") <= ADDRESS_BUDGET
        assert 0 == b.stop()
        assert 0 == a.stop()
        assert 0 == server.stop()
    finally:
        server.cleanup()
