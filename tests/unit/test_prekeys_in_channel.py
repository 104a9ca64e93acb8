"""Published prekeys: members put signed X25519 prekeys in the channel's clear epoch."""

from __future__ import annotations

import pytest

from p2pchat.channel.keys import PREKEY_TTL_MS, make_prekey
from p2pchat.channel.state import ChannelState, Status, clear_key, epoch_id_for
from tests.unit.channelkit import T0, Kit, deliver, sync_into


def _pair(seed: int) -> tuple[Kit, ChannelState, ChannelState]:
    kit = Kit(seed)
    owner, genesis = kit.found(kit.identity("owner"))
    member = kit.replica(owner.channel_id, kit.identity("member"), genesis)
    return kit, owner, member


def test_a_published_prekey_reaches_every_replica_in_the_clear_epoch() -> None:
    kit, owner, member = _pair(1)
    record, _ = make_prekey(member.identity, kit.rb, T0)
    env = member.publish_prekey(record, T0, kit.rb).envelope
    assert epoch_id_for(clear_key(owner.channel_id)) == env.epoch == owner.clear_epoch
    assert env.epoch != owner.current_epoch
    sync_into(owner, member)
    prekey = owner.prekey_of(member.identity.did, T0)
    assert prekey is not None and prekey == member.prekey_of(member.identity.did, T0)
    assert owner.prekey_of(member.identity.did, T0 + PREKEY_TTL_MS) is None  # expired
    assert owner.prekey_of(owner.identity.did, T0) is None
    # a newer one is preferred
    newer, _ = make_prekey(member.identity, kit.rb, T0 + 1000)
    member.publish_prekey(newer, T0 + 1000, kit.rb)
    sync_into(owner, member)
    latest = owner.prekey_of(member.identity.did, T0 + 1000)
    assert latest is not None and latest.expires_ms == T0 + 1000 + PREKEY_TTL_MS


def test_publishing_someone_elses_prekey_is_refused_locally_and_invalid_remotely() -> None:
    kit, owner, member = _pair(2)
    record, _ = make_prekey(owner.identity, kit.rb, T0)
    with pytest.raises(ValueError, match="only its own"):
        member.publish_prekey(record, T0, kit.rb)
    # a hostile client writes it anyway: every replica records it as invalid
    change = member.authoring.put_entry("keys", "prekey:" + "00" * 16, {"record": record})
    with pytest.raises(RuntimeError, match="prekey of another member"):
        member.writer.author({"op": "prekey", "record": record, "ts": T0}, change, T0, kit.rb,
                       clear=True)
    sync_into(owner, member)
    (bad,) = [m for m in owner.envs.values() if m.author == member.identity.did]
    assert (Status.INVALID, "prekey of another member") == (bad.status, bad.why)
    assert owner.prekey_of(member.identity.did, T0) is None
    assert owner.prekey_of(owner.identity.did, T0) is None


def test_prekeys_survive_a_snapshot_and_any_delivery_order() -> None:
    kit, owner, member = _pair(3)
    for i in range(3):
        record, _ = make_prekey(member.identity, kit.rb, T0 + i)
        member.publish_prekey(record, T0 + i, kit.rb)
    raws = [member.raw[i] for i in member.log]
    observer = kit.replica(owner.channel_id, kit.identity("observer"))

    deliver(observer, [observer.decode(r) for r in reversed(raws)])
    assert member.prekeys == observer.prekeys
    restored = ChannelState.restore(observer.channel_id, observer.identity, kit.keys,
                                    kit.epoch, observer.snapshot(), dict(observer.raw))
    assert observer.prekeys == restored.prekeys


def test_a_started_node_publishes_one_prekey_per_channel_and_renews_it() -> None:
    import random

    from p2pchat.core import NodeConfig, NodeCore
    from p2pchat.core.channels import PREKEY_RENEW_MS
    from p2pchat.core.events import (
        ChannelCreateRequested,
        PersistEnvelopes,
        PersistPrekey,
        Started,
        TimerExpired,
    )
    from tests.unit.corenet import make_identity

    core = NodeCore(make_identity(5, "n"), NodeConfig(), random.Random(5))
    created = core.handle(ChannelCreateRequested(1, "keys", T0), 10.0)
    assert not [e for e in created if isinstance(e, PersistPrekey)]  # off until started
    started = core.handle(Started(("127.0.0.1", 7445), T0), 10.0)
    kept = [e for e in started if isinstance(e, PersistPrekey)]
    assert 1 == len(kept)
    published = [e for e in started if isinstance(e, PersistEnvelopes)]
    assert 1 == len(published)
    assert started.index(kept[0]) < started.index(published[0])  # private key first
    (state,) = core.hub.channels.values()
    me = core.identity.did
    first = state.prekey_of(me, T0)
    assert first is not None and first.prekey_id == kept[0].prekey_id
    assert [] == [e for e in core.handle(TimerExpired(), 11.0)
                  if isinstance(e, (PersistPrekey, PersistEnvelopes))]  # nothing due
    # five and a bit days later the prekey is renewed and published again
    later = 10.0 + (PREKEY_TTL_MS - PREKEY_RENEW_MS) / 1000 + 1
    renewed = core.handle(TimerExpired(), later)
    assert 1 == len([e for e in renewed if isinstance(e, PersistPrekey)])
    second = state.prekey_of(me, T0 + int((later - 10.0) * 1000))
    assert second is not None and second.prekey_id != first.prekey_id
    assert first.prekey_id in core.hub.prekey_privates  # still valid: kept
    # a restart with the stored prekeys publishes nothing new
    again = NodeCore(core.identity, NodeConfig(), random.Random(6))
    restarted = again.handle(Started(("127.0.0.1", 7445), T0,
                                     prekeys=((kept[0].record, kept[0].private),)), 10.0)
    assert not [e for e in restarted if isinstance(e, PersistPrekey)]
