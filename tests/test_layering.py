"""The layering rules (DESIGN §1), checked on the AST of the source, not at run time.

* The sans-IO rule: core modules import no I/O or ambient time/randomness. Every
  module of the core packages is walked, and any import of a forbidden module fails,
  including ``from x import y``, relative imports and imports nested in functions or
  under ``if TYPE_CHECKING:``. Every top-level part of ``p2pchat`` is either core or
  named as not core, so a new module cannot miss the check.
* ``p2pchat`` never imports ``bootstrap``.
* No import loops among the modules of ``p2pchat`` and ``bootstrap``, counting every
  import a module makes: top level, function-local and under ``if TYPE_CHECKING:``
  (a loop hidden from the interpreter is still a loop in the design). The loops that
  exist today are listed in :data:`KNOWN_LOOPS_ISSUE_17`, which may only shrink.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_PACKAGES = ("identity", "crypto", "wire", "core", "channel")
#: core modules outside those packages (``__init__.py`` runs before any core module)
CORE_MODULES = ("__init__.py", "bootstrap_proto.py", "errors.py")
#: the other top-level parts of p2pchat: adapters, entry points and test tooling
NOT_CORE = ("runtime", "transport", "store", "control", "discovery", "cli", "tui", "bench",
            "testing", "home.py", "serve.py", "__main__.py")
FORBIDDEN = (
    "asyncio", "socket", "time", "random", "selectors", "threading", "subprocess",
    "os", "secrets", "concurrent",
    "aioquic.asyncio", "zeroconf", "aiosqlite", "sqlite3",
    "p2pchat.runtime", "p2pchat.transport", "p2pchat.store", "p2pchat.control",
    "p2pchat.cli", "bootstrap",
)
#: the packages whose modules may not import each other in a loop
GRAPH_PACKAGES = ("p2pchat", "bootstrap")

#: Import loops that exist today, each the modules of one strongly connected component
#: of the import graph (one loop, or several that share modules). Issue 17 breaks them:
#: the test fails while an entry here is no longer a loop as listed, so remove (or
#: shrink) the entry with the change that breaks it. Never add one.
KNOWN_LOOPS_ISSUE_17: frozenset[frozenset[str]] = frozenset({
})


def _core_modules() -> list[Path]:
    files: list[Path] = []
    for package in CORE_PACKAGES:
        found = sorted((ROOT / "p2pchat" / package).glob("**/*.py"))
        assert found, f"core package {package!r} has no modules: a stale name?"
        files += found
    for name in CORE_MODULES:
        path = ROOT / "p2pchat" / name
        assert path.is_file(), f"core module {name!r} does not exist: a stale name?"
        files.append(path)
    return files


def _module_name(path: Path) -> str:
    """``p2pchat/core/node.py`` -> ``p2pchat.core.node``; a package is its ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_of(path: Path) -> str:
    """The package relative imports in ``path`` start from."""
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, package: str) -> str | None:
    """The module ``from ... import`` names, relative imports resolved against
    ``package``; None for a relative import without a package to resolve it in."""
    if node.level == 0:
        return node.module
    if not package:
        return None
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        raise ValueError(f"relative import beyond the top-level package in {package!r}")
    base = parts[:len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.AST, package: str = "") -> list[str]:
    """Every module name an import in ``tree`` may load: ``import a.b`` gives ``a.b``,
    ``from a import b`` gives ``a`` and ``a.b`` (b may be a submodule). Relative
    imports count only with the ``package`` they are relative to."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, package)
            if module:
                names.append(module)
                names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def test_core_packages_exist() -> None:
    assert len(_core_modules()) >= 10


def test_every_part_of_p2pchat_is_core_or_named_as_not_core() -> None:
    parts = {p.name for p in (ROOT / "p2pchat").iterdir()
             if p.suffix == ".py" or (p.is_dir() and any(p.glob("**/*.py")))}
    named = set(CORE_PACKAGES) | set(CORE_MODULES) | set(NOT_CORE)
    assert not set(CORE_PACKAGES + CORE_MODULES) & set(NOT_CORE)
    assert sorted(named) == sorted(parts), "a new part of p2pchat: core or not?"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", _core_modules(), ids=_rel)
def test_core_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = sorted({name for name in _imports(tree, _package_of(path)) if _forbidden(name)})
    assert [] == bad


def test_checker_catches_violations() -> None:
    tree = ast.parse("import asyncio\nfrom time import monotonic\n"
                     "def f():\n    from aioquic.asyncio import connect\n"
                     "import os.path\nimport secrets\nfrom concurrent import futures\n"
                     "from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    import threading\n"
                     "from ..runtime import node\n"
                     "import osmium\n")
    assert ["aioquic.asyncio", "aioquic.asyncio.connect", "asyncio", "concurrent",
            "concurrent.futures", "os.path", "p2pchat.runtime", "p2pchat.runtime.node",
            "secrets", "threading", "time",
            "time.monotonic"] == sorted(n for n in _imports(tree, "p2pchat.core")
                                        if _forbidden(n))


def test_bootstrap_never_imported_by_p2pchat() -> None:
    for path in sorted((ROOT / "p2pchat").glob("**/*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bad = [n for n in _imports(tree, _package_of(path))
               if n == "bootstrap" or n.startswith("bootstrap.")]
        assert [] == bad, path


# --- import loops -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """One edge of the import graph: where ``source`` imports ``target``."""

    source: str
    target: str
    line: int
    where: str  # "top level", "in a function" or "under TYPE_CHECKING"


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(nodes: Iterable[ast.AST], where: str = "top level"
                  ) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement in ``nodes`` and below, with the context it runs in."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, where
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _import_nodes(ast.iter_child_nodes(node), "in a function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.body, "under TYPE_CHECKING")
            yield from _import_nodes(node.orelse, where)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node), where)


def _known(name: str, modules: Container[str]) -> str | None:
    """The module ``name`` loads among ``modules``: itself or its nearest parent."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(sources: Mapping[str, tuple[str, bool]]) -> dict[str, list[Edge]]:
    """The imports among ``sources`` (module name -> (source text, is a package)).

    ``import a.b`` and ``from a import b`` make an edge to ``a.b`` if that is one of
    the modules (else to the nearest parent that is); ``from a import name`` makes one
    to ``a``. Imports of other modules, and of a module by itself, are left out.
    Implicit imports of parent packages are left out too: a package's ``__init__``
    re-exporting its modules is no loop with the modules that import each other.
    """
    graph: dict[str, list[Edge]] = {}
    for module, (text, is_package) in sources.items():
        package = module if is_package else module.rpartition(".")[0]
        edges: list[Edge] = []
        for node, where in _import_nodes(ast.parse(text, filename=module).body):
            targets: list[str | None]
            if isinstance(node, ast.Import):
                targets = [_known(alias.name, sources) for alias in node.names]
            else:
                base = _absolute(node, package)
                assert base is not None, f"{module}: a relative import outside a package"
                targets = [_known(f"{base}.{alias.name}", sources) for alias in node.names]
            edges += [Edge(module, target, node.lineno, where)
                      for target in dict.fromkeys(targets) if target and target != module]
        graph[module] = edges
    return graph


def loops(graph: Mapping[str, list[Edge]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(graph):  # iterative: the graph may be deep
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted({e.target for e in graph[root]})))]
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted({e.target for e in graph[target]}))))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def shortest_cycle(graph: Mapping[str, list[Edge]], component: frozenset[str]
                   ) -> list[Edge]:
    """A shortest cycle through the first module of ``component`` (breadth first)."""
    start = min(component)
    came_by: dict[str, Edge] = {}
    todo = deque([start])
    while todo:
        module = todo.popleft()
        for edge in graph[module]:
            if edge.target not in component:
                continue
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if edge.target not in came_by:
                came_by[edge.target] = edge
                todo.append(edge.target)
    raise AssertionError(f"{sorted(component)} is no loop")


def describe(graph: Mapping[str, list[Edge]], component: frozenset[str]) -> str:
    """A loop for a failure message: one cycle's path, then every import inside it."""
    cycle = shortest_cycle(graph, component)
    lines = ["  " + " -> ".join([cycle[0].source] + [e.target for e in cycle])]
    lines += [f"    {e.source} imports {e.target} (line {e.line}, {e.where})"
              for module in sorted(component) for e in graph[module] if e.target in component]
    return "\n".join(lines)


def _sources() -> dict[str, tuple[str, bool]]:
    sources: dict[str, tuple[str, bool]] = {}
    for package in GRAPH_PACKAGES:
        found = sorted((ROOT / package).glob("**/*.py"))
        assert found, f"package {package!r} has no modules: a stale name?"
        for path in found:
            sources[_module_name(path)] = (path.read_text(encoding="utf-8"),
                                           path.name == "__init__.py")
    return sources


def test_no_import_loops() -> None:
    graph = import_graph(_sources())
    found = loops(graph)
    new = found - KNOWN_LOOPS_ISSUE_17
    gone = KNOWN_LOOPS_ISSUE_17 - found
    problems = []
    if new:
        problems.append("import loops among the modules of p2pchat and bootstrap:\n"
                        + "\n".join(describe(graph, c) for c in sorted(new, key=sorted)))
    if gone:
        problems.append("KNOWN_LOOPS_ISSUE_17 lists loops that are gone (or no longer "
                        "exactly these modules): remove or shrink these entries:\n"
                        + "\n".join(f"  {sorted(c)}" for c in sorted(gone, key=sorted)))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def test_import_graph_sees_every_module_and_the_imports() -> None:
    graph = import_graph(_sources())
    assert {"p2pchat", "p2pchat.core", "p2pchat.errors", "bootstrap.core"} <= set(graph)
    assert "p2pchat.cli.main" in [e.target for e in graph["p2pchat.__main__"]]
    assert sum(len(edges) for edges in graph.values()) > len(graph)


_FAKE = {
    "pkg": ("from pkg.a import A\n", True),  # re-exports: no loop with a and b
    "pkg.a": ("from pkg import b\nA = 1\n", False),
    "pkg.b": ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from .c import C\n", False),
    "pkg.c": ("import os\ndef f():\n    import pkg.a.missing\n", False),
    "pkg.d": ("from . import e\n", False),
    "pkg.e": ("from pkg.d import *\n", False),
    "pkg.f": ("import pkg.f\nfrom pkg import A\n", False),
}


def test_loop_finder_follows_local_type_checking_and_relative_imports() -> None:
    graph = import_graph(_FAKE)
    assert [("pkg.a", "top level")] == [(e.target, e.where) for e in graph["pkg"]]
    assert [("pkg.b", 1)] == [(e.target, e.line) for e in graph["pkg.a"]]
    assert [("pkg.c", "under TYPE_CHECKING")] == [(e.target, e.where) for e in graph["pkg.b"]]
    assert [("pkg.a", "in a function")] == [(e.target, e.where) for e in graph["pkg.c"]]
    assert ["pkg"] == [e.target for e in graph["pkg.f"]]
    assert {frozenset({"pkg.a", "pkg.b", "pkg.c"}), frozenset({"pkg.d", "pkg.e"})} == loops(graph)
    assert ["pkg.a", "pkg.b", "pkg.c", "pkg.a"] == [
        "pkg.a", *(e.target for e in shortest_cycle(graph, frozenset({"pkg.a", "pkg.b",
                                                                      "pkg.c"})))]
    assert ("  pkg.d -> pkg.e -> pkg.d\n"
            "    pkg.d imports pkg.e (line 1, top level)\n"
            "    pkg.e imports pkg.d (line 1, top level)") == describe(
        graph, frozenset({"pkg.d", "pkg.e"}))
