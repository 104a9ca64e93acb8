"""What a replica's call changed comes back from that call (issue 17): the messages to
index and the secrets to persist, never left on the replica for a caller to drain."""

from __future__ import annotations

from p2pchat.channel.state import ChannelState
from tests.unit.test_group_epochs import World, sync


def _pair() -> tuple[World, ChannelState, ChannelState]:
    w = World(17)
    owner = w.found()
    member = w.replica(owner, "member")
    w.admit(owner, member)
    return w, owner, member


def test_writes_return_the_messages_they_change() -> None:
    w, owner, member = _pair()
    posted = owner.post("hello", w.tick(), w.rb)
    assert (posted.envelope, posted.new_id) == tuple(posted)
    assert (posted.new_id,) == posted.changed
    assert () == posted.new_secrets
    edited = owner.edit(posted.new_id, "hello again", w.tick(), w.rb)
    assert ("", (posted.new_id,)) == (edited.new_id, edited.changed)
    sync(owner, member)
    reacted = owner.react(posted.new_id, "👍", True, w.tick(), w.rb)
    assert (posted.new_id,) == reacted.changed


def test_a_rotation_returns_its_secret_once() -> None:
    w, owner, _ = _pair()
    rotated = owner.rotate(w.tick(), w.rb)
    [(epoch, secret)] = rotated.new_secrets
    assert owner.group.secrets[epoch] == secret
    assert () == owner.post("after", w.tick(), w.rb).new_secrets  # not again


def test_receiving_returns_what_it_indexed_and_learnt() -> None:
    w, owner, member = _pair()
    rotated = owner.rotate(w.tick(), w.rb)
    posted = owner.post("news", w.tick(), w.rb)
    got = [member.receive_bytes(owner.raw[i], w.now) for i in owner.log
           if not member.is_known(i)]
    assert [s for r in got for s in r.new_secrets] == list(rotated.new_secrets)
    assert [posted.new_id] == [m for r in got for m in r.changed]
    again = member.receive_bytes(owner.raw[posted.envelope.id], w.now)
    assert (True, [], []) == (again.duplicate, again.changed, again.new_secrets)


def test_a_founded_channel_holds_what_creating_it_made() -> None:
    w = World(18)
    state, _ = ChannelState.create(w.identity("owner"), "fresh", None, w.now, w.rb)
    assert 1 == len(state.group.secrets)  # the first epoch: the hub persists it
    assert () == state.post("first", w.tick(), w.rb).new_secrets  # nothing left over
