"""Paging through a channel's history by cursor (``ChannelState.history_page``).

A cursor is a message id and stands for that message's position in display order
(design.md §10.6), so a walk that passes each page's edge id on neither skips nor
repeats a message: not with any page size, not while messages arrive, not when a
hostile author reuses someone's id.
"""

from __future__ import annotations

import pytest

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import ChannelState, MessageView
from tests.unit.channelkit import T0, Forger, Kit, change_of, deliver
from tests.unit.modkit import World

Key = tuple[str, str]  # (id, author): unique unless an author reuses their own id


def keys(views: list[MessageView]) -> list[Key]:
    return [(v.id, v.author) for v in views]


def walk_back(state: ChannelState, size: int, between: list[Envelope] | None = None,
              with_hidden: bool = False) -> list[Key]:
    """Newest to oldest in pages of ``size``; delivers one of ``between`` after each page.
    The result is in display order."""
    pages: list[list[MessageView]] = []
    before: str | None = None
    while True:
        page = state.history_page(size, before=before, with_hidden=with_hidden)
        assert len(page) <= size or len({v.id for v in page}) < len(page), "widened only by twins"
        if not page:
            break
        pages.append(page)
        before = page[0].id
        if between:
            deliver(state, [between.pop(0)])
        if len(page) < size:
            break
    return [k for page in reversed(pages) for k in keys(page)]


def walk_forward(state: ChannelState, size: int, between: list[Envelope] | None = None
                 ) -> list[Key]:
    """From the oldest message on, in pages of ``size`` (a forward walk starts from a
    message id: here the oldest's, which no other post shares)."""
    oldest = state.history_page(1, after=None, before=state.history()[1].id)
    out = keys(oldest)
    after: str | None = oldest[0].id
    while after is not None:
        page = state.history_page(size, after=after)
        if not page:
            break
        out += keys(page)
        after = page[-1].id
        if between:
            deliver(state, [between.pop(0)])
        if len(page) < size:
            break
    return out


def busy_channel(n: int = 30) -> tuple[Kit, ChannelState, ChannelState, list[Envelope]]:
    """alice and bob post alternately; returns (kit, alice's replica, a reader, genesis+posts)."""
    k = Kit(7)
    alice, bob = k.identity("alice"), k.identity("bob")
    a, genesis = k.found(alice, "general", T0)
    b = k.replica(a.channel_id, bob, genesis)
    envs = [genesis]
    for i in range(n):
        writer, other = (a, b) if i % 3 else (b, a)
        env, _ = writer.post(f"m{i}", T0 + 1000 + 100 * i, k.rb)
        deliver(other, [env])
        envs.append(env)
    reader = k.replica(a.channel_id, k.identity("reader"))
    deliver(reader, envs)
    return k, a, reader, envs


@pytest.mark.parametrize("size", [1, 2, 7, 30, 100])
def test_backward_and_forward_walks_give_the_whole_history_in_order(size: int) -> None:
    _, _, reader, _ = busy_channel()
    everything = keys(reader.history())
    assert 30 == len(everything)
    assert everything == walk_back(reader, size)
    assert everything == walk_forward(reader, size)


def test_pages_are_the_newest_before_and_the_oldest_after_the_cursor() -> None:
    _, _, reader, _ = busy_channel()
    ids = [v.id for v in reader.history()]
    assert ids[-5:] == [v.id for v in reader.history_page(5)]
    assert ids[10:15] == [v.id for v in reader.history_page(5, before=ids[15])]
    assert ids[16:21] == [v.id for v in reader.history_page(5, after=ids[15])]
    assert ids[:3] == [v.id for v in reader.history_page(5, before=ids[3])]
    assert [] == reader.history_page(5, before=ids[0])
    assert [] == reader.history_page(5, after=ids[-1])
    assert reader.history()[-5:] == reader.history_page(5)  # the same views as history


@pytest.mark.parametrize("backward", [True, False])
def test_walks_neither_skip_nor_repeat_while_messages_arrive(backward: bool) -> None:
    """New messages sort after the walk's start; a late one (its author saw only the
    genesis, so it sorts by its clock among the old ones) lands on either side of the
    cursor. Every message there at the start comes exactly once, in display order."""
    k, a, reader, envs = busy_channel()
    dave = k.replica(a.channel_id, k.identity("dave"), envs[0])
    late = [dave.post(f"late{i}", T0 + 1050 + 700 * i, k.rb).envelope for i in range(4)]
    new = [a.post(f"new{i}", T0 + 100_000 + i, k.rb).envelope for i in range(4)]
    arriving = [p for pair in zip(late, new, strict=True) for p in pair]
    before = keys(reader.history())
    walked = walk_back(reader, 3, arriving) if backward \
        else walk_forward(reader, 3, arriving)
    assert [] == arriving, "the walk took fewer pages than messages arrived"
    after = keys(reader.history())
    assert len(walked) == len(set(walked)), "a message was repeated"
    assert set(before) <= set(walked), "a message was skipped"
    assert [m for m in after if m in set(walked)] == walked, "out of display order"


def _twin_world() -> tuple[ChannelState, str]:
    """mallory copies alice's id in a post concurrent with it, so two posts share the
    id, and the copy sorts before the original with a message between them."""
    k = Kit(11)
    alice, bob, mallory = (k.identity(n) for n in ("alice", "bob", "mallory"))
    a, genesis = k.found(alice, "general", T0)
    b = k.replica(a.channel_id, bob, genesis)
    p1, _ = a.post("one", T0 + 1000, k.rb)
    deliver(b, [p1])
    p2, _ = b.post("two", T0 + 2000, k.rb)
    deliver(a, [p2])
    p3, m3 = a.post("original", T0 + 3000, k.rb)
    forger = Forger(k, mallory, a.channel_id, [change_of(genesis, k.key)])
    copy, _ = forger.post([genesis.id], "impostor", T0 + 3000, msg_id=m3)
    carol = k.replica(a.channel_id, k.identity("carol"), genesis)
    deliver(carol, [p1])
    p4, _ = carol.post("between", T0 + 3000, k.rb)  # saw p1 only: a smaller depth
    p5, _ = a.post("after", T0 + 4000, k.rb)
    reader = k.replica(a.channel_id, k.identity("reader"))
    deliver(reader, [genesis, p1, p2, p3, copy, p4, p5])
    texts = [v.text for v in reader.history()]
    assert texts.index("impostor") < texts.index("between") < texts.index("original")
    return reader, m3


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_reused_id_neither_hides_a_post_nor_loops_a_walk(size: int) -> None:
    reader, _ = _twin_world()
    everything = keys(reader.history())
    assert 6 == len(everything)
    assert everything == walk_back(reader, size)
    assert everything == walk_forward(reader, size)


def test_a_reused_id_as_cursor_means_before_all_or_after_all_of_its_posts() -> None:
    reader, m3 = _twin_world()
    texts = [v.text for v in reader.history()]
    cut = texts.index("impostor")
    assert texts[:cut] == [v.text for v in reader.history_page(10, before=m3)]
    assert ["after"] == [v.text for v in reader.history_page(10, after=m3)]


def test_unknown_cursor_and_both_cursors_are_refused() -> None:
    _, _, reader, _ = busy_channel(3)
    ids = [v.id for v in reader.history()]
    with pytest.raises(ValueError, match="no message 01ARZ3NDEKTSV4RRFFQ69G5FAV in this"):
        reader.history_page(5, before="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(ValueError, match="no message"):
        reader.history_page(5, after="01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(ValueError, match="before or after, not both"):
        reader.history_page(5, before=ids[2], after=ids[0])


def test_a_hidden_message_is_left_out_but_still_works_as_a_cursor() -> None:
    w = World(5, ("owner", "user"))
    w.post("o1", "owner")
    w.sync_all()
    w.post("u1", "user")
    w.sync_all()
    w.act("mute", "owner", "mute", "user")
    w.sync_all()
    w.post("u2", "user")  # written after the mute: hidden
    w.sync_all()
    w.post("o2", "owner")
    w.sync_all()
    owner = w.replicas["owner"]
    assert ["o1", "u1", "o2"] == [v.text for v in owner.history()]
    assert 3 == owner.message_count()
    hidden = w.posts["u2"]
    assert ["o1", "u1"] == [v.text for v in owner.history_page(5, before=hidden)]
    assert ["o2"] == [v.text for v in owner.history_page(5, after=hidden)]
    shown = owner.history_page(5, with_hidden=True)
    assert [("u2", True)] == [(w.labels.get(v.id, "u2"), bool(v.hidden)) for v in shown
                              if v.hidden]
    assert keys(owner.history(with_hidden=True)) == walk_back(owner, 1, with_hidden=True)
