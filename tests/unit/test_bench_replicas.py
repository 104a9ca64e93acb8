"""The replica benchmarks drive two real NodeCores by hand (no QUIC): they must end their
turns as a runtime does, or the write batcher's held work never leaves."""

from __future__ import annotations

from p2pchat.bench.replicas import bench_reconcile


def test_reconcile_of_two_diverged_replicas_sends_exactly_what_each_lacks() -> None:
    result = bench_reconcile(200, 20)
    assert result["envelopes_sent"] == result["envelopes_needed"] == 42
    assert result["round_trips"] <= 3

