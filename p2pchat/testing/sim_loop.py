"""The simulator's kernel (:mod:`p2pchat.testing.sim`): shared state and the event loop.

Owns what every part of a :class:`~p2pchat.testing.sim.SimNetwork` shares -- the
seed and network RNG, the clock, the nodes, the trace, the counters, the request
answers and the observer hooks -- and the one event loop that drives it: the
priority queue of scheduled work and the nodes' timers (``_schedule``/``_step``,
:meth:`SimLoop.run_until`, :meth:`SimLoop.run_until_quiet`,
:meth:`SimLoop.wait_for`), handing events to cores through their drivers
(``_handle``/``_fire``) and recording each in the trace. Carrying out the
effects the cores return is the subclass's part (``_carry_out``).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable

from p2pchat.channel.envelope import Envelope
from p2pchat.core import NodeConfig, NodeCore
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    ChannelAnswer,
    ConnectFinished,
    DataReceived,
    DialFailed,
    Effect,
    Event,
    LinkEstablished,
    LinkLost,
    SendRequested,
    TimerExpired,
)
from p2pchat.testing.sim_model import FakeClock, Faults, SimError, Stats, derive_rng
from p2pchat.testing.sim_node import SimNode


class SimLoop:
    """The state a simulated network shares and its event loop (see the module docstring).

    ``SimNetwork`` is the one to use; this base knows nodes, time and the trace,
    not links, requests or faults.
    """

    def __init__(self, seed: int, *, config: NodeConfig | None, faults: Faults | None,
                 clock: FakeClock | None, clock_skew_ms: int, max_events: int,
                 strict: bool) -> None:
        self.seed = seed
        self.config = config or NodeConfig()
        self.faults = faults or Faults()
        self.clock = clock or FakeClock()
        self.clock_skew_ms = clock_skew_ms
        self.max_events = max_events
        #: Raise on a core misstep the runtime would tolerate (see :attr:`violations`).
        self.strict = strict
        #: Such missteps, e.g. a ``Transmit`` on a link the core already closed.
        self.violations: list[str] = []
        self.nodes: dict[str, SimNode] = {}
        self.trace: list[tuple[str, ...]] = []
        self.stats = Stats()
        #: Pairs of nodes that ever had a link (sorted name pairs).
        self.ever_linked: set[tuple[str, str]] = set()
        #: ``ChannelAnswer`` / ``ConnectFinished`` effects by request id.
        self.answers: dict[int, ChannelAnswer] = {}
        self.connects: dict[int, ConnectFinished] = {}
        self.founders: dict[bytes, str] = {}
        #: Observers (``(node, link id, bytes)``) of every ``Transmit`` the network
        #: accepts and every ``DataReceived`` it delivers; for white-box tests.
        self.on_transmit: Callable[[str, int, bytes], None] | None = None
        self.on_deliver: Callable[[str, int, bytes], None] | None = None
        #: Called with ``(node name, core)`` for every core the network builds (at
        #: :meth:`add_node` and each :meth:`restart`) before it handles any event.
        self.on_new_core: Callable[[str, NodeCore], None] | None = None
        #: the signature check bootstrap servers use (None: each checks its own)
        self.server_verify: Callable[[list[Envelope]], list[bool]] | None = None
        self._rng = derive_rng(seed, "network")
        self._names: dict[str, str] = {}  # DID -> node name (see _name_by_did)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        #: per directed (src, dst) pair and fault name (FAULT_COUNTERS keys): how often
        self.link_stats: dict[tuple[str, str], dict[str, int]] = {}
        self._next_request = 1
        self._last_activity = self.clock.now

    def _carry_out(self, node: SimNode, effect: Effect) -> None:
        """Do what ``effect`` of ``node``'s core asks (the network's part)."""
        raise NotImplementedError

    # --- nodes ----------------------------------------------------------------------------

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def core(self, name: str) -> NodeCore:
        return self.nodes[name].core

    def did(self, name: str) -> str:
        return self.nodes[name].did

    def name_of(self, did: str) -> str:
        name = self._name_by_did(did)
        if name is None:
            raise KeyError(did)
        return name

    def _name_by_did(self, did: str) -> str | None:
        # identities never change under a name (a restart keeps the node's identity), so
        # the map only needs rebuilding when nodes are added
        if len(self._names) != len(self.nodes):
            self._names = {node.did: node.name for node in self.nodes.values()}
        return self._names.get(did)

    @property
    def now(self) -> float:
        return self.clock.now

    def wall_ms(self, name: str) -> int:
        return self.clock.wall_ms(self.nodes[name].skew_ms)

    def fail(self, message: str) -> SimError:
        """A :class:`SimError` naming the seed and the simulated time."""
        return SimError(f"{message}\n[sim seed={self.seed} (replay: SEED={self.seed}), "
                        f"t={self.clock.now:.6f}]")

    def _who(self, did: str) -> str:
        name = self._name_by_did(did)
        return did[:20] if name is None else name

    def _count(self, fault: str, src: str, dst: str) -> None:
        counts = self.link_stats.setdefault((src, dst), {})
        counts[fault] = counts.get(fault, 0) + 1

    # --- running -------------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        """Run everything due up to time ``t``, then set the clock to ``t``."""
        while self._step(t):
            pass
        if t > self.clock.now:
            self.clock.advance_to(t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.clock.now + dt)

    def run_until_quiet(self, idle: float | None = None, timeout: float = 3600.0) -> float:
        """Run until nothing but keepalives and failing dials happened for ``idle`` seconds.

        ``idle`` defaults to twice (longest reconnect backoff + dial timeout), so
        any redial that was due has happened. Returns the time activity stopped.
        Raises :class:`SimError` if the network is still busy after ``timeout``.
        """
        if idle is None:
            idle = 2 * (self.config.reconnect_max + self.config.dial_timeout)
        limit = self.clock.now + timeout
        while True:
            target = self._last_activity + idle
            if target > limit:
                raise self.fail(f"network not quiet after {timeout:g} s "
                                f"(last activity at {self._last_activity:.3f}); "
                                f"recent trace:\n{self.format_trace(-30)}")
            self.run_until(target)
            if self._last_activity + idle <= self.clock.now:
                return self._last_activity

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 600.0,
                 what: str = "condition") -> None:
        """Run event by event until ``predicate()`` holds; SimError after ``timeout`` seconds."""
        limit = self.clock.now + timeout
        while not predicate():
            if not self._step(limit):
                raise self.fail(f"timed out after {timeout:g} s waiting for {what}")

    def format_trace(self, start: int = 0, end: int | None = None) -> str:
        return "\n".join(" ".join(entry) for entry in self.trace[start:end])

    def trace_digest(self) -> str:
        h = hashlib.sha256()
        for entry in self.trace:
            h.update("\x1f".join(entry).encode())
            h.update(b"\x1e")
        return h.hexdigest()

    # --- the event loop ---------------------------------------------------------------------------

    def _schedule(self, at: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, action))

    def _next_timer(self) -> tuple[float, SimNode] | None:
        best: tuple[float, SimNode] | None = None
        for name in sorted(self.nodes):
            node = self.nodes[name]
            if node.alive and node.deadline is not None \
                    and (best is None or node.deadline < best[0]):
                best = (node.deadline, node)
        return best

    def _step(self, until: float) -> bool:
        """Run the next queued action or timer if due by ``until``; False if none is."""
        t_queue = self._queue[0][0] if self._queue else math.inf
        timer = self._next_timer()
        t_timer = timer[0] if timer is not None else math.inf
        t = min(t_queue, t_timer)
        if t > until or t == math.inf:
            return False
        self.stats.events += 1
        if self.stats.events > self.max_events:
            raise self.fail(f"more than {self.max_events} events: livelock?")
        if t > self.clock.now:
            self.clock.advance_to(t)
        if t_queue <= t_timer:
            _, _, action = heapq.heappop(self._queue)
            action()
        else:
            assert timer is not None
            self._fire(timer[1])
        return True

    def _violation(self, what: str) -> None:
        """A core did something a runtime tolerates but should not happen."""
        self.violations.append(f"t={self.clock.now:.6f} {what}")
        if self.strict:
            raise self.fail(what)

    def _note(self, kind: str, a: str, b: str) -> None:
        self._last_activity = self.clock.now
        self.trace.append((f"{self.clock.now:.6f}", "*", kind, a, b))

    def _drive(self, node: SimNode) -> Driver[Event, Effect]:
        """A new driver loop for ``node``'s (new) core, armed."""
        def arm(deadline: float | None) -> None:
            node.deadline = deadline

        def spun(what: str) -> None:
            raise self.fail(f"{node.name}: {what}")

        node.driver = Driver(node.core, lambda effect: self._carry_out(node, effect), arm,
                             TimerExpired, spun)
        node.driver.rearm()
        return node.driver

    def _driver(self, node: SimNode) -> Driver[Event, Effect]:
        return node.driver if node.driver is not None and node.driver.machine is node.core \
            else self._drive(node)

    def _handle(self, node: SimNode, event: Event, label: str = "") -> list[Effect]:
        self.trace.append((f"{self.clock.now:.6f}", node.name, *self._event_entry(event, label)))
        driver = self._driver(node)
        try:
            return driver.dispatch(event, self.clock.now)
        except SimError:
            raise
        except Exception as exc:
            raise self.fail(f"{node.name}: core raised {type(exc).__name__}: {exc} on "
                            f"{' '.join(self.trace[-1][2:])}") from exc

    def _fire(self, node: SimNode) -> list[Effect]:
        """``node``'s timer is due: its driver fires it (and checks it moves on)."""
        self.trace.append((f"{self.clock.now:.6f}", node.name, "timer", ""))
        driver = self._driver(node)
        try:
            return driver.fire(self.clock.now)
        except SimError:
            raise
        except Exception as exc:
            raise self.fail(f"{node.name}: core raised {type(exc).__name__}: {exc} on "
                            "timer") from exc

    def _event_entry(self, event: Event, label: str) -> tuple[str, str]:
        if isinstance(event, DataReceived):
            digest = hashlib.blake2b(event.data, digest_size=4).hexdigest()
            return "data", f"L{event.link_id} {len(event.data)}B {digest} {label}"
        if isinstance(event, TimerExpired):
            return "timer", ""
        if isinstance(event, LinkEstablished):
            self._last_activity = self.clock.now
            side = "out" if event.outbound else "in"
            return "established", f"L{event.link_id} {side} {label} dial={event.dial_id}"
        if isinstance(event, LinkLost):
            self._last_activity = self.clock.now
            return "lost", f"L{event.link_id} {event.reason}"
        if isinstance(event, DialFailed):
            return "dial-failed", f"D{event.dial_id} {event.reason}"
        if isinstance(event, SendRequested):
            return "send", event.text[:40]
        return type(event).__name__, ""
