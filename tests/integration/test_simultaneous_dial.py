"""Two real nodes dialling each other at the same moment (issue 16, break 7).

Duplicate-link resolution is internal: whichever direction survives, both
``connect`` commands succeed and exactly one link remains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.channelkit import wait_until
from tests.integration.nodeproc import NodeProcess, _env

pytestmark = pytest.mark.integration

ROUNDS = 5


def _status(node: NodeProcess) -> dict[str, Any]:
    result = node.cli("status", "--json")
    assert 0 == result.returncode, result.stderr
    return dict(json.loads(result.stdout))


def _connect_both(a: NodeProcess, b: NodeProcess) -> list[subprocess.CompletedProcess[str]]:
    """Start ``a connect b`` and ``b connect a`` together; wait for both."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "p2pchat", "--home", str(x.home), "connect",
             f"{y.did}@127.0.0.1:{y.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        for x, y in ((a, b), (b, a))
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _one_link_each(a: NodeProcess, b: NodeProcess) -> bool:
    sa, sb = _status(a), _status(b)
    return (1, 1, 1, 1) == (sa["links"], sa["peers"], sb["links"], sb["peers"])


def _assert_one_shared_link(a: NodeProcess, b: NodeProcess) -> None:
    wait_until(lambda: _one_link_each(a, b), 15, "exactly one link on each side")
    [pa] = json.loads(a.cli("peers", "--json").stdout)
    [pb] = json.loads(b.cli("peers", "--json").stdout)
    assert (b.did, a.did) == (pa["did"], pb["did"])
    assert {"inbound", "outbound"} == {pa["direction"], pb["direction"]}, \
        "both sides keep the same link"


def _forget_each_other(a: NodeProcess, b: NodeProcess) -> None:
    for x, y in ((a, b), (b, a)):
        assert 0 == x.cli("disconnect", y.did).returncode
    wait_until(lambda: all(0 == s["links"] and [] == s["wanted"]
                            for s in (_status(a), _status(b))), 15, "both sides idle")


def test_both_connect_at_once_succeed_with_one_link(spawn: Callable[..., NodeProcess]) -> None:
    a = spawn("A")
    b = spawn("B")
    for round_ in range(ROUNDS):
        results = _connect_both(a, b)
        for result in results:
            assert 0 == result.returncode, f"round {round_}: {result.stderr}"
            assert "Traceback" not in result.stderr
        assert f"connected to {b.did}" in results[0].stdout
        assert f"connected to {a.did}" in results[1].stdout
        _assert_one_shared_link(a, b)
        _forget_each_other(a, b)


def test_both_connect_at_once_after_a_restart(spawn: Callable[..., NodeProcess]) -> None:
    """After a restart each node also redials the stored peer while the user connects."""
    a = spawn("A")
    b = spawn("B")
    assert 0 == a.cli("connect", f"{b.did}@127.0.0.1:{b.port}").returncode
    assert 0 == b.cli("connect", f"{a.did}@127.0.0.1:{a.port}").returncode
    for round_ in range(ROUNDS):
        assert 0 == a.stop()
        assert 0 == b.stop()
        a = spawn("A", a.port)
        b = spawn("B", b.port)
        for result in _connect_both(a, b):
            assert 0 == result.returncode, f"round {round_}: {result.stderr}"
        _assert_one_shared_link(a, b)
