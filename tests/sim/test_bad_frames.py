"""A frame with a bad envelope in it: the link closes, and the good envelopes before
the bad one stay applied, stored and forwarded (nothing half-applied is forgotten)."""

from __future__ import annotations

from p2pchat.core.events import CloseLink, DataReceived, PersistEnvelopes
from p2pchat.errors import CloseCode
from p2pchat.testing import SimNetwork, seed_from_env
from p2pchat.wire import Envelopes, encode_frame


def test_good_envelopes_before_a_forged_one_are_kept() -> None:
    seed = seed_from_env(51)
    net = SimNetwork(seed, ["a", "b"])
    channel = net.create_channel("a", "frames")
    net.join("b", channel)
    net.wait_for(lambda: net.synced("b", channel), what="b to sync")
    net.run_until_quiet()
    b = net.core("b")
    link_id = next(lid for lid, lc in b.hub._links.items() if channel in lc.shared)
    topic = b.hub._links[link_id].by_channel[channel]
    # two posts made on a's channel state directly, so a's core never pushes them itself
    state_a = net.core("a").hub.channels[channel]
    env1, _ = state_a.post("one", net.wall_ms("a"), net.core("a").hub._randbytes)
    env2, _ = state_a.post("two", net.wall_ms("a"), net.core("a").hub._randbytes)
    forged = bytearray(state_a.raw[env2.id])
    forged[-80] ^= 0x01  # a ciphertext byte under the signature
    genesis = state_a.raw[state_a.log[0]]  # known to b: skipped as a duplicate
    frame = Envelopes(topic=topic, items=(genesis, state_a.raw[env1.id], bytes(forged)))
    effects = net.request("b", DataReceived(link_id, encode_frame(frame)))
    stored = [env_id for e in effects if isinstance(e, PersistEnvelopes) for env_id, _ in e.items]
    assert [env1.id] == stored, f"seed={seed}"
    closes = [e for e in effects if isinstance(e, CloseLink)]
    assert [CloseCode.PROTOCOL_ERROR] == [e.code for e in closes], f"seed={seed}"
    assert "signature" in closes[0].reason
    assert "one" in [m.text for m in net.history("b", channel)]
