"""Channel replication under the simulator: convergence, determinism, offline merge.

Every test is seeded; set ``SEED=…`` to replay another seed (iroh-gossip style).
A failure message always names the seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pchat.core.events import SendRequested
from p2pchat.testing import Faults, LogNormal, SimNetwork, seed_from_env
from p2pchat.testing.scenarios import FIVE, Outcome, five_node_chaos, random_world

ROOT = Path(__file__).resolve().parents[2]


def _texts(outcome: Outcome, name: str) -> list[str]:
    return [m.text for m in outcome.net.history(name, outcome.channel)]


def _check_complete(outcome: Outcome) -> None:
    """Converged, and every posted message is there exactly once, each author's in order."""
    net = outcome.net
    net.assert_converged(outcome.channel)
    for name in net.members(outcome.channel):
        texts = _texts(outcome, name)
        ctx = f"seed={net.seed} node={name}"
        assert sorted(t for ts in outcome.posted.values() for t in ts) == sorted(texts), ctx
        for author, mine in outcome.posted.items():
            assert mine == [t for t in texts if t.startswith(f"{author}-")], ctx


def test_five_nodes_converge_through_partitions_breaks_and_a_crash() -> None:
    seed = seed_from_env(20261122)
    outcome = five_node_chaos(seed, per_node=30)
    net = outcome.net
    assert FIVE == tuple(net.members(outcome.channel)), f"seed={seed}"
    assert 150 == outcome.total
    _check_complete(outcome)
    stats = net.stats
    exercised = {"resets": stats.resets, "stalls": stats.stalls, "splits": stats.splits,
                 "duplicated": stats.duplicated, "reordered": stats.reordered,
                 "dial_failures": stats.dial_failures}
    assert all(exercised.values()), f"seed={seed}: some fault never happened: {exercised}"


def _fingerprint(outcome: Outcome) -> dict[str, list[tuple[str, str, str, int]]]:
    return {name: [(m.id, m.author, m.text, m.ts)
                   for m in outcome.net.history(name, outcome.channel)]
            for name in outcome.net.members(outcome.channel)}


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    seed = seed_from_env(7)
    first = five_node_chaos(seed, per_node=20)
    again = five_node_chaos(seed, per_node=20)
    assert first.net.trace == again.net.trace, f"seed={seed}"
    assert _fingerprint(first) == _fingerprint(again), f"seed={seed}"
    assert first.net.stats == again.net.stats, f"seed={seed}"
    other = five_node_chaos(seed + 1, per_node=20)
    assert first.net.trace != other.net.trace
    assert _fingerprint(first) != _fingerprint(other)


_DIGEST_SCRIPT = """
import sys
from p2pchat.testing.scenarios import five_node_chaos
print(five_node_chaos(int(sys.argv[1]), per_node=8).net.trace_digest())
"""


def test_trace_does_not_depend_on_the_hash_seed() -> None:
    """A SEED replayed in another process (other PYTHONHASHSEED) gives the same run."""
    seed = seed_from_env(11)
    expected = five_node_chaos(seed, per_node=8).net.trace_digest()
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", _DIGEST_SCRIPT, str(seed)], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60, check=True)
        assert expected == out.stdout.strip(), f"seed={seed} PYTHONHASHSEED={hash_seed}"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_topologies_and_partitions_converge(seed: int) -> None:
    _check_complete(random_world(seed))


def test_line_topology_converges_through_the_middle() -> None:
    """A-B-C: A and C never connect; their interleaved posts reach each other via B."""
    seed = seed_from_env(3)
    net = SimNetwork(seed, ["a", "b", "c"], faults=Faults(
        latency=LogNormal(0.02, 0.8, 1.0), stall_prob=0.05, split_prob=0.3))
    channel = net.create_channel("a", "line")
    net.join("b", channel, via="a")
    net.join("c", channel, via="b")
    net.wait_for(lambda: net.synced("c", channel), what="c to sync through b")
    posted: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    for i in range(30):
        for name in ("a", "c"):
            text = f"{name}-{i}"
            net.post(name, channel, text)
            posted[name].append(text)
            net.run_for(0.05 * (i % 4))
    net.run_until_quiet()
    assert ("a", "c") not in net.ever_linked, f"seed={seed}: a and c were linked directly"
    outcome = Outcome(net, channel, posted)
    _check_complete(outcome)
    assert 60 == len(_texts(outcome, "b"))


def test_offline_merge_orders_the_earlier_side_first() -> None:
    """B is cut off; A posts, then B posts; after the heal both show A's then B's."""
    seed = seed_from_env(5)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "merge")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel))
    net.partition(["a"], ["b"])
    a_texts = [f"a-{i}" for i in range(20)]
    b_texts = [f"b-{i}" for i in range(20)]
    for text in a_texts:
        net.post("a", channel, text)
        net.run_for(0.5)
    for text in b_texts:
        net.post("b", channel, text)
        assert text == net.history("b", channel)[-1].text  # visible at once, offline
        net.run_for(0.5)
    assert b_texts == [m.text for m in net.history("b", channel)]
    net.heal()
    net.run_until_quiet()
    net.assert_converged(channel)
    assert a_texts + b_texts == [m.text for m in net.history("a", channel)], f"seed={seed}"


def test_offline_merge_across_a_restart() -> None:
    """B stops; A posts; B restarts from its store with no reachable peer and posts;
    then they reconnect and both show A's messages, then B's."""
    seed = seed_from_env(9)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "restart")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel))
    net.post("b", channel, "b-before")
    net.run_for(2.0)
    net.crash("b")
    a_texts = [f"a-{i}" for i in range(15)]
    for text in a_texts:
        net.post("a", channel, text)
        net.run_for(0.3)
    net.partition(["a"], ["b"])
    net.restart("b")
    assert ["b-before"] == [m.text for m in net.history("b", channel)]
    b_texts = [f"b-{i}" for i in range(15)]
    for text in b_texts:
        net.post("b", channel, text)
        net.run_for(0.3)
    net.heal()
    net.run_until_quiet()
    net.assert_converged(channel)
    assert ["b-before", *a_texts, *b_texts] == [m.text for m in net.history("a", channel)], \
        f"seed={seed}"


def test_duplicate_links_do_not_starve_live_forwarding() -> None:
    seed = seed_from_env(13)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "dupes")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel))
    for _ in range(20):
        net.link("b", "a")  # a second link: both cores keep one, close the other
        net.run_for(1.0)
    assert [("b", "a")] == net.links()
    net.post("a", channel, "still live?")
    net.run_for(5.0)
    assert ["still live?"] == [m.text for m in net.history("b", channel)], f"seed={seed}"
    assert [] == net.violations


def test_a_join_survives_a_restart_before_the_first_connection() -> None:
    seed = seed_from_env(15)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "early")
    net.partition(["a"], ["b"])
    net.join("b", channel)
    net.run_for(1.0)
    net.restart("b")
    net.heal()
    net.run_until_quiet()
    assert net.synced("b", channel), f"seed={seed}: b never reached its invite peer"


def test_a_restart_that_lost_own_envelopes_neither_raises_nor_diverges() -> None:
    seed = seed_from_env(17)
    net = SimNetwork(seed, ["a", "b", "c"])
    channel = net.create_channel("a", "lossy")
    net.join("b", channel)
    net.join("c", channel)
    net.wait_for(lambda: net.synced("b", channel) and net.synced("c", channel))
    for i in range(5):
        net.post("b", channel, f"b-{i}")
        net.run_for(0.5)
    net.restart("b", lose_last=2)  # peers hold b-3 and b-4; b's store does not
    for i in range(5, 8):
        net.request("b", SendRequested(1000 + i, channel, f"b-{i}", net.wall_ms("b")))
        net.run_for(0.5)
    net.run_until_quiet()
    net.assert_converged(channel)


def test_a_backlog_larger_than_the_sync_window_arrives_window_by_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import p2pchat.core.replication as replication

    monkeypatch.setattr(replication, "SYNC_WINDOW_BYTES", 16 * 1024)  # a few dozen envelopes
    seed = seed_from_env(19)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "backlog")
    texts = [f"m{i} " + "x" * 400 for i in range(300)]  # 600+ bytes an envelope
    for text in texts:
        net.post("a", channel, text)
    net.join("b", channel)
    net.run_until_quiet()
    net.assert_converged(channel)
    assert texts == [m.text for m in net.history("b", channel)], f"seed={seed}"
    summaries = sum(1 for entry in net.trace if "summary" in str(entry))
    assert summaries > 300 * 600 // (16 * 1024), f"seed={seed}: no paging happened"
