"""Moderation conformance vectors (tests/vectors/moderation, docs/protocol.md §11).

Every vector file must load under the strict loader, and p2pchat's fold over its DAG must
give exactly its ``expected`` object, whatever the order of the nodes and of the events
handed to the fold (every replica computes the identical fold). The files must be what the
generator writes today. Each vector's key facts are also asserted here by hand, from the
rules, so the generator cannot silently bless a wrong fold.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pchat.crypto import secret_key_from_seed
from p2pchat.identity import Identity
from tests.vectors.moderation import generate
from tests.vectors.moderation.kit import (
    DIRECTORY,
    Vector,
    VectorError,
    evaluate,
    load,
    parse,
    vector_files,
)

MIN_VECTORS = 9
NAMES = {did: name for name, did in generate.PEOPLE.items()}


@functools.cache
def vectors() -> dict[str, Vector]:
    return {path.stem: load(path) for path in vector_files()}


def _stems() -> list[str]:
    return [path.stem for path in vector_files()]


def test_there_are_enough_vectors() -> None:
    assert len(vector_files()) >= MIN_VECTORS


@pytest.mark.parametrize("stem", _stems())
def test_the_fold_gives_the_expected_result(stem: str) -> None:
    v = vectors()[stem]
    assert v.expected == evaluate(v.owner, v.nodes)


@settings(max_examples=30, deadline=None)
@given(stem=st.sampled_from(_stems()), data=st.data())
def test_any_order_gives_the_identical_fold(stem: str, data: st.DataObject) -> None:
    v = vectors()[stem]
    doc = v.to_json()
    doc["nodes"] = data.draw(st.permutations(doc["nodes"]), label="node order")
    shuffled = parse(doc)  # the loader does not care about the order either
    n_mod = sum(n.kind == "mod" for n in v.nodes)
    order = data.draw(st.permutations(range(n_mod)), label="event order")
    assert v.expected == evaluate(shuffled.owner, shuffled.nodes, order)


def test_the_files_are_what_the_generator_writes() -> None:
    files = generate.render()
    assert sorted(files) == sorted(p.name for p in vector_files())
    for name, text in files.items():
        assert text == (DIRECTORY / name).read_text(encoding="utf-8"), \
            f"{name} differs: run python -m tests.vectors.moderation.generate"


def test_the_people_are_did_keys_from_the_documented_seeds() -> None:
    for person, seed in generate.SEEDS.items():
        did = Identity(secret_key_from_seed(bytes([seed]) * 32), bytes(16)).did
        assert did == generate.PEOPLE[person]


# --- key facts, by hand ------------------------------------------------------------------


class Facts:
    """A vector's fold, read by node label and person name."""

    def __init__(self, stem: str) -> None:
        self.v = vectors()[stem]
        self.result = evaluate(self.v.owner, self.v.nodes)

    def applied(self, label: str) -> bool:
        return bool(self.result["verdicts"][self.v.node(label).id]["applied"])

    def why(self, label: str) -> str:
        return str(self.result["verdicts"][self.v.node(label).id]["why"])

    def hidden(self, label: str) -> str:
        """Why the post is hidden, '' if visible."""
        nid = self.v.node(label).id
        assert (nid in self.result["hidden"]) != (nid in self.result["visible_posts"])
        return str(self.result["hidden"].get(nid, ""))

    def people(self, key: str) -> set[str]:
        return {NAMES[did] for did in self.result[key]}


STRONG = "(strong removal)"


def test_01_concurrent_ban_and_unban_leaves_the_member_banned() -> None:
    f = Facts("01-concurrent-ban-unban")
    assert f.applied("ban") and f.applied("unban")
    assert {"user"} == f.people("banned")
    assert "" == f.hidden("before")
    assert "author banned before posting" == f.hidden("after both")


def test_02_an_unban_after_the_ban_restores() -> None:
    f = Facts("02-unban-after-ban")
    assert f.applied("ban") and f.applied("unban")
    assert set() == f.people("banned")
    assert "" == f.hidden("restored")
    assert f.hidden("unseen").endswith(STRONG)


def test_03_a_concurrently_revoked_moderator_counts_for_nothing() -> None:
    f = Facts("03-revoked-moderator")
    assert f.applied("deop") and f.applied("mute user2")
    for label in ("ban by mod", "unmute by mod"):
        assert not f.applied(label)
        assert "revoked (deop) concurrently" in f.why(label)
    assert set() == f.people("banned")
    assert {"user2"} == f.people("muted")
    assert set() == f.people("moderators")
    assert "author muted before posting" == f.hidden("after unmute")
    assert "" == f.hidden("after invalid ban")


def test_04_a_back_dated_ban_is_invalid_whatever_its_clock() -> None:
    f = Facts("04-back-dated-ban")
    assert f.v.node("back-dated ban").op["ts"] < f.v.node("deop").op["ts"]
    assert not f.applied("back-dated ban") and f.why("back-dated ban").endswith(STRONG)
    assert (False, "needs moderator rank") == (f.applied("ban after deop"),
                                               f.why("ban after deop"))
    assert set() == f.people("banned")
    assert "" == f.hidden("user after back-dated ban")


def test_05_mutual_bans() -> None:
    f = Facts("05-mutual-bans")
    assert not f.applied("mod bans mod2") and not f.applied("mod2 bans mod")
    assert f.applied("owner bans mod") and not f.applied("mod bans owner")
    assert {"mod"} == f.people("banned")
    assert {"mod2"} == f.people("moderators")
    assert f.hidden("mod after ban") and not f.hidden("mod2 after ban")


def test_06_rank_rules() -> None:
    f = Facts("06-rank-rules")
    for label in ("self-promotion", "mod grants mod", "mod deops mod2", "mod bans owner",
                  "member bans member", "owner bans itself", "mod mutes itself"):
        assert not f.applied(label), label
    assert "acting on oneself" == f.why("owner bans itself") == f.why("mod mutes itself")
    assert f.applied("mod mutes user")
    assert {"user"} == f.people("muted")
    assert set() == f.people("banned")
    assert {"mod", "mod2"} == f.people("moderators")


def test_07_posts_around_a_ban() -> None:
    f = Facts("07-posts-around-a-ban")
    assert "" == f.hidden("earlier") == f.hidden("owner talks") == f.hidden("bystander")
    assert f.hidden("concurrent").endswith(STRONG)
    assert "author banned before posting" == f.hidden("after")


def test_08_moderated_mode() -> None:
    f = Facts("08-moderated-mode")
    assert not f.applied("member sets invite-only")
    assert "" == f.hidden("before moderated")
    assert "moderated" in f.hidden("member in moderated")
    assert "" == f.hidden("mod in moderated") == f.hidden("owner in moderated")
    assert "" == f.hidden("member again")
    assert {"invite-only": False, "moderated": False} == f.result["modes"]


def test_09_invite_only_and_a_kick_beating_a_concurrent_add() -> None:
    f = Facts("09-invite-only")
    assert all(f.applied(x) for x in ("invite-only", "add user", "kick user", "add user again"))
    assert "" == f.hidden("open channel") == f.hidden("added") == f.hidden("mod in invite-only")
    assert "" == f.hidden("wrote before")  # a member from before invite-only stays one
    assert "invite-only" in f.hidden("not added")
    assert "invite-only" in f.hidden("after kick")
    assert {"user"} == f.people("kicked")
    assert {"invite-only": True, "moderated": False} == f.result["modes"]


def _by_id(label: str, f: Facts) -> bytes:
    return bytes.fromhex(f.v.node(label).id)


def test_10_concurrent_topics_tie_by_envelope_id() -> None:
    f = Facts("10-concurrent-topics")
    assert not f.applied("topic by member")
    valid = ["topic by mod", "owner sets the topic"]
    assert all(f.applied(x) for x in valid)
    winner = max(valid, key=lambda x: _by_id(x, f))  # the greatest id, as bytes
    assert "topic by mod" == winner
    assert "mod's topic" == f.result["topic"]
    # neither the clock nor the ulid nor an invalid entry would pick it
    assert "owner sets the topic" == max(valid, key=lambda x: f.v.node(x).op["ts"])
    assert "owner sets the topic" == max(valid, key=lambda x: f.v.node(x).op["ulid"])
    assert _by_id("topic by member", f) > _by_id(winner, f)


def test_11_concurrent_modes_tie_by_envelope_id_and_causality_beats_ids() -> None:
    f = Facts("11-concurrent-modes")
    assert _by_id("mod clears moderated", f) > _by_id("owner sets moderated", f)
    assert _by_id("owner clears invite-only", f) < _by_id("owner sets invite-only", f)
    assert {"invite-only": False, "moderated": False} == f.result["modes"]
    assert "" == f.hidden("after all")


def test_12_rank_revocations() -> None:
    f = Facts("12-rank-revocations")
    assert not f.applied("ban by kicked mod") and not f.applied("mute by unbanned mod2")
    assert f.applied("mute by mod again")
    assert {"mod"} == f.people("moderators")
    assert {"user"} == f.people("muted")
    assert set() == f.people("banned")
    assert {"mod"} == f.people("kicked")


def test_13_removal_edges() -> None:
    f = Facts("13-removal-edges")
    assert f.applied("op user") and f.applied("ban user")
    assert "author was banned in the action's causal past" == f.why("mute by banned user")
    assert {"user"} == f.people("banned")
    assert "user" not in f.people("moderators")
    assert "" == f.hidden("added and posting")
    assert "author kicked concurrently (strong removal)" == f.hidden("posted during the kick")
    assert "user2" not in f.people("kicked")
    assert "" == f.hidden("back after the re-add")
    assert "mod2" not in f.people("moderators")
    assert "moderated" in f.hidden("mod2 during the deop")
    assert "" == f.hidden("mod during moderated")


def test_every_vector_has_its_key_facts_test() -> None:
    tested = {name[5:7] for name in globals() if name.startswith("test_") and
              name[5:7].isdigit()}
    assert {stem[:2] for stem in _stems()} == tested


# --- the loader is strict -----------------------------------------------------------------


def _base() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(generate.render()["03-revoked-moderator.json"])
    return doc


def _set_deps(doc: dict[str, Any], i: int, deps: list[str]) -> None:
    doc["nodes"][i]["deps"] = sorted(deps)


def _cycle(doc: dict[str, Any]) -> None:
    first, second = doc["nodes"][0], doc["nodes"][1]  # second depends on first
    assert [first["id"]] == second["deps"]
    first["deps"] = [second["id"]]


MUTATIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown top-level key": (lambda d: d.update(extra=1), "keys must be"),
    "missing top-level key": (lambda d: d.pop("description"), "keys must be"),
    "other format": (lambda d: d.update(format="p2pchat-moderation-vector/2"), "format"),
    "unknown node key": (lambda d: d["nodes"][0].update(label="x"), "keys must be"),
    "unknown op key": (lambda d: d["nodes"][0]["op"].update(device="x"), "keys must be"),
    "unknown op kind": (lambda d: d["nodes"][0]["op"].update(kind="react"), "kind"),
    "unknown expected key": (lambda d: d["expected"].update(members=[]), "keys must be"),
    "unknown verdict key": (lambda d: next(iter(d["expected"]["verdicts"].values()))
                            .update(at=1), "keys must be"),
    "uppercase id": (lambda d: d["nodes"][0].update(id=d["nodes"][0]["id"].upper()), "hex"),
    "short id": (lambda d: d["nodes"][0].update(id=d["nodes"][0]["id"][:63]), "hex"),
    "non-hex dep": (lambda d: _set_deps(d, 1, ["g" * 64]), "hex"),
    "dangling dep": (lambda d: _set_deps(d, 1, [*d["nodes"][1]["deps"], "0" * 64]),
                     "not a node"),
    "unsorted deps": (lambda d: d["nodes"][1]["deps"].append("0" * 64), "sorted"),
    "cycle": (_cycle, "cycle"),
    "repeated id": (lambda d: d["nodes"].append(copy.deepcopy(d["nodes"][0])), "repeated"),
    "edited op": (lambda d: d["nodes"][0]["op"].update(reason="edited"), "not derived"),
    "bad author": (lambda d: d["nodes"][0].update(author="did:key:zNope"), "did:key"),
    "unknown action": (lambda d: d["nodes"][0]["op"].update(action="shun"), "action"),
    "integer for on": (lambda d: d["nodes"][0]["op"].update(on=1), "on must be"),
    "ulid time is not ts": (lambda d: d["nodes"][0]["op"].update(ts=1), "ulid's time"),
    "value on a ban": (lambda d: d["nodes"][0]["op"].update(value="x"), "value"),
    "missing verdict": (lambda d: d["expected"]["verdicts"].popitem(), "every moderation"),
    "unsorted dids": (lambda d: d["expected"].update(muted=sorted(d["expected"]["muted"] + [
        generate.PEOPLE["user"]], reverse=True)), "sorted"),
    "post both hidden and visible": (lambda d: d["expected"].update(visible_posts=sorted(
        d["expected"]["visible_posts"] + list(d["expected"]["hidden"]))),
        "both hidden and visible"),
    "post left out": (lambda d: d["expected"]["visible_posts"].clear(), "cover every post"),
}


def test_the_loader_accepts_the_unchanged_base() -> None:
    assert vectors()["03-revoked-moderator"] == parse(_base())


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_loader_refuses(mutation: str) -> None:
    change, why = MUTATIONS[mutation]
    doc = _base()
    change(doc)
    with pytest.raises(VectorError, match=why):
        parse(doc)


def test_the_loader_refuses_repeated_keys_and_a_name_that_is_not_the_file(
        tmp_path: Path) -> None:
    text = generate.render()["01-concurrent-ban-unban.json"]
    renamed = tmp_path / "99-elsewhere.json"
    renamed.write_text(text, encoding="utf-8")
    with pytest.raises(VectorError, match="stem"):
        load(renamed)
    repeated = tmp_path / "01-concurrent-ban-unban.json"
    repeated.write_text(text.replace('"topic": ""', '"topic": "", "topic": ""'),
                        encoding="utf-8")
    with pytest.raises(VectorError, match="repeated key"):
        load(repeated)
