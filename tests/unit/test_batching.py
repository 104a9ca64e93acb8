"""The write batcher (core.batching) on its own: ticks, cork, seal, linger, backoff."""

from __future__ import annotations

from p2pchat.core.batching import (
    CORK_MAX_DELAY,
    CORK_MAX_TURNS,
    CORK_QUIET_AFTER_SEAL,
    FLUSH,
    LINGER_BACKOFF,
    LINGER_POLL,
    MAX_LINGER,
    SEAL,
    Action,
    WriteBatcher,
)

T0 = 100.0


def _ticks(b: WriteBatcher, now: float, lagging: bool = False, limit: int = 64
           ) -> list[Action]:
    """Fire every deadline due at ``now`` (the loop's next iterations at one instant)."""
    actions: list[Action] = []
    for _ in range(limit):
        due = b.deadline()
        if due is None or due > now:
            return actions
        actions += b.on_timer(now, lagging)
    raise AssertionError("the batcher kept asking for ticks")


def test_a_lone_post_is_sealed_at_once_and_its_push_leaves_two_ticks_later() -> None:
    b = WriteBatcher()
    assert b.post(T0, lagging=False) is False, "a sender waiting for answers is not slowed"
    b.wrote(T0)
    assert b.deadline() == T0, "asks for the next turn"
    assert [] == b.on_timer(T0, False), "the first look always waits one more tick"
    assert [FLUSH] == b.on_timer(T0, False)
    assert b.deadline() is None


def test_posts_of_one_turn_after_the_first_are_batched_and_sealed_together() -> None:
    b = WriteBatcher()
    assert b.post(T0, False) is False
    b.wrote(T0)
    for _ in range(4):
        assert b.post(T0, False) is True
        b.wrote(T0)
    actions = _ticks(b, T0)
    assert actions.count(SEAL) == 1 and actions[-1] == FLUSH, actions
    assert actions.index(SEAL) < actions.index(FLUSH), "sealed before the push"


def test_a_post_while_a_peer_lags_is_batched_and_the_seal_lingers() -> None:
    b = WriteBatcher()
    assert b.post(T0, lagging=True) is True
    b.wrote(T0)
    assert SEAL not in _ticks(b, T0, lagging=True), "lingers while posts came"
    assert b.deadline() == T0 + LINGER_POLL
    now = T0 + LINGER_POLL
    assert b.post(now, lagging=True) is True, "a seal is pending: the post joins it"
    b.wrote(now)
    actions = _ticks(b, now, lagging=True)
    assert SEAL not in actions, "a post joined: it lingers again"
    now += LINGER_POLL
    actions = _ticks(b, now, lagging=True)  # nothing new: sealed
    assert SEAL in actions


def test_the_linger_ends_at_max_linger_however_many_posts_come() -> None:
    b = WriteBatcher()
    now = T0
    assert b.post(now, True)
    b.wrote(now)
    sealed_at = None
    while sealed_at is None and now < T0 + 10 * MAX_LINGER:
        if SEAL in _ticks(b, now, lagging=True):
            sealed_at = now
            break
        now = b.deadline() or now
        b.post(now, True)
        b.wrote(now)
    assert sealed_at is not None and sealed_at <= T0 + MAX_LINGER + LINGER_POLL


def test_a_linger_that_gained_nothing_turns_lag_batching_off_for_a_while() -> None:
    b = WriteBatcher()
    assert b.post(T0, True)
    b.wrote(T0)
    _ticks(b, T0, lagging=True)  # lingers
    now = T0 + LINGER_POLL
    assert SEAL in _ticks(b, now, lagging=True), "nothing joined: sealed"
    _ticks(b, now)
    later = now + LINGER_BACKOFF / 2
    assert b.post(later, lagging=True) is False, "backoff: a lagging peer makes no post wait"
    b.wrote(later)
    _ticks(b, later)
    after = now + LINGER_BACKOFF + 0.001
    assert b.post(after, lagging=True) is True, "the backoff is over"


def test_the_cork_waits_for_quiet_ticks_after_a_seal() -> None:
    b = WriteBatcher()
    b.post(T0, False)
    b.wrote(T0)
    b.post(T0, False)  # batched
    b.wrote(T0)
    actions: list[Action] = []
    looks = 0
    while FLUSH not in actions:
        actions += b.on_timer(T0, False)
        looks += 1
    assert actions == [SEAL, FLUSH]
    assert looks >= CORK_QUIET_AFTER_SEAL + 1


def test_the_cork_gives_up_after_max_turns_or_max_delay() -> None:
    b = WriteBatcher()
    b.wrote(T0)
    for turn in range(CORK_MAX_TURNS - 1):  # a write every tick: the burst goes on
        assert [] == b.on_timer(T0, False), turn
        b.wrote(T0)
    assert [FLUSH] == b.on_timer(T0, False), "at most CORK_MAX_TURNS ticks"
    b.wrote(T0)
    assert [] == b.on_timer(T0, False)
    b.wrote(T0)
    assert [FLUSH] == b.on_timer(T0 + CORK_MAX_DELAY, False), "at most CORK_MAX_DELAY"


def test_lag_matters_only_where_it_changes_a_decision() -> None:
    b = WriteBatcher()
    assert b.lag_matters(T0, posting=True), "the first post of a turn: lag would batch it"
    assert not b.lag_matters(T0, posting=False), "no seal pending: a timer ignores lag"
    b.post(T0, False)
    b.wrote(T0)
    assert not b.lag_matters(T0, posting=True), "the turn is open: batched anyway"
    b.post(T0, False)  # batched: a seal is pending
    b.wrote(T0)
    assert b.lag_matters(T0, posting=False), "a pending seal lingers while a peer lags"
