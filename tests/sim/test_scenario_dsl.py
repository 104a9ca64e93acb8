"""The scenario steps and assertions added for issue 16: each assertion can fail, with a
clear message; servers, isolation, one-way blocks, per-link faults and hostile steps do
what the file says; bad files name the line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.testing.scenario import ScenarioError, parse_scenario, run_scenario
from p2pchat.testing.scenario.model import Block, Fired, Hostile, Link

HEAD = """name = "case"
nodes = ["a", "b", "c"]

[[server]]
name = "srv"

[[channel]]
name = "general"
"""

#: every new assertion once with an expectation that does not hold
NEGATED = HEAD + """
[[step]]
do = "post"
node = "a"
text = "first"
id = "first"

[[step]]
do = "advance"
seconds = 1

[[step]]
do = "post"
node = "b"
text = "second"
id = "second"

[[step]]
do = "settle"

[[step]]
do = "deleted"
msg = "first"

[[step]]
do = "edited"
msg = "first"

[[step]]
do = "reactions"
msg = "first"
by = ["b"]

[[step]]
do = "message_count"
messages = 5

[[step]]
do = "order"
msgs = ["second", "first"]

[[step]]
do = "key_status"
node = "c"
status = "removed"

[[step]]
do = "fired"
fault = "loss"

[[step]]
do = "fired"
fault = "hostile"
at_most = 0
at_least = 0

[[step]]
do = "server_holds"
server = "srv"
at_least = 1000

[[step]]
do = "edit"
node = "a"
msg = "first"
text = "first, edited"

[[step]]
do = "settle"

[[step]]
do = "edited"
msg = "first"
text = "something else"
"""

EXPECTED = [  # (kind, words in the detail)
    ("deleted", "shows"),
    ("edited", "never edited"),
    ("reactions", "by nobody, not ['b']"),
    ("message_count", "expected 5 messages: a shows 2"),
    ("order", "shows them as first, second"),
    ("key_status", "expected key status removed: c is member"),
    ("fired", "loss fired 0 times (at least 1 expected)"),
    ("fired", ""),  # passes: nothing hostile happened
    ("server_holds", "(at least 1000 expected)"),
    ("edited", "edited to 'first, edited', not 'something else'"),
]


def test_each_new_assertion_fails_with_a_clear_message() -> None:
    result = run_scenario(parse_scenario(NEGATED, "negated.toml"), seed=3)
    assert result.error is None, result.report()
    got = [(v.kind, v.passed, v.detail) for v in result.verdicts]
    assert [k for k, _ in EXPECTED] == [k for k, _, _ in got]
    for (kind, words), (_, passed, detail) in zip(EXPECTED, got, strict=True):
        assert (words == "") == passed, f"{kind}: {detail}"
        assert words in detail, f"{kind}: {detail}"
    assert "FAIL  deleted" in result.report() and "FAILED with seed 3" in result.report()


POSITIVE = HEAD + """
[[step]]
do = "post"
node = "a"
text = "first"
id = "first"

[[step]]
do = "settle"

[[step]]
do = "react"
node = "c"
msg = "first"

[[step]]
do = "delete"
node = "a"
msg = "first"

[[step]]
do = "settle"

[[step]]
do = "deleted"
msg = "first"

[[step]]
do = "reactions"
msg = "first"
by = ["c"]

[[step]]
do = "key_status"
nodes = "all"
status = "member"

[[step]]
do = "server_holds"
server = "srv"
"""


def test_the_same_assertions_hold_when_they_should() -> None:
    result = run_scenario(parse_scenario(POSITIVE, "positive.toml"), seed=3)
    assert result.passed, result.report()


ISOLATION = HEAD + """
[[step]]
do = "isolate"
node = "c"

[[step]]
do = "post"
node = "c"
text = "written offline"
id = "offline"

[[step]]
do = "advance"
seconds = 10

[[step]]
do = "visible_to"
msg = "offline"
nodes = ["a"]

[[step]]
do = "reconnect"
node = "c"

[[step]]
do = "settle"

[[step]]
do = "visible_to"
msg = "offline"
nodes = ["a", "b"]
"""


def test_an_isolated_node_writes_and_nobody_sees_it_until_it_reconnects() -> None:
    result = run_scenario(parse_scenario(ISOLATION, "iso.toml"), seed=4)
    assert result.error is None, result.report()
    assert [False, True] == [v.passed for v in result.verdicts], result.report()
    assert "a does not show 1 of 1" in result.verdicts[0].detail


def test_a_scenario_claiming_loss_fails_when_no_packet_was_lost() -> None:
    text = HEAD + """
[[step]]
do = "link"
between = ["a", "b"]
loss = 0.0
latency_ms = [100, 100]

[[step]]
do = "post"
node = "a"
count = 5

[[step]]
do = "settle"

[[step]]
do = "fired"
fault = "loss"
between = ["a", "b"]
"""
    result = run_scenario(parse_scenario(text, "noloss.toml"), seed=5)
    assert not result.passed
    assert "loss fired 0 times between a and b (at least 1 expected)" == \
        result.verdicts[0].detail


def test_typed_steps_carry_the_new_fields() -> None:
    text = HEAD + """
[[step]]
do = "block"
from = "a"
to = "srv"

[[step]]
do = "link"
between = ["b", "c"]
latency_ms = [5, 9]
loss = 0.25
one_way = true

[[step]]
do = "hostile"
node = "b"
kind = "backdated"
age_days = 2
to = ["a"]
id = "old"

[[step]]
do = "fired"
fault = "reset"
between = ["a", "srv"]
at_most = 3
"""
    steps = parse_scenario(text, "t.toml").steps
    assert Block(line=11, number=1, src="a", dst="srv") == steps[0]
    assert Link(line=16, number=2, between=("b", "c"), latency_ms=(5.0, 9.0), loss=0.25,
                one_way=True) == steps[1]
    assert Hostile(line=23, number=3, channel="general", node="b", what="backdated",
                   to=("a",), label="old", age_ms=2 * 86_400_000) == steps[2]
    assert Fired(line=31, number=4, fault="reset", between=("a", "srv"), at_least=1,
                 at_most=3) == steps[3]


# (what, step table(s) after HEAD, line the error names, words in the message)
INVALID = [
    ("unknown key", '\n[[step]]\ndo = "block"\nfrom = "a"\nto = "b"\nspeed = 1\n', 14,
     "block: unknown key 'speed'"),
    ("missing key", '\n[[step]]\ndo = "unblock"\nfrom = "a"\n', 11, "missing 'to'"),
    ("wrong type", '\n[[step]]\ndo = "link"\nbetween = ["a", "b"]\nloss = "lots"\n', 13,
     "loss must be a number"),
    ("out of range", '\n[[step]]\ndo = "link"\nbetween = ["a", "b"]\nloss = 2\n', 13,
     "loss must be in 0..1"),
    ("one node", '\n[[step]]\ndo = "link"\nbetween = ["a"]\n', 12, "two different nodes"),
    ("unknown node", '\n[[step]]\ndo = "hostile"\nnode = "a"\nkind = "forged"\n'
     'to = ["zed"]\n', 14, "unknown node 'zed' in to"),
    ("unknown kind", '\n[[step]]\ndo = "hostile"\nnode = "a"\nkind = "rude"\n', 13,
     "kind must be one of forged, backdated"),
    ("garbage id", '\n[[step]]\ndo = "hostile"\nnode = "a"\nkind = "garbage"\nid = "g"\n', 14,
     "cannot have an id"),
    ("age on forged", '\n[[step]]\ndo = "hostile"\nnode = "a"\nkind = "forged"\n'
     'age_days = 3\n', 14, "age_days is for kind"),
    ("server posts", '\n[[step]]\ndo = "post"\nnode = "srv"\n', 12,
     "'srv' in node is a bootstrap server"),
    ("unknown fault", '\n[[step]]\ndo = "fired"\nfault = "meteor"\n', 12,
     "fault must be one of loss"),
    ("bounds", '\n[[step]]\ndo = "fired"\nfault = "loss"\nat_least = 3\nat_most = 1\n', 14,
     "at_most must not be below at_least"),
    ("unknown server", '\n[[step]]\ndo = "server_holds"\nserver = "nope"\n', 12,
     "unknown server 'nope'"),
    ("bad status", '\n[[step]]\ndo = "key_status"\nstatus = "vip"\n', 12,
     "status must be one of member, waiting, removed"),
    ("order of one", '\n[[step]]\ndo = "post"\nnode = "a"\nid = "x"\n\n[[step]]\n'
     'do = "order"\nmsgs = ["x"]\n', 17, "at least two message ids"),
    ("order of many", '\n[[step]]\ndo = "post"\nnode = "a"\nid = "x"\ncount = 2\n\n'
     '[[step]]\ndo = "post"\nnode = "a"\nid = "y"\n\n[[step]]\ndo = "order"\n'
     'msgs = ["x", "y"]\n', 23, "'x' names several messages"),
    ("negative count", '\n[[step]]\ndo = "message_count"\nmessages = -1\n', 12,
     "messages must be in 0.."),
    ("lose_own_last type", '\n[[step]]\ndo = "offline"\nnode = "a"\nlose_own_last = "2"\n',
     13, "lose_own_last must be an integer"),
    ("isolate both", '\n[[step]]\ndo = "isolate"\nnode = "a"\nnodes = ["b"]\n', 11,
     "exactly one of 'node' and 'nodes'"),
]


@pytest.mark.parametrize(("body", "line", "words"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_new_steps_name_the_file_line_and_key(tmp_path: Path, body: str, line: int,
                                                     words: str) -> None:
    path = tmp_path / "case.toml"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(HEAD + body, str(path))
    assert words in str(caught.value)
    assert line == caught.value.line, str(caught.value)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("text", "line", "words"), [
    ('nodes = ["a", "b"]\n[[server]]\nname = "s"\ncolour = 1\n[[channel]]\nname = "g"\n', 4,
     "unknown key 'colour' in [[server]]"),
    ('nodes = ["a", "b"]\n[[server]]\nname = "a"\n[[channel]]\nname = "g"\n', 3,
     "declared twice"),
    ('nodes = ["a", "b"]\n[[server]]\nname = "s"\nusers = ["z"]\n[[channel]]\nname = "g"\n', 4,
     "unknown node 'z' in users"),
    ('nodes = ["a", "b"]\n[[server]]\nusers = ["a"]\n[[channel]]\nname = "g"\n', 2,
     "a server needs a name"),
])
def test_invalid_server_tables_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "s.toml")
    assert (line, True) == (caught.value.line, words in str(caught.value)), str(caught.value)
