"""Ready-made seeded scenarios for :class:`~p2pchat.testing.sim.SimNetwork`.

Each builds a network, drives it with a script drawn from the same seed, lets it
go quiet and returns the :class:`Outcome`; the caller checks it (usually with
``outcome.net.assert_converged(outcome.channel)``). Used by ``tests/sim`` and
usable from a REPL or a ``sim`` command: the same seed replays the same run.
(Scenario *files*, TOML replayed by ``p2pchat sim``, are :mod:`p2pchat.testing.scenario`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pchat.testing.sim import Faults, SimNetwork, derive_rng

FIVE = ("a", "b", "c", "d", "e")


@dataclass
class Outcome:
    """A finished run: the network, the channel and who posted what."""

    net: SimNetwork
    channel: bytes
    posted: dict[str, list[str]]  # node -> texts it posted, in order

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.posted.values())


def _setup(net: SimNetwork, founder: str, joins: list[tuple[str, str]]) -> bytes:
    channel = net.create_channel(founder, "general")
    for name, via in joins:
        net.join(name, channel, via=via)
    names = [founder, *(n for n, _ in joins)]
    net.wait_for(lambda: all(net.synced(n, channel) for n in names), timeout=300,
                 what="every member to receive the genesis")
    return channel


def five_node_chaos(seed: int, per_node: int = 30) -> Outcome:
    """Five nodes in a mesh; every node posts ``per_node`` messages while the network
    partitions (reset, then stall), heals, breaks links (resets and black holes),
    stalls, jitters, duplicates and reorders envelope frames, and one node crashes and
    restarts from its store. Then calm, heal and run until quiet."""
    script = derive_rng(seed, "script")
    net = SimNetwork(seed, FIVE, clock_skew_ms=1500)
    channel = _setup(net, "a", [(n, "a") for n in FIVE[1:]])
    for x, y in (("b", "c"), ("c", "d"), ("d", "e"), ("e", "b")):
        net.connect(x, y)
    net.run_for(5.0)
    net.faults = Faults.chaos()

    turns = [n for n in FIVE for _ in range(per_node)]
    script.shuffle(turns)
    total = len(turns)
    crashed = script.choice(FIVE[1:])
    shuffled = list(FIVE)
    script.shuffle(shuffled)
    milestones: dict[int, Callable[[], object]] = {
        total // 6: lambda: net.partition(shuffled[:2], shuffled[2:], mode="reset"),
        2 * total // 6: net.heal,
        3 * total // 6: lambda: net.partition(shuffled[1:4], mode="stall"),
        4 * total // 6: net.heal,
        int(4.3 * total / 6): lambda: net.crash(crashed),
        5 * total // 6: lambda: net.restart(crashed),
    }
    posted: dict[str, list[str]] = {n: [] for n in FIVE}
    step = 0
    while turns:
        if step in milestones:
            milestones[step]()
        step += 1
        name = turns[0]
        if not net.node(name).alive:
            turns.append(turns.pop(0))  # its turn comes back after the restart
            if all(not net.node(n).alive for n in turns):
                net.run_for(1.0)
                continue
        else:
            text = f"{name}-{len(posted[name])}"
            net.post(name, channel, text)
            posted[name].append(text)
            turns.pop(0)
        net.run_for(script.expovariate(2.0))
    if not net.node(crashed).alive:
        net.restart(crashed)
    net.heal()
    net.calm()
    net.run_until_quiet()
    return Outcome(net, channel, posted)


def random_world(seed: int) -> Outcome:
    """3-6 nodes on a random connected topology (a random tree plus extra edges),
    posting while random partitions come and go under chaos faults."""
    script = derive_rng(seed, "world")
    names = [f"n{i}" for i in range(script.randint(3, 6))]
    net = SimNetwork(seed, names, clock_skew_ms=script.choice([0, 500, 5000]))
    # a random tree: everyone joins via an earlier node, so the graph is connected
    joins = [(n, script.choice(names[:i])) for i, n in enumerate(names) if i > 0]
    channel = _setup(net, names[0], joins)
    edges = {tuple(sorted(j)) for j in joins}
    for _ in range(script.randint(0, len(names))):
        x, y = script.sample(names, 2)
        if tuple(sorted((x, y))) not in edges:
            edges.add(tuple(sorted((x, y))))
            net.connect(x, y)
    net.run_for(3.0)
    net.faults = Faults.chaos()
    posted: dict[str, list[str]] = {n: [] for n in names}
    for _ in range(script.randint(3, 6)):  # rounds: partition, post, maybe heal
        if script.random() < 0.7:
            cut = script.sample(names, script.randint(1, len(names) - 1))
            net.partition(cut, mode=script.choice(["reset", "stall"]))
        for _ in range(script.randint(2, 10)):
            name = script.choice(names)
            text = f"{name}-{len(posted[name])}"
            net.post(name, channel, text)
            posted[name].append(text)
            net.run_for(script.expovariate(1.0))
        if script.random() < 0.5:
            net.heal()
        net.run_for(script.uniform(0.0, 40.0))
    net.heal()
    net.calm()
    net.run_until_quiet()
    return Outcome(net, channel, posted)
