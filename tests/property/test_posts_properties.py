"""Multi-post envelopes under any mix of writes and a chaotic network (the deterministic
simulator): bursts of posts in one turn, posts sealed at once, posts while a peer
lags, reactions, turns ending (seals and pushes) at any point, three writers,
duplicated, reordered and split frames and broken links. Every answered post reaches
every member, each author's posts keep the order of its requests, and the replicas
converge."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.core.events import MessageOpRequested, SendRequested
from p2pchat.testing import Faults, SimNetwork

NODES = ["a", "b", "c"]

_write = st.one_of(
    st.tuples(st.just("post"), st.sampled_from(NODES), st.integers(0, 2_000), st.booleans()),
    st.tuples(st.just("react"), st.sampled_from(NODES), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("end-turn"), st.sampled_from(NODES), st.just(0), st.just(False)),
    st.tuples(st.just("run"), st.sampled_from(NODES), st.integers(1, 50), st.just(False)),
)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), script=st.lists(_write, min_size=1, max_size=120))
def test_any_mix_of_batched_and_plain_posts_converges_in_request_order(
        seed: int, script: list[tuple[str, str, int, bool]]) -> None:
    net = SimNetwork(seed, NODES, faults=Faults.chaos())
    channel = net.create_channel("a", "props")
    for name in NODES[1:]:
        net.join(name, channel)
    for name in NODES[1:]:
        net.wait_for(lambda n=name: net.synced(n, channel), what=f"{name} to sync")  # type: ignore[misc]
    requests: dict[str, list[int]] = {n: [] for n in NODES}
    rid = 1_000_000
    for kind, name, size, flag in script:
        rid += 1
        if kind == "post":  # texts from 1 to 2,000 characters: bursts also cut by size
            text = f"{name}{rid} " + "x" * size
            # writes stay in one turn until an "end-turn" (or a "run"); ``flag``: a peer lags
            net.request(name, SendRequested(rid, channel, text, net.wall_ms(name),
                                            lagging=flag), same_turn=True)
            requests[name].append(rid)
        elif kind == "react":
            shown = net.history(name, channel)
            if shown:
                target = shown[size % len(shown)].id
                net.request(name, MessageOpRequested(rid, channel, "react", target,
                                                     net.wall_ms(name), emoji=f"e{size}"),
                            same_turn=True)
        elif kind == "end-turn":
            net.end_turn(name)
        else:
            net.run_for(size / 1000)
    for name in NODES:
        net.end_turn(name)
    net.calm()  # then let it settle: every link works again
    net.run_until_quiet()
    net.assert_converged(channel)
    shown = net.history("a", channel)
    for name, rids in requests.items():
        answers = [net.answers[r] for r in rids]
        assert all(a.error is None for a in answers), [a.error for a in answers]
        ids = [a.result["id"] for a in answers]  # type: ignore[index]
        mine = [m.id for m in shown if m.author == net.did(name)]
        assert mine == ids, f"seed={seed}: {name}'s posts out of request order"
