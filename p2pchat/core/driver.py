"""The one driver loop: hand an event to a sans-IO machine, carry out its effects in
order, arm its next deadline. Shared by the node runtime, the bootstrap runtime, the
simulator and the tests' networks, so they cannot drift apart.

Theory of operation
-------------------
A machine is anything with ``handle(event, now) -> [effects]`` and
``next_deadline() -> float | None`` (:class:`NodeCore`; the bootstrap server core
through a two-line adapter). :meth:`Driver.dispatch` runs one event: the machine
handles it, :attr:`execute` carries out each effect in order (an executor dispatches
with ``match`` over the closed effect union and ends in ``assert_never``), then the
deadline is re-armed through :attr:`arm` if it changed: an asyncio adapter calls
``loop.call_at``, the simulator notes it in its own queue.

:meth:`Driver.fire` is the timer's event. A machine may ask for its *next turn* with a
deadline equal to the time it was handed (the write batcher's ticks, core.batching);
a deadline *before* the timer that just fired, or more than MAX_TICKS_PER_INSTANT
ticks at one instant, is a timer that never moves on: a runtime would spin. The driver
reports it to :attr:`on_spin` (the simulator and the tests fail; a runtime logs it).

The driver holds no I/O itself; time comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

#: Timers a machine may fire in a row at one instant (its ticks): the write batcher's
#: cork looks at up to 16 turns; more than this is a timer that does not move on.
MAX_TICKS_PER_INSTANT = 64

E_contra = TypeVar("E_contra", contravariant=True)
E = TypeVar("E")
F = TypeVar("F")


class Machine(Protocol[E_contra, F]):
    """A sans-IO state machine: one way in, effects out, one deadline."""

    def handle(self, event: E_contra, now: float, /) -> list[F]: ...

    def next_deadline(self) -> float | None: ...


class Driver(Generic[E, F]):
    """Dispatch events to a machine, execute its effects, keep its timer armed."""

    def __init__(self, machine: Machine[E, F], execute: Callable[[F], None],
                 arm: Callable[[float | None], None], timer_event: Callable[[], E],
                 on_spin: Callable[[str], None]) -> None:
        self.machine = machine
        self.execute = execute
        self.arm = arm
        self.timer_event = timer_event
        self.on_spin = on_spin
        #: the deadline last armed
        self.armed: float | None = None
        #: the armed timer fired: the next deadline is armed even if it is the same
        self._spent = False
        self._ticks = 0

    def dispatch(self, event: E, now: float) -> list[F]:
        """``event`` at ``now``: handle it, carry out its effects, re-arm. Returns them."""
        effects = self.machine.handle(event, now)
        for effect in effects:
            self.execute(effect)
        self.rearm()
        return effects

    def rearm(self) -> None:
        deadline = self.machine.next_deadline()
        if deadline != self.armed or self._spent:
            self.armed, self._spent = deadline, False
            self.arm(deadline)

    def due(self, now: float) -> bool:
        return self.armed is not None and self.armed <= now

    def fire_due(self, now: float) -> list[F]:
        """Fire until the armed deadline is after ``now``: the ticks of a turn that ends
        (for drivers without a clock of their own, e.g. a hand-driven harness)."""
        effects: list[F] = []
        while self.due(now):
            effects += self.fire(now)
        return effects

    def fire(self, now: float) -> list[F]:
        """The armed deadline passed: the timer event, then a check that it moved on."""
        self._spent = True  # the timer that fired is gone: re-arm whatever comes next
        effects = self.dispatch(self.timer_event(), now)
        after = self.armed
        if after is not None and after < now:
            self.on_spin(f"next_deadline() {after} is before the timer that just fired at "
                         f"{now}; a runtime would spin")
        self._ticks = self._ticks + 1 if after == now else 0
        if self._ticks > MAX_TICKS_PER_INSTANT:
            self._ticks = 0
            self.on_spin(f"more than {MAX_TICKS_PER_INSTANT} timers due at {now}; a runtime "
                         "would spin")
        return effects
