"""The channel replica's module structure (issue 17): no import loop inside
p2pchat/channel (TYPE_CHECKING imports included), nothing from the simulator or the
node's other layers, and no module over MAX_LINES.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CHANNEL = Path(__file__).resolve().parents[2] / "p2pchat" / "channel"
MAX_LINES = 800
#: the channel layer sits under these: it must not reach up into them
ABOVE = ("p2pchat.testing", "p2pchat.core", "p2pchat.bench", "p2pchat.runtime",
         "p2pchat.control", "p2pchat.tui", "p2pchat.cli", "p2pchat.store",
         "p2pchat.transport", "p2pchat.discovery")


def _modules() -> dict[str, Path]:
    return {f"p2pchat.channel.{p.stem}": p for p in sorted(CHANNEL.glob("*.py"))
            if p.stem != "__init__"}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (functions and TYPE_CHECKING
    blocks too); ``from p2pchat.channel import x`` counts as importing module x."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path) & set(modules) for name, path in modules.items()}


def test_the_channel_package_has_modules() -> None:
    assert {"p2pchat.channel.state", "p2pchat.channel.group"} <= set(_modules())


def test_no_import_loop_in_the_channel_package() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(" -> ".join([*path[path.index(name):], name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_group_keys_do_not_know_the_replica_class() -> None:
    assert "p2pchat.channel.state" not in _imports(CHANNEL / "group.py")


@pytest.mark.parametrize("path", sorted(CHANNEL.glob("*.py")), ids=lambda p: p.name)
def test_channel_modules_import_nothing_above_them(path: Path) -> None:
    bad = sorted(n for n in _imports(path)
                 if any(n == up or n.startswith(up + ".") for up in ABOVE))
    assert [] == bad


@pytest.mark.parametrize("path", sorted(CHANNEL.glob("*.py")), ids=lambda p: p.name)
def test_channel_modules_stay_small(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


def test_the_loop_check_catches_a_loop(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from typing import TYPE_CHECKING\n"
                                   "if TYPE_CHECKING:\n    from p2pchat.channel.b import B\n")
    assert "p2pchat.channel.b" in _imports(tmp_path / "a.py")
