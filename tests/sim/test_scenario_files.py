"""Scenario files (docs/scenarios) and their engine: examples pass, runs are byte-identical
per seed across processes, invalid files say which line is wrong, and a deliberately
broken moderation rule is caught with the seed and a trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pchat.channel import moderation
from p2pchat.channel.moderation import InPast, ModEvent
from p2pchat.testing import scenario as engine
from p2pchat.testing.pytest_plugin import ScenarioRunner
from p2pchat.testing.scenario import (
    MAX_NODES,
    ScenarioError,
    load_scenario,
    parse_scenario,
    run_scenario_file,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "scenarios"
SPLIT_BRAIN = EXAMPLES / "split-brain-moderation.toml"
#: the 50-node, 10,000-message file runs scaled down here; the CLI measures the full one
SCALED = {"gossip-50.toml": 600}
REQUIRED = ("long-partition", "flapping-link", "split-brain-moderation",
            "offline-rotation-catchup", "gossip-50",
            # issue 16: one example per new feature
            "bootstrap-relay", "offline-authoring", "crash-lost-writes", "lossy-links",
            "one-way-partition", "hostile-member", "many-joiners", "chain-latency")
#: examples that show a bug being fixed in parallel (issue 16): xfail, strict, so each
#: flips to a failure ("XPASS(strict)") the moment its fix lands -- then drop it here
KNOWN_BROKEN: dict[str, str] = {}


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


def _example_params() -> list[object]:
    return [pytest.param(p, id=p.stem, marks=[pytest.mark.xfail(
                reason=KNOWN_BROKEN[p.name], strict=True)] if p.name in KNOWN_BROKEN else [])
            for p in _examples()]


def test_the_required_examples_exist_and_are_documented() -> None:
    names = [p.stem for p in _examples()]
    assert set(REQUIRED) <= set(names)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert [] == [n for n in names if f"{n}.toml" not in readme]


@pytest.mark.parametrize("path", _example_params())
def test_every_example_passes(path: Path, run_scenario: ScenarioRunner) -> None:
    result = run_scenario(path, messages=SCALED.get(path.name))
    assert result.verdicts and all(v.passed for v in result.verdicts)
    assert result.messages > 0


def _cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    env.pop("SEED", None)
    return subprocess.run([sys.executable, "-m", "p2pchat.cli.main", "sim", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_same_file_and_seed_give_byte_identical_json_across_processes() -> None:
    first = _cli(str(SPLIT_BRAIN), "--seed", "9", "--json", hash_seed="0")
    second = _cli(str(SPLIT_BRAIN), "--seed", "9", "--json", hash_seed="4242")
    assert 0 == first.returncode, first.stderr
    assert first.stdout == second.stdout
    # the same run in this process renders the same bytes
    result = run_scenario_file(str(SPLIT_BRAIN), 9)
    assert first.stdout == json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
    report = json.loads(first.stdout)
    assert 9 == report["seed"] and report["passed"] and report["failure"] is None
    other = run_scenario_file(str(SPLIT_BRAIN), 10).to_json()
    assert other["trace_digest"] != report["trace_digest"]


#: issue 16's features (servers, isolation, per-link faults, one-way blocks, hostile steps)
NEW_FEATURES = ("bootstrap-relay", "offline-authoring", "lossy-links", "one-way-partition",
                "hostile-member")


@pytest.mark.parametrize("name", NEW_FEATURES)
def test_new_features_give_byte_identical_json_across_processes(name: str) -> None:
    path = str(EXAMPLES / f"{name}.toml")
    first = _cli(path, "--json", hash_seed="0")
    second = _cli(path, "--json", hash_seed="4242")
    assert 0 == first.returncode, first.stdout[-2000:] + first.stderr
    assert first.stdout == second.stdout
    result = run_scenario_file(path)
    assert first.stdout == json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"


def _write(tmp_path: Path, text: str, name: str = "case.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


HEAD = """name = "case"
nodes = ["a", "b", "c"]

[[channel]]
name = "general"
"""

# (what, file body after HEAD, the line the error must name, words in the message)
INVALID = [
    ("syntax", '\n[[step]]\ndo = "post"\nnode = a\n', 9, "invalid TOML"),
    ("unknown step", '\n[[step]]\ndo = "post"\nnode = "a"\n\n[[step]]\ndo = "explode"\n', 12,
     "unknown step 'explode'"),
    ("unknown node", '\n[[step]]\ndo = "post"\ntext = "hi"\nnode = "zed"\n', 10,
     "unknown node 'zed'"),
    ("unknown key", '\n[[step]]\ndo = "heal"\nnode = "a"\n', 9, "unknown key 'node'"),
    ("missing key", '\n[[step]]\ndo = "advance"\n', 8, "missing 'seconds'"),
    ("unknown message", '\n[[step]]\ndo = "edit"\nnode = "a"\nmsg = "nope"\ntext = "x"\n', 10,
     "unknown message id 'nope'"),
    ("bad type", '\n[[step]]\ndo = "advance"\nseconds = "soon"\n', 9, "must be a number"),
    ("out of range", '\n[[step]]\ndo = "drop"\nrate = 1.5\n', 9, "rate must be in 0..1"),
    ("node twice", '\n[[step]]\ndo = "partition"\ngroups = [["a", "b"], ["b"]]\n', 9,
     "in two partition groups"),
    ("nested repeat", '\n[[step]]\ndo = "repeat"\ntimes = 2\n\n  [[step.steps]]\n'
     '  do = "repeat"\n  times = 2\n  steps = [{ do = "heal" }]\n', 12, "cannot repeat"),
    ("inline table", '\n[[step]]\ndo = "heal"\n\n[[step]]\ndo = "repeat"\ntimes = 2\n'
     'steps = [{ do = "heal" }, { do = "post", node = "q" }]\n', 13, "unknown node 'q'"),
    ("edit by another", '\n[[step]]\ndo = "post"\nnode = "a"\nid = "m"\n\n[[step]]\n'
     'do = "edit"\nnode = "b"\nmsg = "m"\ntext = "x"\n', 14, "only its author"),
    ("id reused", '\n[[step]]\ndo = "post"\nnode = "a"\nid = "m"\n\n[[step]]\n'
     'do = "post"\nnode = "b"\nid = "m"\n', 15, "used twice"),
]


@pytest.mark.parametrize(("body", "line", "words"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_files_name_the_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    path = _write(tmp_path, HEAD + body)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert line == caught.value.line, str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(caught.value)


def test_invalid_top_level_and_channel_tables_name_the_line() -> None:
    cases = [
        ('nodes = ["a", "b"]\ncolour = "red"\n[[channel]]\nname = "g"\n', 2, "colour"),
        ('nodes = ["a", "b"]\n[[channel]]\nname = "g"\nfounder = "z"\n', 4, "unknown node"),
        ('nodes = ["a", "b"]\n[[channel]]\nname = "g"\n[[channel]]\nname = "g"\n', 5, "twice"),
        (f"nodes = {MAX_NODES + 1}\n[[channel]]\nname = \"g\"\n", 1, f"2..{MAX_NODES}"),
        ('nodes = ["a", "b"]\n[network]\nlatency_ms = [50, 5]\n[[channel]]\nname = "g"\n', 3,
         "low must not exceed high"),
        ('nodes = ["a", "a"]\n[[channel]]\nname = "g"\n', 1, "declared twice"),
        ('nodes = ["a", "b"]\n', None, "at least one [[channel]]"),
    ]
    for text, line, words in cases:
        with pytest.raises(ScenarioError) as caught:
            parse_scenario(text, "t.toml")
        assert (line, True) == (caught.value.line, words in str(caught.value)), str(caught.value)


def test_cli_exit_codes_and_messages(tmp_path: Path) -> None:
    bad = _write(tmp_path, HEAD + '\n[[step]]\ndo = "post"\nnode = "zed"\n')
    out = _cli(str(bad))
    assert 1 == out.returncode
    assert "" == out.stdout
    assert [f"p2pchat: {bad}:9: unknown node 'zed' in node"] == out.stderr.splitlines()
    usage = _cli(str(tmp_path / "missing.toml"))
    assert 2 == usage.returncode
    assert 2 == _cli(str(bad), "--seed", "-1").returncode


FAILING = HEAD + """
[[step]]
do = "partition"
groups = [["a"], ["b", "c"]]

[[step]]
do = "post"
node = "a"
text = "alone"
id = "alone"

[[step]]
do = "advance"
seconds = 5

[[step]]
do = "visible_to"
msg = "alone"
nodes = ["c"]

[[step]]
do = "heal"

[[step]]
do = "settle"

[[step]]
do = "visible_to"
msg = "alone"
nodes = ["c"]
"""


def test_a_failing_assertion_prints_the_seed_and_the_trace_up_to_it(tmp_path: Path) -> None:
    path = _write(tmp_path, FAILING)
    trace_file = tmp_path / "trace.txt"
    out = _cli(str(path), "--seed", "5", "--trace", str(trace_file))
    assert 1 == out.returncode, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("  FAIL  visible_to      line 22") for line in lines)
    assert any(line.startswith("  PASS  visible_to      line 33") for line in lines)
    assert f"FAILED with seed 5 (replay: p2pchat sim {path} --seed 5)" in lines
    trace = lines[lines.index(f"FAILED with seed 5 (replay: p2pchat sim {path} --seed 5)") + 2:]
    text = "\n".join(trace)
    assert "* partition reset a | b,c" in text and "a send alone" in text
    assert trace[-1].startswith("  == visible_to FAILED: c does not show 1 of 1")
    assert "heal" not in text, "the trace stops at the failing assertion"
    assert not any(" ping" in t or " timer" in t for t in trace), "no keepalives or timers"
    full = trace_file.read_text(encoding="utf-8")
    assert "* heal" in full and " timer" in full and len(full.splitlines()) > len(trace)


def _unban_beats_ban(original: object) -> object:
    def resolve_flag(events: list[ModEvent], strong: str, weak: str, in_past: InPast
                     ) -> bool | None:
        relevant = [e for e in events if e.action in (strong, weak)]
        if (strong, weak) != ("ban", "unban") or not relevant:
            return original(events, strong, weak, in_past)  # type: ignore[operator, no-any-return]
        # the broken rule: a concurrent unban in the frontier beats the ban
        return all(e.action == strong for e in moderation._frontier(relevant, in_past))
    return resolve_flag


def test_a_broken_ban_rule_fails_split_brain_with_a_seed_and_a_trace(
        monkeypatch: pytest.MonkeyPatch, run_scenario: ScenarioRunner) -> None:
    assert run_scenario(SPLIT_BRAIN).passed  # the rule as it is
    monkeypatch.setattr(moderation, "resolve_flag", _unban_beats_ban(moderation.resolve_flag))
    result = run_scenario(SPLIT_BRAIN, check=False)
    assert not result.passed
    failure = result.first_failure
    assert failure is not None and "rank_is" == failure.kind
    assert "user is not banned" in failure.detail and "sees member" in failure.detail
    report = result.report()
    assert f"FAILED with seed {result.seed}" in report
    trace = result.failure_trace()
    assert any("m1 bans user" in line for line in trace)
    assert any("m2 unbans user" in line for line in trace)
    assert any("* partition" in line for line in trace)
    assert trace[-1].startswith("== rank_is FAILED")
    # and the fixture turns it into a test failure that carries the same report
    with pytest.raises(pytest.fail.Exception, match=f"FAILED with seed {result.seed}"):
        run_scenario(SPLIT_BRAIN)


def test_messages_override_scales_the_posts() -> None:
    scenario = load_scenario(EXAMPLES / "gossip-50.toml")
    assert 10_000 == scenario.planned_messages()
    assert 600 == scenario.with_messages(600).planned_messages()
    assert 50 == len(scenario.nodes)


@pytest.mark.parametrize("name", ["split-brain-moderation", "offline-rotation-catchup",
                                  "gossip-50"])
def test_sharing_work_across_nodes_changes_nothing(name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner shares pure receive steps (p2pchat.testing.shared) across its nodes and
    defers automerge applies another node already made. Off, every node computes all of it
    itself: the run must be the same event for event, and every node's document, read at
    the end (which applies whatever it deferred), must hold the same changes."""
    path = str(EXAMPLES / f"{name}.toml")
    messages = 120 if name == "gossip-50" else None
    shared = engine.run_scenario(load_scenario(path), 5, messages)
    monkeypatch.setattr(engine.runner, "SharedWork", lambda: None)
    alone = engine.run_scenario(load_scenario(path), 5, messages)
    assert json.dumps(shared.to_json(), sort_keys=True) == \
        json.dumps(alone.to_json(), sort_keys=True)
    assert shared.net.trace_digest() == alone.net.trace_digest()
    deferred = 0
    for node_name, node in shared.net.nodes.items():
        for cid, state in node.core.hub.channels.items():
            other = alone.net.nodes[node_name].core.hub.channels[cid]
            deferred += len(state.doc._deferred)
            assert sorted(state.doc.doc.get_heads()) == sorted(other.doc.doc.get_heads())
            assert state.history() == other.history()
    if name == "gossip-50":
        assert deferred  # the optimisation was exercised, not silently off


@pytest.mark.parametrize("seed", range(1, 11))
@pytest.mark.parametrize("example", ["many-joiners.toml", "chain-latency.toml"])
def test_issue_16_repros_pass_on_seeds_1_to_10(run_scenario: ScenarioRunner, example: str,
                                               seed: int) -> None:
    """Breaks 1 (admission stalls past 16 joiners) and 2 (a timer that would spin) were
    reported for every seed; their example files must now pass on each of 1-10."""
    run_scenario(EXAMPLES / example, seed=seed)
