"""The runtime's additions to the control API for the chat client's status bar: ``sync``
watch events (rate-limited per channel) and the ``via`` of each peer."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from p2pchat.channel.invite import format_channel_id
from p2pchat.core import NodeConfig
from p2pchat.core.events import SyncChanged, SyncProgress
from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity
from p2pchat.runtime.node import Node
from p2pchat.runtime.views import PeerView, sync_json, via_of
from p2pchat.runtime.watch import SYNC_EVENT_INTERVAL

WAIT = 5.0  # seconds an awaited event may take (it is due after SYNC_EVENT_INTERVAL)


def test_via_names_the_way_a_peer_is_reached() -> None:
    assert "bootstrap" == via_of("bootstrap-server", "internet")
    assert "bootstrap" == via_of("bootstrap-server", "lan")
    assert "lan" == via_of("mdns", "lan")
    assert "lan" == via_of("mdns", "loopback")
    assert "lan" == via_of("inbound", "lan")  # a private address is the LAN
    for found_by in ("manual", "invite", "stored", "inbound", "bootstrap"):
        assert "direct" == via_of(found_by, "loopback")
        assert "direct" == via_of(found_by, "internet")
    view = PeerView("did:key:z", "", "127.0.0.1:1", True, None, 0.0, "manual", "loopback",
                    via_of("manual", "loopback"))
    peer = view.to_json()
    assert ("manual", "loopback", "direct") == (peer["found_by"], peer["path"], peer["via"])


def test_sync_json() -> None:
    assert sync_json(None) is None
    assert {"received": 3, "expected": 10} == sync_json(SyncProgress(3, 7))


def test_sync_events_are_rate_limited_per_channel() -> None:
    """The first figure and the end go out at once; figures within SYNC_EVENT_INTERVAL of
    the last event wait, and the newest of them goes out when the interval is over."""
    rng = random.Random(5)
    me = Identity(secret_key_from_seed(rng.randbytes(32)), rng.randbytes(16), "w")

    async def run() -> None:
        node = Node(me, NodeConfig())
        try:
            created = await node.create_channel("big")
            channel: bytes = created["channel"]
            cid = format_channel_id(channel)
            queue = node.watch()

            def change(value: SyncProgress | None, at: float) -> list[dict[str, Any]]:
                return node.watchers.sync_events([SyncChanged(channel, value)], at)

            def event(received: int, behind: int) -> dict[str, Any]:
                return {"event": "sync", "channel": cid,
                        "sync": sync_json(SyncProgress(received, behind))}

            t0 = asyncio.get_running_loop().time()
            assert [event(0, 100)] == change(SyncProgress(0, 100), t0)
            assert [] == change(SyncProgress(10, 90), t0 + SYNC_EVENT_INTERVAL / 3)
            assert [] == change(SyncProgress(20, 80), t0 + SYNC_EVENT_INTERVAL / 2)
            assert [] == node.watchers.sync_events([], t0 + SYNC_EVENT_INTERVAL / 2)
            assert queue.empty()
            # the timer sends the newest figure once the interval is over
            late = await asyncio.wait_for(queue.get(), WAIT)
            assert event(20, 80) == late
            assert asyncio.get_running_loop().time() >= t0 + SYNC_EVENT_INTERVAL
            # the end is never held back
            now = asyncio.get_running_loop().time()
            assert [{"event": "sync", "channel": cid, "sync": None}] == change(None, now)
            # a new sync starts at once, also right after the last one ended
            assert [event(0, 5)] == change(SyncProgress(0, 5), now)
            # without watchers nothing is queued or held
            node.watchers.unwatch(queue)
            assert [] == change(SyncProgress(1, 4), now + SYNC_EVENT_INTERVAL * 2)
            assert not node.watchers.waiting()
        finally:
            await node.stop()

    asyncio.run(run())
