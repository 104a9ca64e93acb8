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
    env = member.publish_prekey(record, T0, kit.rb)
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
        member._author({"op": "prekey", "record": record, "ts": T0}, change, T0, kit.rb,
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
    from p2pchat.channel.envelope import decode_envelope

    deliver(observer, [decode_envelope(r) for r in reversed(raws)])
    assert member.prekeys == observer.prekeys
    restored = ChannelState.restore(observer.channel_id, observer.identity, kit.keys,
                                    kit.epoch, observer.snapshot(), dict(observer.raw))
    assert observer.prekeys == restored.prekeys
