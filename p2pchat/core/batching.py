"""The write-batching policy: when app writes are sealed and when their pushes leave.

Theory of operation
-------------------
A lone envelope fills most of a QUIC packet, aioquic costs ~50 µs of CPU per packet and
the receiver pays per frame and per envelope. So the writes of a burst (a script calling
``send`` in a loop, pipelined control requests, concurrent ``send`` calls) should share
frames, packets and envelopes, while a sender that waits for each answer must never be
slowed. :class:`WriteBatcher` decides both, from the writes it is told about, the clock,
and one fact about the transport it is given (``lagging``: some peer has not
acknowledged what we sent it for longer than its round trip). It is a timer machine:
it holds no I/O and returns what the node core must do (:data:`Action`) when its
deadline passes.

*Turns.* The runtime's event loop runs in turns; in the core a turn ends at a
**tick**: a deadline equal to the time it was asked for (``next turn``), which the
runtime's timer fires on the loop's next iteration and the simulator after the other
events of the same instant. Every write asks for a tick.

*Cork (pushes).* The live push of app writes is held (the hub's ``hold``) until the
burst is over: the first tick with no new write since the one before (three such ticks
in a row after sealed posts were answered, ``CORK_QUIET_AFTER_SEAL``: an app that
waited for its answers writes again a tick or two later), or CORK_MAX_TURNS ticks, or
CORK_MAX_DELAY. Then :data:`FLUSH`. A single write waits two ticks (microseconds).

*Seal (posts).* A post is *batched* (queued, to be sealed with others into one
envelope) when another post came in the same turn, when a seal is pending, or when a
peer lags (unless the linger backoff below is on); otherwise it is sealed and answered
at once. The seal (:data:`SEAL`) comes at the next tick; while a peer lags and posts
keep coming it *lingers* (looks again every LINGER_POLL, at most MAX_LINGER), so the
posts that arrive meanwhile join its envelope: a receiver that is behind gains nothing
from more envelopes sooner, and each costs it a verification. A linger that gained no
post means the app waits for each answer; then lagging peers make no post wait for
LINGER_BACKOFF (such a sender loses one LINGER_POLL per LINGER_BACKOFF). A burst whose
posts are not sealed when the cork would flush flushes after the seal.

design.md §5 and §10.2 have the measurements behind the constants.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

#: A burst of app writes holds its live push at most this many ticks…
CORK_MAX_TURNS = 16
#: …and at most this long, in seconds (a busy loop's turns are long: taking the
#: acknowledgements of ten links, say).
CORK_MAX_DELAY = 0.002
#: Quiet ticks (no new write) the cork waits for after sealed posts were answered: a
#: sender that waits for each answer writes again within them.
CORK_QUIET_AFTER_SEAL = 3
#: While a peer lags, a seal waits up to this long (s) for more posts to join it.
MAX_LINGER = 0.004
#: How often a lingering seal looks again, in seconds.
LINGER_POLL = 0.001
#: After a linger that gained no post (the app waits for each answer), lagging peers do
#: not make posts wait for this long, in seconds.
LINGER_BACKOFF = 0.05

#: Seal the queued posts into envelopes and answer them (their push stays held).
SEAL: Literal["seal"] = "seal"
#: Push what held writes left waiting: the burst is over.
FLUSH: Literal["flush"] = "flush"
Action: TypeAlias = Literal["seal", "flush"]


class WriteBatcher:
    """The cork/linger/seal machine of one node. See the module docstring."""

    def __init__(self) -> None:
        #: the current turn made a post (it ends at the next tick)
        self._turn_open = False
        # the cork: held pushes wait for the burst to end
        self._corked = False
        self._cork_tick = False  # the cork looks at the next tick
        self._cork_turns = 0
        self._cork_seen = -1
        self._writes_made = 0
        self._cork_until = 0.0
        self._cork_quiet = 0
        self._cork_quiet_needed = 1
        # the seal: batched posts wait to be sealed together
        self._seal_pending = False
        self._seal_at: float | None = None  # a tick (the time it was asked) or a poll
        self._sends_made = 0
        self._seal_seen = -1
        self._linger_base = 0
        self._lingered = False
        self._linger_until: float | None = None
        self._linger_useless_until = 0.0
        #: the cork's burst ended while its posts were unsealed: flush after the seal
        self._flush_after_seal = False
        #: the earliest tick asked for since the last one fired
        self._tick_at: float | None = None

    # --- inputs ------------------------------------------------------------------------

    def post(self, now: float, lagging: bool) -> bool:
        """A post is about to be written: whether it is batched (queued for the seal)
        rather than sealed and answered at once. Call :meth:`wrote` after it."""
        if not self._turn_open:
            self._turn_open = True
            self._ask_tick(now)
            batch = self._seal_pending or (now >= self._linger_useless_until and lagging)
        else:
            batch = True
        if batch:
            self._sends_made += 1
            if not self._seal_pending:
                self._seal_pending = True
                self._seal_seen = -1  # the first look always counts as progress
                self._seal_at = now
                self._ask_tick(now)
        return batch

    def wrote(self, now: float) -> None:
        """An app write (post, edit, reaction, moderation) was made with its push held."""
        self._writes_made += 1
        if not self._corked:
            self._corked = True
            self._cork_turns = 0
            self._cork_seen = -1  # the first look always waits one more tick
            self._cork_until = now + CORK_MAX_DELAY
            self._cork_quiet, self._cork_quiet_needed = 0, 1
            self._cork_tick = True
            self._ask_tick(now)

    def deadline(self) -> float | None:
        """When :meth:`on_timer` wants to run next (None: nothing pending)."""
        times = [t for t in (self._tick_at, self._seal_at) if t is not None]
        return min(times) if times else None

    def lag_matters(self, now: float, posting: bool) -> bool:
        """Whether ``lagging`` changes what :meth:`post` (``posting``) or :meth:`on_timer`
        would do now; when not, a caller may pass False without measuring it."""
        if posting:
            return not self._turn_open and not self._seal_pending \
                and now >= self._linger_useless_until
        return self._seal_pending

    def on_timer(self, now: float, lagging: bool) -> list[Action]:
        """The deadline passed: end the turn, look at the cork, then the seal."""
        due = self.deadline()
        if due is None or due > now:
            return []
        actions: list[Action] = []
        tick = self._tick_at is not None and self._tick_at <= now
        if tick:
            self._tick_at = None
            self._turn_open = False
            if self._cork_tick:
                self._cork_tick = False
                actions += self._uncork(now)
        if self._seal_at is not None and self._seal_at <= now:
            self._seal_at = None
            actions += self._seal(now, lagging)
        return actions

    # --- the cork and the seal ---------------------------------------------------------

    def _ask_tick(self, now: float) -> None:
        if self._tick_at is None or now < self._tick_at:
            self._tick_at = now

    def _uncork(self, now: float) -> list[Action]:
        grew, self._cork_seen = self._writes_made != self._cork_seen, self._writes_made
        self._cork_turns += 1
        self._cork_quiet = 0 if grew else self._cork_quiet + 1
        if self._cork_quiet < self._cork_quiet_needed and self._cork_turns < CORK_MAX_TURNS \
                and now < self._cork_until:
            self._cork_tick = True
            self._ask_tick(now)
            return []
        if self._seal_pending:  # the burst's posts are not sealed yet: flush after them
            self._flush_after_seal = True
            return []
        self._corked = False
        return [FLUSH]

    def _seal(self, now: float, lagging: bool) -> list[Action]:
        if self._linger_until is None:
            self._linger_until = now + MAX_LINGER
            self._linger_base, self._lingered = self._sends_made, False
        progress, self._seal_seen = self._sends_made != self._seal_seen, self._sends_made
        if progress and now < self._linger_until and lagging:
            self._lingered = True
            self._seal_at = now + LINGER_POLL
            return []
        if self._lingered and self._sends_made == self._linger_base:
            # nothing joined: the app waits for each answer; stop making it wait a while
            self._linger_useless_until = now + LINGER_BACKOFF
        self._linger_until = None
        self._seal_pending = False
        actions: list[Action] = [SEAL]
        # the answers just went out: an app that waited for them writes again a tick or
        # two later, so the cork waits for three quiet ticks before it flushes
        self._cork_quiet, self._cork_quiet_needed = 0, CORK_QUIET_AFTER_SEAL
        if self._flush_after_seal:
            self._flush_after_seal = False
            actions += self._uncork(now)
        return actions
