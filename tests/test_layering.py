"""The sans-IO rule (DESIGN §1): core packages import no I/O or ambient time/randomness.

Walks the AST of every module in the core packages and fails on any import of a
forbidden module, including ``from x import y`` and imports nested in functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGES = ("identity", "crypto", "wire", "core", "channel")
#: core modules outside those packages
CORE_MODULES = ("bootstrap_proto.py", "errors.py")
FORBIDDEN = (
    "asyncio", "socket", "time", "random", "selectors", "threading", "subprocess",
    "os", "secrets", "concurrent",
    "aioquic.asyncio", "zeroconf", "aiosqlite", "sqlite3",
    "p2pchat.runtime", "p2pchat.transport", "p2pchat.store", "p2pchat.control",
    "p2pchat.cli", "bootstrap",
)


def _core_modules() -> list[Path]:
    files: list[Path] = []
    for package in CORE_PACKAGES:
        found = sorted((ROOT / "p2pchat" / package).glob("**/*.py"))
        assert found, f"core package {package!r} has no modules: a stale name?"
        files += found
    return files + [ROOT / "p2pchat" / name for name in CORE_MODULES]


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_core_packages_exist() -> None:
    assert len(_core_modules()) >= 10


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", _core_modules(), ids=_rel)
def test_core_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = sorted({name for name in _imports(tree) if _forbidden(name)})
    assert [] == bad


def test_checker_catches_violations() -> None:
    tree = ast.parse("import asyncio\nfrom time import monotonic\n"
                     "def f():\n    from aioquic.asyncio import connect\n"
                     "import os.path\nimport secrets\nfrom concurrent import futures\n"
                     "import osmium\n")
    assert ["aioquic.asyncio", "aioquic.asyncio.connect", "asyncio", "concurrent",
            "concurrent.futures", "os.path", "secrets", "time",
            "time.monotonic"] == sorted(n for n in _imports(tree) if _forbidden(n))


def test_bootstrap_never_imported_by_p2pchat() -> None:
    for path in sorted((ROOT / "p2pchat").glob("**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad = [n for n in _imports(tree) if n == "bootstrap" or n.startswith("bootstrap.")]
        assert [] == bad, path
