"""The scenario engine's layout (issue 17): model first, then parser, runner and report,
importing only downwards (TYPE_CHECKING imports included); every module under 800
lines with a docstring; and every step kind the parser knows is a variant of the
closed ``Step`` union, and every variant a kind the parser builds."""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path
from typing import Any, cast

import pytest

from p2pchat.testing.scenario import parse_scenario
from p2pchat.testing.scenario import parse_steps as steps_module
from p2pchat.testing.scenario.model import ASSERTIONS, Assertion, Step

PACKAGE = Path(__file__).resolve().parents[2] / "p2pchat" / "testing" / "scenario"
PREFIX = "p2pchat.testing.scenario"
#: module -> the engine modules it may import (the package's __init__ joins them all)
ALLOWED = {
    "model": set(),
    "locator": set(),
    "parse_values": {"model", "locator"},
    "parse_steps": {"model", "parse_values"},
    "parser": {"model", "locator", "parse_steps", "parse_values"},
    "runner": {"model"},
    "report": {"model"},
}


def _engine_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path.name}: a relative import")
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name == PREFIX:
                found.add("__init__")
            elif name.startswith(PREFIX + "."):
                found.add(name.removeprefix(PREFIX + ".").split(".")[0])
    return found


def test_every_module_is_accounted_for() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == {*ALLOWED, "__init__"}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_modules_import_only_downwards(module: str) -> None:
    assert _engine_imports(PACKAGE / f"{module}.py") <= ALLOWED[module]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_modules_are_short_and_say_what_they_own(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 800
    assert ast.get_docstring(ast.parse(text))


def _variants(union: object) -> list[type]:
    out: list[type] = []
    for arg in typing.get_args(union):
        out += _variants(arg) if isinstance(arg, types.UnionType) else [arg]
    return out


def test_the_parser_builds_every_variant_and_only_variants() -> None:
    """One minimal table per kind the parser knows; each parses to a variant whose
    ``kind`` is its ``do``, and together they cover the whole union."""
    head = ('nodes = ["a", "b"]\n[[server]]\nname = "s"\n[[channel]]\nname = "g"\n'
            '[[step]]\ndo = "post"\nnode = "a"\nid = "m"\n')
    required = {"node": '"a"', "nodes": '["b"]', "msg": '"m"', "text": '"x"',
                "target": '"b"', "of": '"b"', "rank": '"member"', "seconds": "1",
                "rate": "0.1", "preset": '"calm"', "between": '["a", "b"]', "times": "1",
                "steps": '[{ do = "heal" }]', "from": '"a"', "to": '"b"', "kind": '"forged"',
                "by": "[]", "messages": "1", "msgs": '["m", "m2"]', "status": '"member"',
                "fault": '"loss"', "server": '"s"'}
    built: set[type] = set()
    for kind, (_, keys) in steps_module._STEP_KEYS.items():
        body = "".join(f"{key} = {required[key]}\n" for key in keys)
        if kind in ("post", "offline", "online", "isolate", "reconnect"):
            body += 'node = "b"\n'
        if kind == "partition":
            body += 'groups = [["a"], ["b"]]\n'
        extra = '[[step]]\ndo = "post"\nnode = "a"\nid = "m2"\n' if kind == "order" else ""
        text = head + extra + f'[[step]]\ndo = "{kind}"\n' + body
        step = parse_scenario(text, f"{kind}.toml").steps[-1]
        assert kind == step.kind
        built.add(type(step))
    assert set(_variants(Step)) == built


def test_the_assertion_union_is_the_assertion_kinds() -> None:
    kinds = {cast(Any, variant).KIND for variant in _variants(Assertion)}
    assert set(ASSERTIONS) == kinds


def test_a_step_is_a_frozen_value() -> None:
    step: Step = parse_scenario('nodes = ["a", "b"]\n[[channel]]\nname = "g"\n'
                                '[[step]]\ndo = "heal"\n', "h.toml").steps[0]
    with pytest.raises(AttributeError):
        step.line = 3  # type: ignore[misc]
