"""The bootstrap server's protocol modules are sans-IO too (DESIGN §1, bootstrap/service.py).

The same AST walk as tests/test_layering.py, over the modules that make the server's
decisions: no sockets, clocks, randomness, threads, databases or HTTP in them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layering import _imports

ROOT = Path(__file__).resolve().parent.parent.parent
SANS_IO = ("events.py", "service.py", "rendezvous.py", "limits.py", "core.py", "testing.py")
FORBIDDEN = (
    "asyncio", "socket", "time", "random", "selectors", "threading", "subprocess",
    "concurrent", "aioquic", "aiosqlite", "sqlite3", "prometheus_client", "http",
    "p2pchat.runtime", "p2pchat.transport", "p2pchat.store", "p2pchat.control",
    "bootstrap.runtime", "bootstrap.store", "bootstrap.metrics", "bootstrap.cli",
)


@pytest.mark.parametrize("name", SANS_IO)
def test_bootstrap_protocol_modules_import_no_io(name: str) -> None:
    path = ROOT / "bootstrap" / name
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = sorted({n for n in _imports(tree, "bootstrap")
                  if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)})
    assert [] == bad
