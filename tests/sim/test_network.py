"""The simulator itself: clock, seeds, stream semantics, partitions, closes, crashes."""

from __future__ import annotations

from collections import defaultdict

import pytest

from p2pchat.core.events import ConnectRequested, DisconnectRequested
from p2pchat.testing import (
    Constant,
    FakeClock,
    Faults,
    LogNormal,
    SimError,
    SimNetwork,
    Uniform,
    derive_rng,
    seed_from_env,
)


def _pair(seed: int, faults: Faults | None = None, names: tuple[str, ...] = ("a", "b")
          ) -> tuple[SimNetwork, bytes]:
    """``names[0]`` founds a channel, the others join through it and sync."""
    net = SimNetwork(seed, names, faults=faults)
    channel = net.create_channel(names[0], "general")
    for name in names[1:]:
        net.join(name, channel)
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), what="sync")
    return net, channel


def _kinds(net: SimNetwork, node: str, since: int = 0) -> list[str]:
    return [e[2] for e in net.trace[since:] if e[1] == node]


def test_fake_clock() -> None:
    clock = FakeClock(10.0, wall_base_ms=1_000_000)
    clock.advance(1.5)
    assert 11.5 == clock.now
    assert 1_011_500 == clock.wall_ms()
    assert 1_011_250 == clock.wall_ms(skew_ms=-250)
    with pytest.raises(ValueError):
        clock.advance_to(11.0)


def test_seed_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEED", raising=False)
    assert 17 == seed_from_env(17)
    monkeypatch.setenv("SEED", "0x10")
    assert 16 == seed_from_env(17)
    monkeypatch.setenv("SEED", "99")
    assert 99 == seed_from_env(17)


def test_latency_models_are_seeded() -> None:
    assert 0.25 == Constant(0.25)(derive_rng(1, "x"))
    draws = [Uniform(0.1, 0.2)(derive_rng(1, "x")) for _ in range(2)]
    assert draws[0] == draws[1] and 0.1 <= draws[0] <= 0.2
    assert LogNormal(0.01, 3.0, cap=0.5)(derive_rng(2, "y")) <= 0.5


def test_identities_depend_only_on_seed_and_name() -> None:
    assert SimNetwork(1, ["a", "b"]).did("b") == SimNetwork(1, ["b"]).did("b")
    assert SimNetwork(1, ["b"]).did("b") != SimNetwork(2, ["b"]).did("b")
    assert SimNetwork(1, ["a"]).did("a") != SimNetwork(1, ["b"]).did("b")


def test_links_are_reliable_ordered_streams_despite_jitter_stalls_and_splits() -> None:
    faults = Faults(latency=LogNormal(0.02, 1.0, 1.5), stall_prob=0.1, split_prob=0.5)
    net = SimNetwork(seed_from_env(21), ["a", "b", "c"], faults=faults)
    sent: dict[tuple[str, int], bytearray] = defaultdict(bytearray)
    got: dict[tuple[str, int], bytearray] = defaultdict(bytearray)
    net.on_transmit = lambda node, link, data: sent[(node, link)].extend(data)
    net.on_deliver = lambda node, link, data: got[(node, link)].extend(data)
    channel = net.create_channel("a", "general")
    net.join("b", channel)
    net.join("c", channel)
    net.connect("b", "c")
    net.wait_for(lambda: net.synced("b", channel) and net.synced("c", channel))
    for i in range(40):
        net.post("abc"[i % 3], channel, f"m{i}")
        net.run_for(0.01)
    net.run_until_quiet()
    net.assert_converged(channel)
    assert net.stats.stalls and net.stats.splits
    assert sent and 0 == net.stats.resets
    for (node, link), data in sent.items():
        delivered = bytes(got[net.peer_end(node, link)])
        # in order, nothing lost or doubled; at most a keepalive still in flight
        assert bytes(data[:len(delivered)]) == delivered, f"seed={net.seed}"
        assert len(data) - len(delivered) < 64, f"seed={net.seed}"


def test_frame_duplicates_and_reorders_keep_frames_whole() -> None:
    faults = Faults(frame_duplicate=0.4, frame_reorder=0.4, split_prob=0.3)
    net, channel = _pair(seed_from_env(22), faults, ("a", "b", "c"))
    for i in range(40):
        net.post("abc"[i % 3], channel, f"m{i}")
        net.run_for(0.003)
    net.run_until_quiet()
    net.assert_converged(channel)
    assert net.stats.duplicated and net.stats.reordered
    assert not [e for e in net.trace if e[2] == "lost"], "a frame game broke a stream"


def test_partition_breaks_links_fails_dials_and_heals() -> None:
    net, channel = _pair(seed_from_env(23), names=("a", "b", "c"))
    net.connect("b", "c")
    net.run_for(1.0)
    assert [("b", "a"), ("b", "c"), ("c", "a")] == net.links()
    mark = len(net.trace)
    net.partition(["a"], ["b", "c"])
    net.run_for(60.0)
    assert [("b", "c")] == net.links()
    assert "lost" in _kinds(net, "a", mark)
    assert "dial-failed" in _kinds(net, "b", mark)  # b keeps trying its invite peer
    net.post("a", channel, "from a")
    net.heal()
    net.run_until_quiet()
    assert [("b", "a"), ("b", "c"), ("c", "a")] == net.links()
    net.assert_converged(channel)
    assert ["from a"] == [m.text for m in net.history("c", channel)]


def test_short_stall_partition_delays_but_keeps_links() -> None:
    net, channel = _pair(seed_from_env(24))
    mark = len(net.trace)
    net.partition(["a"], ["b"], mode="stall")
    net.post("a", channel, "held")
    net.run_for(5.0)
    assert [] == net.history("b", channel)
    net.heal()
    net.run_for(1.0)
    assert ["held"] == [m.text for m in net.history("b", channel)]
    assert "lost" not in _kinds(net, "a", mark) + _kinds(net, "b", mark)


def test_long_stall_partition_ends_in_idle_timeouts() -> None:
    net, _ = _pair(seed_from_env(25))
    net.partition(["a"], ["b"], mode="stall")
    net.run_for(net.config.link.idle_timeout + 1.0)
    assert [] == net.links()
    closes = [e for e in net.trace if e[2] == "peer-"]
    assert {"a", "b"} == {e[1] for e in closes}
    net.heal()
    net.run_until_quiet()
    assert [("b", "a")] == net.links()


def test_close_reaches_the_peer_after_data_in_flight() -> None:
    net = SimNetwork(seed_from_env(26), ["a", "b"], faults=Faults(latency=Constant(0.05)))
    net.connect("a", "b")
    net.run_for(1.0)
    mark = len(net.trace)
    net.request("a", DisconnectRequested(99, did=net.did("b")))
    net.run_for(1.0)
    lost = [e for e in net.trace[mark:] if e[1] == "b" and e[2] == "lost"]
    assert 1 == len(lost)
    assert "closed by peer: disconnected by user" in lost[0][3]
    assert [] == net.links()


def test_crash_is_noticed_by_idle_timeout_and_restart_reloads_the_store() -> None:
    net, channel = _pair(seed_from_env(27))
    net.post("b", channel, "before")
    net.run_for(1.0)
    crashed_at = net.now
    net.crash("b")
    net.wait_for(lambda: not net.core("a").peers(net.now), what="a to drop b")
    idle = net.config.link.idle_timeout
    assert crashed_at + idle - net.config.link.keepalive_interval <= net.now <= crashed_at + idle
    with pytest.raises(SimError, match="b is down"):
        net.post("b", channel, "while down")
    net.restart("b")
    assert ["before"] == [m.text for m in net.history("b", channel)]
    net.post("a", channel, "after")
    net.run_until_quiet()
    net.assert_converged(channel)
    assert [("b", "a")] == net.links()  # b redialled the peer it had saved


def test_dial_to_nowhere_fails_after_the_dial_timeout() -> None:
    net = SimNetwork(seed_from_env(28), ["a"])
    net.request("a", ConnectRequested(5, ("192.0.2.1", 9)))
    net.run_for(net.config.dial_timeout + 1.0)
    finished = net.connects[5]
    assert finished.did is None and finished.error is not None
    assert "timed out" in finished.error


def test_assert_converged_shows_a_diff_and_the_seed() -> None:
    net, channel = _pair(seed_from_env(29))
    net.partition(["a"], ["b"])
    net.post("a", channel, "only on a")
    with pytest.raises(SimError) as info:
        net.assert_converged(channel)
    message = str(info.value)
    assert f"seed={net.seed}" in message
    assert "'only on a'" in message and "--- a" in message and "+++ b" in message


def test_run_until_quiet_gives_up_on_endless_faults() -> None:
    net, _ = _pair(seed_from_env(30), Faults(link_lifetime=2.0))
    with pytest.raises(SimError, match=r"(?s)not quiet.*seed="):
        net.run_until_quiet(idle=30.0, timeout=120.0)


def _own_on_disk(net: SimNetwork, name: str, channel: bytes, author: str) -> int:
    from p2pchat.channel.envelope import channel_topic, decode_envelope

    key = net.node(author).identity.public_key.raw
    return sum(1 for _, raw in net.node(name).disk.envelopes[channel]
               if decode_envelope(raw, channel_topic(channel)).author_key == key)


def test_a_crash_loses_exactly_the_nodes_own_last_writes() -> None:
    seed = seed_from_env(23)
    net, channel = _pair(seed, names=("a", "b", "c"))
    for i in range(3):
        net.post("b", channel, f"b-{i}")
        net.post("c", channel, f"c-{i}")
    net.run_until_quiet()
    own, others = _own_on_disk(net, "b", channel, "b"), _own_on_disk(net, "b", channel, "c")
    assert {channel: 2} == net.crash("b", lose_own_last=2), f"seed={seed}"
    assert own - 2 == _own_on_disk(net, "b", channel, "b"), f"seed={seed}"
    assert others == _own_on_disk(net, "b", channel, "c"), f"seed={seed}"
    assert own == _own_on_disk(net, "a", channel, "b"), f"seed={seed}: peers keep them"
    with pytest.raises(SimError, match="already down"):
        net.crash("b", lose_own_last=1)
    net.restart("b")
    net.run_until_quiet()
    net.assert_converged(channel)  # its peers give its lost envelopes back
    assert ["b-0", "b-1", "b-2"] == [m.text for m in net.history("b", channel)
                                     if m.text.startswith("b-")], f"seed={seed}"


def test_lose_own_last_never_loses_the_genesis() -> None:
    seed = seed_from_env(24)
    net, channel = _pair(seed)
    before = len(net.node("a").disk.envelopes[channel])
    lost = net.crash("a", lose_own_last=1_000)
    after = net.node("a").disk.envelopes[channel]
    assert before - lost.get(channel, 0) == len(after) and after, f"seed={seed}"
    assert after[0] == net.node("b").disk.envelopes[channel][0], f"seed={seed}"


def test_a_one_way_block_holds_one_direction_only() -> None:
    seed = seed_from_env(25)
    net, channel = _pair(seed)
    net.block("b", "a")  # a hears nothing from b; b still hears a
    net.post("a", channel, "from a")
    net.post("b", channel, "from b")
    net.run_for(2.0)
    assert {"from a", "from b"} == {m.text for m in net.history("b", channel)
                                    if m.text.startswith("from")}, f"seed={seed}"
    assert ["from a"] == [m.text for m in net.history("a", channel)
                          if m.text.startswith("from")], f"seed={seed}"
    assert net.fired("held", ("a", "b")) > 0, f"seed={seed}"
    assert 0 == net.link_stats.get(("a", "b"), {}).get("held", 0), f"seed={seed}"
    net.unblock("b", "a")
    net.run_until_quiet()
    net.assert_converged(channel)


def test_a_one_way_block_lets_no_new_link_open() -> None:
    seed = seed_from_env(26)
    net = SimNetwork(seed, ["a", "b"])
    net.block("a", "b")
    with pytest.raises(SimError, match="cannot reach"):
        net.link("b", "a")
    net.connect("b", "a")
    net.run_for(30.0)
    assert [] == net.links() and net.stats.dial_failures > 0, f"seed={seed}"
    net.heal()
    net.connect("b", "a")  # a first connect that failed is not retried
    net.run_until_quiet()
    assert [("b", "a")] == net.links(), f"seed={seed}"


def test_an_isolated_node_keeps_writing_and_merges_on_reconnect() -> None:
    seed = seed_from_env(27)
    net, channel = _pair(seed, names=("a", "b", "c"))
    net.isolate("c", mode="stall")
    for i in range(3):
        net.post("c", channel, f"c-{i}")  # alive, not crashed: it can write
        net.post("a", channel, f"a-{i}")
    net.run_for(5.0)
    assert 3 == len([m for m in net.history("a", channel) if m.text.startswith("a-")])
    assert [] == [m for m in net.history("a", channel) if m.text.startswith("c-")], \
        f"seed={seed}"
    assert [] == [m for m in net.history("c", channel) if m.text.startswith("a-")], \
        f"seed={seed}"
    net.heal()  # ends partitions and blocks, not an isolation
    net.run_for(1.0)
    assert [] == [m for m in net.history("a", channel) if m.text.startswith("c-")]
    net.reconnect("c")
    net.run_until_quiet()
    net.assert_converged(channel)
    assert 6 == len([m for m in net.history("a", channel) if m.text[:2] in ("a-", "c-")])


def test_per_link_latency_and_loss_apply_to_that_link_only() -> None:
    seed = seed_from_env(28)
    net, channel = _pair(seed, names=("a", "b", "c"))
    net.set_link("a", "b", latency=Constant(0.5), loss=1.0)
    arrivals: dict[str, float] = {}

    def seen(name: str, link_id: int, data: bytes) -> None:
        arrivals.setdefault(name, net.now)

    net.on_deliver = seen
    start = net.now
    net.post("a", channel, "slow to b")
    net.run_for(10.0)
    assert arrivals["b"] - start >= 0.5 + 0.2, f"seed={seed}: latency and a stall"
    assert arrivals["c"] - start < 0.5, f"seed={seed}: the a-c link is unaffected"
    assert net.fired("loss", ("a", "b")) > 0 and 0 == net.fired("loss", ("a", "c"))
    assert net.fired("loss") == net.stats.stalls
    net.set_link("a", "b")  # back to the network's faults
    with pytest.raises(ValueError, match="unknown fault"):
        net.fired("nope")


@pytest.mark.parametrize("kind", ["forged", "garbage"])
def test_a_hostile_envelope_closes_the_link_and_changes_nothing(kind: str) -> None:
    seed = seed_from_env(29)
    net, channel = _pair(seed, names=("a", "b", "c"))
    net.post("b", channel, "honest")
    net.run_until_quiet()
    before = net.replica_lines("a", channel)
    closes = net.stats.closes
    msg_id = net.hostile("b", channel, kind, text="evil", to=["a"])
    net.run_until_quiet()
    assert 1 == net.fired("hostile", ("b", "a")) and 0 == net.fired("hostile", ("b", "c"))
    assert net.stats.closes > closes, f"seed={seed}: a closes the hostile link"
    assert before == net.replica_lines("a", channel), f"seed={seed}"
    assert (msg_id != "") == (kind == "forged"), f"seed={seed}"
    assert "evil" not in [m.text for m in net.history("a", channel)], f"seed={seed}"
    net.assert_converged(channel)  # b redials; nothing bad was kept anywhere


def test_a_bad_change_is_kept_as_invalid_and_never_shown() -> None:
    seed = seed_from_env(29)
    net, channel = _pair(seed, names=("a", "b", "c"))
    net.hostile("b", channel, "bad_change", text="evil", to=["a"])
    net.run_until_quiet()
    state = net.core("a").hub.get(channel)
    assert "bad change" in state.envs[state.log[-1]].why, f"seed={seed}"
    # an invalid envelope is stored but not pushed live; the next summaries carry it
    net.break_link("a", "b")
    net.break_link("a", "c")
    net.run_until_quiet()
    net.assert_converged(channel)
    assert "evil" not in [m.text for n in "abc" for m in net.history(n, channel)]


def test_an_equivocation_is_quarantined_everywhere() -> None:
    seed = seed_from_env(30)
    net, channel = _pair(seed, names=("a", "b", "c"))
    net.post("b", channel, "before")
    net.run_until_quiet()
    forked = net.hostile("b", channel, "equivocate", text="branch one")
    net.run_until_quiet()
    net.assert_converged(channel, ["a", "c"])
    for name in ("a", "c"):
        state = net.core(name).hub.get(channel)
        assert (net.did("b"), net.node("b").identity.device_salt) in state.equivocators, \
            f"seed={seed}: {name}"
    assert forked not in {m.id for m in net.history("a", channel)}, f"seed={seed}"


def test_a_backdated_post_is_signed_and_stamped_in_the_past() -> None:
    seed = seed_from_env(31)
    net, channel = _pair(seed)
    msg_id = net.hostile("b", channel, "backdated", text="old news", age_ms=86_400_000)
    net.run_until_quiet()
    net.assert_converged(channel)
    shown = {m.id: m for m in net.history("a", channel)}
    assert msg_id in shown, f"seed={seed}"
    with pytest.raises(ValueError, match="unknown hostile kind"):
        net.hostile("b", channel, "rude")
