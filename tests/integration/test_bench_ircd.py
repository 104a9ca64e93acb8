"""The IRC side of ``p2pchat bench --compare`` against a real ngircd on loopback.

Skipped when ngircd is not installed (``apt-get install ngircd``; ``.ci/run``
installs it when it can). Checks that the measurement works end to end (every
message reaches every receiver, each with its sequence number and a latency),
never how fast: performance is measured by the bench only.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from p2pchat.bench.fanout import FanoutPlan, ReceiverHosts, bench_ircd, irc_run
from p2pchat.bench.ircd import IrcClient, Ngircd, find_ngircd
from p2pchat.bench.observed import Recorder
from p2pchat.bench.pipeline import bench_text

pytestmark = [
    pytest.mark.integration,
    # runs the benchmark workload: one bench test at a time (see CONTRIBUTING.md)
    pytest.mark.xdist_group("bench"),
    pytest.mark.skipif(find_ngircd() is None,
                       reason="ngircd is not installed (apt-get install ngircd)"),
]

RECEIVERS = 3
MESSAGES = 40
#: Generous bound on waiting for deliveries on a loaded machine (not a performance check).
DELIVERY_LIMIT = 30.0


def _binary() -> str:
    binary = find_ngircd()
    assert binary is not None
    return binary


def test_every_receiver_gets_every_message_in_order() -> None:
    async def run() -> list[Recorder]:
        server = await Ngircd.start(_binary())
        clients: list[IrcClient] = []
        try:
            sender = await IrcClient.connect(server.address, "sender")
            clients.append(sender)
            await sender.join("#t")
            receivers = [await IrcClient.connect(server.address, f"r{i}")
                         for i in range(RECEIVERS)]
            clients += receivers
            for client in receivers:
                await client.join("#t")
                client.recorder = Recorder(MESSAGES)
            for seq in range(MESSAGES):
                await sender.privmsg("#t", bench_text(seq, time.monotonic_ns()))
            recorders = [c.recorder for c in receivers if c.recorder is not None]
            async with asyncio.timeout(DELIVERY_LIMIT):
                await asyncio.gather(*(r.done.wait() for r in recorders))
            return recorders
        finally:
            for client in clients:
                await client.close()
            await server.stop()

    recorders = asyncio.run(run())
    assert RECEIVERS == len(recorders)
    for recorder in recorders:
        assert MESSAGES == recorder.count
        assert list(range(MESSAGES)) == [seq for seq, _ in recorder.latencies]
        assert all(latency > 0 for _, latency in recorder.latencies)


def test_fanout_workload_through_receiver_processes() -> None:
    plan = FanoutPlan(latency_messages=30, latency_warmup=5, saturate_messages=60, sweep=(),
                      receivers=RECEIVERS, processes=2, rate=200.0, light_rate=200.0,
                      light_messages=20, light_warmup=5)

    async def run() -> tuple[dict[str, object], int]:
        hosts = await ReceiverHosts.start(plan.processes)
        try:
            result = await bench_ircd(_binary(), hosts, plan)
            # a second run on a fresh server: counts per receiver, spread over both hosts
            server = await Ngircd.start(_binary())
            try:
                run = await irc_run(server, hosts, RECEIVERS, 10, None, "x")
            finally:
                await server.stop()
            return result, sum(int(r["count"]) for r in run.receivers)
        finally:
            await hosts.close()

    result, delivered = asyncio.run(run())
    assert "error" not in result and "latency_error" not in result, result
    assert str(result["server"]).startswith("ngircd ")
    assert (plan.latency_messages - plan.latency_warmup) * RECEIVERS == result["deliveries"]
    assert isinstance(result["p50_ms"], float) and result["p50_ms"] > 0
    assert isinstance(result["rate"], float) and result["rate"] > 0
    assert 10 * RECEIVERS == delivered


def test_ngircd_is_stopped_and_its_files_removed() -> None:
    async def run() -> tuple[int | None, bool]:
        server = await Ngircd.start(_binary())
        workdir = server._workdir
        await server.stop()
        return server.proc.returncode, workdir.exists()

    code, left = asyncio.run(run())
    assert code is not None
    assert not left
