"""What running nodes do for each other's keys (ChannelHub.key_work) with real prekeys
and a week of (simulated) absence: shares for expired prekeys, key requests answered by
any member, and nothing for a banned member who asks."""

from __future__ import annotations

import random

import pytest

from p2pchat.channel.keys import PREKEY_TTL_MS
from p2pchat.channel.state import ChannelState, Status
from p2pchat.core.events import (
    ChannelAnswer,
    ChannelCreateRequested,
    JoinRequested,
    ModRequested,
    SendRequested,
    Started,
)
from tests.unit.corenet import Net

WALL = 1_800_000_000_000
DAY_S = 24 * 3600


def _wall(net: Net) -> int:
    return WALL + int((net.now - 1000.0) * 1000)


def _world(names: list[str]) -> tuple[Net, bytes]:
    net = Net()
    for i, name in enumerate(names):
        net.add(name, seed=i + 1)
        net.handle(name, Started(net.address_of[name], _wall(net)))
    created = net.handle(names[0], ChannelCreateRequested(1, "keys", _wall(net)))
    answer = next(e for e in created if isinstance(e, ChannelAnswer))
    assert answer.result is not None
    channel = answer.result["channel"]
    assert isinstance(channel, bytes)
    for i, name in enumerate(names[1:]):
        invite = net.cores[names[0]].hub.invite_for(channel, _wall(net))
        net.handle(name, JoinRequested(10 + i, channel, "keys", (), _wall(net), invite.cap,
                                       invite.grant, invite.grant_signature, invite.genesis))
        net.establish(name, names[0])
    net.settle()
    return net, channel


def _state(net: Net, name: str, channel: bytes) -> ChannelState:
    return net.cores[name].hub.channels[channel]


def _send(net: Net, name: str, channel: bytes, text: str) -> ChannelAnswer:
    rid = 1000 + len(net.effects[name])
    effects = net.handle(name, SendRequested(rid, channel, text, _wall(net)))
    return next(e for e in effects if isinstance(e, ChannelAnswer) and e.request_id == rid)


def _texts(net: Net, name: str, channel: bytes) -> list[str]:
    return [m.text for m in _state(net, name, channel).history()]


def _sever_all(net: Net, name: str) -> None:
    for link_id in net.open_links(name):
        net.sever((name, link_id))
    net.settle()


def test_a_member_back_after_its_prekey_expired_is_served_a_share() -> None:
    net, channel = _world(["owner", "bob"])
    assert "member" == _state(net, "bob", channel).key_status()
    assert _send(net, "bob", channel, "bob before").error is None
    net.settle()
    _sever_all(net, "bob")
    net.run_until(net.now + PREKEY_TTL_MS / 1000 + DAY_S)  # bob's published prekey expires
    owner = _state(net, "owner", channel)
    assert owner.prekey_of(net.did("bob"), _wall(net)) is None
    assert _send(net, "owner", channel, "while bob was away").error is None  # a rotation
    epoch = owner.group.send_epoch(_wall(net))
    assert epoch is not None and net.did("bob") not in owner.group.view().holders[epoch]
    net.establish("bob", "owner")
    net.settle()
    bob = _state(net, "bob", channel)
    assert ["bob before", "while bob was away"] == _texts(net, "bob", channel)
    assert bob.sealed_count() == 0 and epoch in bob.group.secrets


def test_any_member_answers_a_key_request_and_a_banned_one_gets_nothing() -> None:
    net, channel = _world(["owner", "mia", "bob", "xena"])
    net.establish("bob", "mia")
    net.settle()
    for name in ("owner", "mia", "bob", "xena"):
        _sever_all(net, name)  # a week with nobody online (no keepalives to simulate)
    net.run_until(net.now + PREKEY_TTL_MS / 1000 + DAY_S)
    net.establish("mia", "owner")
    net.establish("xena", "owner")
    net.settle()
    rid = 5000
    net.handle("owner", ModRequested(rid, channel, "ban", _wall(net), net.did("xena")))
    assert _send(net, "owner", channel, "after the ban").error is None
    net.settle()
    mia = _state(net, "mia", channel)
    assert ["after the ban"] == _texts(net, "mia", channel)
    xena = _state(net, "xena", channel)
    assert "removed" == xena.key_status() and "after the ban" not in _texts(net, "xena", channel)
    # the owner goes away; bob comes back to mia only, a plain member who asks nobody to
    # serve it: bob asks with a key request, and mia answers with what bob may have
    _sever_all(net, "owner")
    net.establish("bob", "mia")
    net.settle()
    bob = _state(net, "bob", channel)
    assert "after the ban" in _texts(net, "bob", channel), bob.sealed_epochs()
    assert any(r.did == net.did("bob") for r in mia.group.requests)
    # xena, banned, asks anyway (a hostile client): her request is refused on arrival
    missing = [e for e in mia.group.epochs if e not in xena.group.secrets]
    record = net.cores["xena"].hub.own_prekey
    assert missing and record is not None
    with pytest.raises(RuntimeError, match="banned"):  # her own replica refuses it too
        xena.request_keys(missing, record[0], _wall(net), random.Random(9).randbytes)
    asked = xena.log[-1]
    net.establish("xena", "mia")
    net.settle()
    assert asked not in mia.envs  # mia gives a banned peer no sync at all
    # and should it arrive another way (a server, a forwarder), it is refused there
    mia.receive_bytes(xena.raw[asked], _wall(net))
    assert mia.envs[asked].status is Status.REFUSED
    shares = len(mia.group.shares)
    net.cores["mia"].hub.key_work(mia, _wall(net))
    assert len(mia.group.shares) == shares
    assert not any(r.did == net.did("xena") for r in mia.group.requests)
    assert not set(missing) & set(xena.group.secrets)


def test_an_ephemeral_channel_forgets_old_secrets_but_keeps_what_it_read() -> None:
    from p2pchat.channel.group import EPHEMERAL_WINDOW_MS
    from p2pchat.core.events import ForgetEpochKey, PersistSnapshot, TimerExpired

    net = Net()
    net.add("owner", seed=1)
    net.handle("owner", Started(net.address_of["owner"], _wall(net)))
    created = net.handle("owner", ChannelCreateRequested(1, "fleeting", _wall(net),
                                                         policy="ephemeral"))
    answer = next(e for e in created if isinstance(e, ChannelAnswer))
    assert answer.result is not None and answer.result["policy"] == "ephemeral"
    channel = answer.result["channel"]
    assert isinstance(channel, bytes)
    state = _state(net, "owner", channel)
    first = state.group.send_epoch(_wall(net))
    assert _send(net, "owner", channel, "in the first epoch").error is None
    state.rotate(_wall(net), random.Random(4).randbytes)  # superseded from now on
    assert _send(net, "owner", channel, "in the second").error is None
    hub = net.cores["owner"].hub
    hub._next_sweep = 0
    assert [] == [e for e in hub.sweep_epochs(_wall(net)) if isinstance(e, ForgetEpochKey)]
    net.now += EPHEMERAL_WINDOW_MS / 1000 + 1
    hub._next_sweep = 0
    effects = net.cores["owner"].handle(TimerExpired(), net.now)
    forgotten = [e for e in effects if isinstance(e, ForgetEpochKey)]
    assert [first] == [e.epoch for e in forgotten]
    kinds = [type(e) for e in effects]
    assert kinds.index(PersistSnapshot) < kinds.index(ForgetEpochKey)  # snapshot first
    assert first not in state.group.secrets
    assert ["in the first epoch", "in the second"] == _texts(net, "owner", channel)
