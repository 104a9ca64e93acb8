"""The node runtime on each store adapter: what it writes comes back at its next start, and
a write that fails is reported, never sent (moved here from tests/unit/test_store.py).

The same :class:`p2pchat.runtime.node.Node` runs on :class:`~p2pchat.store.MemoryStore`
and on :class:`~p2pchat.store.SqliteStore`: the runtime needs nothing but the port.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from p2pchat.core import NodeConfig
from p2pchat.crypto import generate_secret_key
from p2pchat.errors import LocalError
from p2pchat.identity import Identity
from p2pchat.runtime.node import Node
from tests.conformance.storekit import ADAPTERS, StoreAdapter, make_adapter


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> StoreAdapter:
    return make_adapter(str(request.param), tmp_path)


def _identity(name: str) -> Identity:
    return Identity(generate_secret_key(), os.urandom(16), name)


def test_what_a_node_wrote_comes_back_at_its_next_start(adapter: StoreAdapter) -> None:
    me = _identity("me")

    async def scenario() -> tuple[list[str], list[str], str]:
        store = await adapter.open()
        node = Node(me, NodeConfig(), store)
        await node.start("127.0.0.1", 0)
        try:
            channel = (await node.create_channel("general"))["channel"]
            for text in ("first post", "second post", "third"):
                await node.send(channel, text)
        finally:
            await node.stop()  # closes the store
        store = await adapter.open_again(store)
        again = Node(me, NodeConfig(), store)
        await again.start("127.0.0.1", 0)
        try:
            views = again.core.hub.get(channel).history_page(10, now_ms=int(time.time() * 1000))
            found = await store.search(channel, "post", 10)
            [name] = [c.name for c in await store.load_channels()]
            return [v.text for v in views], sorted(found), name
        finally:
            await again.stop()

    texts, found, name = asyncio.run(scenario())
    assert ["first post", "second post", "third"] == texts
    assert 2 == len(found)
    assert "general" == name


def test_answers_behind_a_failed_commit_report_failure(adapter: StoreAdapter) -> None:
    """A send whose write fails must not be reported as stored (nor sent to peers)."""
    async def scenario() -> str:
        store = await adapter.open()
        node = Node(_identity("t"), NodeConfig(), store)
        await node.start("127.0.0.1", 0)
        try:
            channel = (await node.create_channel("fails"))["channel"]
            adapter.fail_next_write(store)
            try:
                await node.send(channel, "lost")
            except LocalError as exc:
                return str(exc)
            return "no error"
        finally:
            await node.stop()

    assert "could not store" in asyncio.run(scenario())


def test_connect_reports_a_peer_it_could_not_store(adapter: StoreAdapter) -> None:
    async def scenario() -> str:
        store = await adapter.open()
        a = Node(_identity("a"), NodeConfig(), store)
        b = Node(_identity("b"), NodeConfig())
        await a.start("127.0.0.1", 0)
        address = await b.start("127.0.0.1", 0)
        try:
            adapter.fail_next_write(store)
            try:
                await a.connect(address)
            except LocalError as exc:
                return str(exc)
            return "no error"
        finally:
            await a.stop()
            await b.stop()

    assert "could not store it as a peer to redial" in asyncio.run(scenario())
