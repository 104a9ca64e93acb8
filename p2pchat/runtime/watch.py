"""Change events for control clients that ``watch`` a node: one bounded queue per
client, fed from the effects of each dispatch.

One event per changed channel (``channel``), key rotation (``keys``) and peer change
(``peers``) of a dispatch, and ``sync`` events for catch-up progress (the core's
:class:`~p2pchat.core.events.SyncChanged`), at most one per channel per
SYNC_EVENT_INTERVAL: a figure that comes sooner waits for a timer, which sends the
newest one then. The first event of a sync and the one saying it is done are never
held back. A client that does not keep up gets ``lagged`` (refresh everything) instead
of an unbounded backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from p2pchat.channel.invite import format_channel_id
from p2pchat.core.events import (
    Effect,
    PeerConnected,
    PeerDisconnected,
    PersistEnvelopes,
    PersistEpochKey,
    SyncChanged,
    SyncProgress,
)
from p2pchat.runtime.views import sync_json

#: Change events queued per watching control client before it is told it lagged.
MAX_WATCH_EVENTS = 1024
#: Shortest time between two ``sync`` watch events of one channel (its progress while
#: it catches up): at most four a second; the newest figure goes out when it is over.
SYNC_EVENT_INTERVAL = 0.25

Progress = SyncProgress | None


def sync_event(channel: bytes, progress: Progress) -> dict[str, Any]:
    return {"event": "sync", "channel": format_channel_id(channel),
            "sync": sync_json(progress)}


class Watchers:
    """The watching clients' queues and the ``sync`` rate limit (see the module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 has_channel: Callable[[bytes], bool]) -> None:
        self._loop = loop
        self._has_channel = has_channel
        self.queues: set[asyncio.Queue[dict[str, Any]]] = set()
        #: per syncing channel, when its last ``sync`` event went out; the newest figure
        #: of the channels that wait out SYNC_EVENT_INTERVAL, and the timer that sends them
        self._told: dict[bytes, float] = {}
        self._due: dict[bytes, Progress] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False

    def watch(self) -> asyncio.Queue[dict[str, Any]]:
        """A new client's queue; the caller calls :meth:`unwatch` when done."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_WATCH_EVENTS)
        self.queues.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.queues.discard(queue)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def tell(self, effects: Sequence[Effect], now: float) -> None:
        """The events of one dispatch's effects, queued for every watcher."""
        if not self.queues and not self._told and not self._due:
            return  # nobody watches (the usual case): nothing to look at
        sync = self.sync_events([e for e in effects if isinstance(e, SyncChanged)], now)
        if not self.queues:
            return
        events: dict[tuple[str, str], dict[str, Any]] = {}
        for effect in effects:
            if isinstance(effect, PersistEnvelopes):
                channel = format_channel_id(effect.channel)
                events[("channel", channel)] = {"event": "channel", "channel": channel}
            elif isinstance(effect, PersistEpochKey):
                channel = format_channel_id(effect.channel)
                events[("keys", channel)] = {"event": "keys", "channel": channel}
            elif isinstance(effect, (PeerConnected, PeerDisconnected)):
                events[("peers", "")] = {"event": "peers"}
        self.put(list(events.values()) + sync)

    def sync_events(self, changes: Sequence[SyncChanged], now: float) -> list[dict[str, Any]]:
        """``sync`` events for these changes that are due now; the others wait."""
        if not changes:
            return []
        if not self.queues:
            self._told.clear()
            self._due.clear()
            return []
        events = []
        for change in changes:
            channel, progress = change.channel, change.progress
            told = self._told.get(channel)
            if progress is not None and told is not None and now - told < SYNC_EVENT_INTERVAL:
                self._due[channel] = progress
                self._arm(told + SYNC_EVENT_INTERVAL)
            else:
                events.append(self._event(channel, progress, now))
        return events

    def waiting(self) -> bool:
        """Whether some ``sync`` figure waits out its interval."""
        return bool(self._due)

    def put(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        for queue in self.queues:
            for event in events:
                if queue.full():
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait({"event": "lagged"})
                    break
                queue.put_nowait(event)

    def _event(self, channel: bytes, progress: Progress, now: float) -> dict[str, Any]:
        self._due.pop(channel, None)
        if progress is None:
            self._told.pop(channel, None)
        else:
            self._told[channel] = now
        return sync_event(channel, progress)

    def _arm(self, at: float) -> None:
        if self._timer is None and not self._stopped:
            self._timer = self._loop.call_at(at, self._flush)

    def _flush(self) -> None:
        """The held-back figures whose interval is over (re-armed for the rest)."""
        self._timer = None
        if self._stopped or not self.queues:
            self._due.clear()
            return
        now = self._loop.time()
        events = []
        later = []
        for channel, progress in sorted(self._due.items()):
            told = self._told.get(channel, now - SYNC_EVENT_INTERVAL)
            if not self._has_channel(channel):
                self._due.pop(channel, None)
            elif now - told >= SYNC_EVENT_INTERVAL:
                events.append(self._event(channel, progress, now))
            else:
                later.append(told + SYNC_EVENT_INTERVAL)
        if later:
            self._arm(min(later))
        self.put(events)
