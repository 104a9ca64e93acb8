"""Helpers for channel integration tests: CLI wrappers and condition polling."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.integration.nodeproc import NodeProcess, patience


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``patience(timeout)`` seconds."""
    timeout = patience(timeout)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.2)  # polling a condition with a deadline, not a guess


def all_stored(node: NodeProcess) -> bool:
    """Whether the node's last bootstrap server has acknowledged every envelope the node
    uploaded to it (and it uploaded some)."""
    server = json.loads(node.cli("doctor", "--json").stdout)["bootstrap"][-1]
    return bool(0 < server["uploaded"] == server["acknowledged"])


def history(node: NodeProcess, channel: str) -> list[dict[str, Any]]:
    result = node.cli("history", channel, "--limit", "100000", "--json")
    assert 0 == result.returncode, result.stderr
    return list(json.loads(result.stdout))


def create_channel(node: NodeProcess, name: str) -> tuple[str, str]:
    result = node.cli("channel", "create", name, "--json")
    assert 0 == result.returncode, result.stderr
    data = json.loads(result.stdout)
    return data["channel"], data["invite"]


def invite_of(node: NodeProcess, channel: str) -> str:
    result = node.cli("invite", channel, "--json")
    assert 0 == result.returncode, result.stderr
    return str(json.loads(result.stdout)["invite"])


def join(node: NodeProcess, invite: str) -> None:
    result = node.cli("join", invite, "--json")
    assert 0 == result.returncode, result.stderr


def synced(node: NodeProcess, channel: str) -> bool:
    result = node.cli("channel", "list", "--json")
    return any(c["channel"] == channel and c["synced"] for c in json.loads(result.stdout))


def shared_channel(founder: NodeProcess, member: NodeProcess, name: str) -> tuple[str, str]:
    """``founder`` creates channel ``name``; ``member`` joins and receives it."""
    channel, invite = create_channel(founder, name)
    join(member, invite)
    wait_until(lambda: synced(member, channel), 10, f"{member.home.name} to receive the channel")
    return channel, invite
