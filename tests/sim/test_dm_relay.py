"""Direct messages between members with no link to each other (design.md §10.15): the
offer, the DM channel's envelopes and the receipts travel, sealed, through a member
they share a channel with, who cannot read them."""

from __future__ import annotations

from p2pchat.core.dm import RelayError, open_from
from p2pchat.core.events import DmRequested
from p2pchat.testing import SimNetwork, seed_from_env
from p2pchat.wire import FrameDecoder
from p2pchat.wire.frames import Relay


def _world(seed: int) -> tuple[SimNetwork, bytes]:
    """alice founds #general; bob and carol join through her: links b-a and c-a only."""
    net = SimNetwork(seed, ["alice", "bob", "carol"])
    general = net.create_channel("alice", "general")
    net.join("bob", general)
    net.join("carol", general)
    net.wait_for(lambda: net.synced("bob", general) and net.synced("carol", general),
                 what="both to join #general")
    net.run_until_quiet()
    return net, general


def _dm(net: SimNetwork, sender: str, to: str, text: str) -> dict[str, object]:
    rid = 10_000 + len(net.answers)
    net.request(sender, DmRequested(rid, net.did(to), text, net.wall_ms(sender)))
    answer = net.answers[rid]
    assert answer.error is None and answer.result is not None, answer.error
    return answer.result


def test_a_dm_travels_through_a_shared_member_who_cannot_read_it() -> None:
    seed = seed_from_env(161)
    net, _ = _world(seed)
    seen: list[bytes] = []  # every relayed body alice's links carried
    decoders: dict[tuple[str, int], FrameDecoder] = {}

    def watch(name: str, link_id: int, data: bytes) -> None:
        decoder = decoders.setdefault((name, link_id), FrameDecoder())
        try:
            frames = decoder.feed(data)
        except Exception:  # the handshake bytes of a link we started watching late
            return
        seen.extend(f.body for f in frames if isinstance(f, Relay))

    net.on_transmit = watch
    first = _dm(net, "bob", "carol", "secret for carol")
    channel = first["channel"]
    assert isinstance(channel, bytes)
    net.wait_for(lambda: channel in net.core("carol").hub.channels
                 and ["secret for carol"] == [m.text for m in net.history("carol", channel)],
                 what="carol to read bob's DM")
    reply = _dm(net, "carol", "bob", "hi bob")
    assert reply["channel"] == channel and not reply["new"]
    net.wait_for(lambda: [m.text for m in net.history("bob", channel)]
                 == ["secret for carol", "hi bob"], what="bob to read the reply")
    net.run_until_quiet()
    # never a link between bob and carol: everything went through alice
    assert ("bob", "carol") not in net.ever_linked, f"seed={seed}"
    assert seen, f"seed={seed}: nothing was relayed"
    # alice holds neither the channel nor anything that opens it
    alice = net.core("alice")
    assert channel not in alice.hub.channels, f"seed={seed}"
    assert all(b"secret for carol" not in body and b"hi bob" not in body for body in seen)
    # the peers' receipts: both know the other holds their message
    bob = net.core("bob").hub
    state = bob.channels[channel]
    mine = max(state.envs[i].seq for i in state.log
               if state.envs[i].author == net.did("bob"))
    assert bob.dm_relay.delivered(channel, mine), f"seed={seed}"
    assert "member" == net.core("carol").hub.channels[channel].key_status()


def test_what_a_relay_carries_is_sealed_to_the_recipient() -> None:
    """The relayed offer holds the invite (a capability): only carol's key opens it."""
    seed = seed_from_env(162)
    net, _ = _world(seed)
    bodies: list[tuple[str, Relay]] = []
    decoders: dict[tuple[str, int], FrameDecoder] = {}

    def watch(name: str, link_id: int, data: bytes) -> None:
        decoder = decoders.setdefault((name, link_id), FrameDecoder())
        try:
            bodies.extend((name, f) for f in decoder.feed(data) if isinstance(f, Relay))
        except Exception:
            return

    net.on_transmit = watch
    _dm(net, "bob", "carol", "x")
    net.run_until_quiet()
    assert any(f.target == net.did("carol") for _, f in bodies)
    for _, frame in bodies:
        if frame.target != net.did("carol"):
            continue
        for name in ("alice", "bob"):
            try:
                open_from(net.node(name).identity, frame.origin, frame.id, frame.body)
            except RelayError:
                continue
            raise AssertionError(f"{name} opened a relayed item for carol (seed={seed})")
        assert open_from(net.node("carol").identity, frame.origin, frame.id, frame.body)
