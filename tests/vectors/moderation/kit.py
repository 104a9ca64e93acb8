"""Moderation conformance vectors: the file format, a strict loader and the reference run.

A vector is one JSON file: an envelope DAG (moderation entries and posts, each node naming
its deps) and the fold that p2pchat computes over it (docs/protocol.md §11). This module
reads and validates a file (:func:`load`, :func:`parse`; anything off raises
:class:`VectorError`), derives node ids (:func:`node_id`) and runs the real
:func:`~p2pchat.channel.moderation.fold` and :func:`~p2pchat.channel.moderation.hidden_by`
over a DAG (:func:`evaluate`). The generator and the tests share it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pchat.channel import moderation as mod
from p2pchat.channel.ulid import is_ulid, ulid_ms
from p2pchat.errors import IdentityError
from p2pchat.identity import public_key_from_did

FORMAT = "p2pchat-moderation-vector/1"
DIRECTORY = Path(__file__).resolve().parent
#: personalisation of the BLAKE2b-256 that derives node ids
ID_PERSON = b"p2pchat-vector"
MAX_POST_LENGTH = 16_000

_TOP_KEYS = {"format", "name", "description", "owner", "nodes", "expected"}
_NODE_KEYS = {"id", "author", "deps", "op"}
_MOD_KEYS = {"kind", "ulid", "ts", "action", "target", "value", "on", "reason"}
_POST_KEYS = {"kind", "text"}
_EXPECTED_KEYS = {"moderators", "banned", "muted", "kicked", "modes", "topic", "verdicts",
                  "hidden", "visible_posts"}
_VERDICT_KEYS = {"applied", "why"}
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[0-9]{2}-[a-z0-9]+(-[a-z0-9]+)*")


class VectorError(ValueError):
    """A vector file that does not follow the format."""


@dataclass(frozen=True)
class Node:
    id: str  # 64 lowercase hex digits: the envelope id
    author: str
    deps: tuple[str, ...]
    op: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.op["kind"])

    @property
    def label(self) -> str:
        """What the generator called the node: a post's text, an entry's reason."""
        return str(self.op["text"] if self.kind == "post" else self.op["reason"])


@dataclass(frozen=True)
class Vector:
    name: str
    description: str
    owner: str
    nodes: tuple[Node, ...]
    expected: dict[str, Any]

    def node(self, label: str) -> Node:
        found = [n for n in self.nodes if n.label == label]
        if len(found) != 1:
            raise KeyError(f"{self.name}: {len(found)} nodes labelled {label!r}")
        return found[0]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "description": self.description,
                "owner": self.owner,
                "nodes": [{"id": n.id, "author": n.author, "deps": list(n.deps), "op": n.op}
                          for n in self.nodes],
                "expected": self.expected}


def dumps(vector: Vector) -> str:
    """The file's text: sorted keys, two-space indent, a trailing newline."""
    return json.dumps(vector.to_json(), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def node_id(author: str, deps: Sequence[str], op: dict[str, Any]) -> str:
    """BLAKE2b-256 (personalisation ``p2pchat-vector``) of the node's canonical JSON."""
    canonical = json.dumps({"author": author, "deps": list(deps), "op": op}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    return hashlib.blake2b(canonical.encode("ascii"), digest_size=32,
                           person=ID_PERSON).hexdigest()


# --- loading ----------------------------------------------------------------------------


def load(path: Path) -> Vector:
    """Read and validate one vector file; its name must be the file's stem."""
    vector = parse(_strict_json(path.read_text(encoding="utf-8")))
    if vector.name != path.stem:
        raise VectorError(f"name {vector.name!r} is not the file's stem {path.stem!r}")
    return vector


def vector_files(directory: Path = DIRECTORY) -> list[Path]:
    return sorted(directory.glob("*.json"))


def _strict_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            raise VectorError(f"repeated key in {keys}")
        return dict(items)

    def constant(name: str) -> Any:
        raise VectorError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise VectorError(f"not JSON: {e}") from e


def _require(ok: bool, why: str) -> None:
    if not ok:
        raise VectorError(why)


def _keys(obj: Any, keys: set[str], what: str) -> dict[str, Any]:
    _require(isinstance(obj, dict), f"{what} must be an object")
    assert isinstance(obj, dict)
    _require(set(obj) == keys, f"{what} keys must be {sorted(keys)}, got {sorted(obj)}")
    return obj


def _str(value: Any, what: str, *, max_length: int | None = None) -> str:
    _require(type(value) is str, f"{what} must be a string")
    assert isinstance(value, str)
    _require(max_length is None or len(value) <= max_length,
             f"{what} is over {max_length} characters")
    return value


def _did(value: Any, what: str) -> str:
    did = _str(value, what)
    try:
        public_key_from_did(did)
    except IdentityError as e:
        raise VectorError(f"{what} is not a did:key: {e}") from e
    return did


def _hex_id(value: Any, what: str) -> str:
    text = _str(value, what)
    _require(_HEX_ID.fullmatch(text) is not None, f"{what} must be 64 lowercase hex digits")
    return text


def _op(obj: Any, what: str) -> dict[str, Any]:
    _require(isinstance(obj, dict) and obj.get("kind") in ("mod", "post"),
             f"{what}.kind must be 'mod' or 'post'")
    assert isinstance(obj, dict)
    if obj["kind"] == "post":
        op = _keys(obj, _POST_KEYS, what)
        text = _str(op["text"], f"{what}.text", max_length=MAX_POST_LENGTH)
        _require(len(text) > 0, f"{what}.text is empty")
        return op
    op = _keys(obj, _MOD_KEYS, what)
    _require(is_ulid(op["ulid"]), f"{what}.ulid is not a ULID")
    _require(type(op["ts"]) is int and op["ts"] >= 0, f"{what}.ts must be an integer >= 0")
    _require(ulid_ms(op["ulid"]) == op["ts"], f"{what}.ulid's time is not ts")
    action = op["action"]
    _require(action in mod.ACTIONS, f"{what}.action {action!r} is not one of {mod.ACTIONS}")
    _str(op["reason"], f"{what}.reason", max_length=mod.MAX_REASON_LENGTH)
    _require(type(op["on"]) is bool, f"{what}.on must be a boolean")
    _require(op["on"] or action == "mode", f"{what}.on is false on a {action}")
    if action in mod.TARGET_ACTIONS:
        _did(op["target"], f"{what}.target")
        _require(op["value"] == "", f"{what}.value must be empty for {action}")
    else:
        _require(op["target"] == "", f"{what}.target must be empty for {action}")
        if action == "topic":
            _str(op["value"], f"{what}.value", max_length=mod.MAX_TOPIC_LENGTH)
        else:
            _require(op["value"] in mod.MODES, f"{what}.value must be one of {mod.MODES}")
    return op


def _node(obj: Any, what: str) -> Node:
    raw = _keys(obj, _NODE_KEYS, what)
    deps = raw["deps"]
    _require(isinstance(deps, list), f"{what}.deps must be a list")
    dep_ids = [_hex_id(d, f"{what}.deps[{i}]") for i, d in enumerate(deps)]
    _require(dep_ids == sorted(set(dep_ids)), f"{what}.deps must be sorted and unique")
    return Node(_hex_id(raw["id"], f"{what}.id"), _did(raw["author"], f"{what}.author"),
                tuple(dep_ids), _op(raw["op"], f"{what}.op"))


def causal_pasts(nodes: Sequence[Node]) -> dict[str, frozenset[str]]:
    """Each node's causal past: the transitive closure of its deps (never itself).

    Raises :class:`VectorError` on a repeated id, a dep that names no node, or a cycle."""
    by_id: dict[str, Node] = {}
    for n in nodes:
        _require(n.id not in by_id, f"node id {n.id} is repeated")
        by_id[n.id] = n
    for n in nodes:
        for d in n.deps:
            _require(d in by_id, f"node {n.id} depends on {d}, which is not a node")
    pasts: dict[str, frozenset[str]] = {}
    for start in by_id:
        # iterative depth-first search; "open" nodes on the stack reveal a cycle
        stack: list[tuple[str, bool]] = [(start, False)]
        open_: set[str] = set()
        while stack:
            nid, done = stack.pop()
            if nid in pasts:
                continue
            if done:
                deps = by_id[nid].deps
                pasts[nid] = frozenset(deps).union(*(pasts[d] for d in deps))
                open_.discard(nid)
                continue
            _require(nid not in open_, f"the deps of node {nid} form a cycle")
            open_.add(nid)
            stack.append((nid, True))
            stack += [(d, False) for d in by_id[nid].deps if d not in pasts]
    return pasts


def _sorted_dids(value: Any, what: str) -> list[str]:
    _require(isinstance(value, list), f"{what} must be a list")
    dids = [_did(d, f"{what}[{i}]") for i, d in enumerate(value)]
    _require(dids == sorted(set(dids)), f"{what} must be sorted and unique")
    return dids


def _expected(obj: Any, nodes: Sequence[Node]) -> dict[str, Any]:
    exp = _keys(obj, _EXPECTED_KEYS, "expected")
    for key in ("moderators", "banned", "muted", "kicked"):
        _sorted_dids(exp[key], f"expected.{key}")
    modes = _keys(exp["modes"], set(mod.MODES), "expected.modes")
    _require(all(type(v) is bool for v in modes.values()), "expected.modes must be booleans")
    _str(exp["topic"], "expected.topic")
    verdicts = exp["verdicts"]
    _require(isinstance(verdicts, dict), "expected.verdicts must be an object")
    _require(set(verdicts) == {n.id for n in nodes if n.kind == "mod"},
             "expected.verdicts must name every moderation node, and only those")
    for nid, verdict in verdicts.items():
        v = _keys(verdict, _VERDICT_KEYS, f"expected.verdicts[{nid}]")
        _require(type(v["applied"]) is bool, f"expected.verdicts[{nid}].applied must be bool")
        _str(v["why"], f"expected.verdicts[{nid}].why")
        _require(v["applied"] == (v["why"] == ""),
                 f"expected.verdicts[{nid}]: a reason exactly when not applied")
    hidden, visible = exp["hidden"], exp["visible_posts"]
    _require(isinstance(hidden, dict), "expected.hidden must be an object")
    _require(all(type(w) is str and w for w in hidden.values()),
             "expected.hidden reasons must be non-empty strings")
    _require(isinstance(visible, list), "expected.visible_posts must be a list")
    _require(visible == sorted(set(visible)), "expected.visible_posts must be sorted, unique")
    posts = {n.id for n in nodes if n.kind == "post"}
    _require(set(hidden).isdisjoint(visible), "a post is both hidden and visible")
    _require(set(hidden) | set(visible) == posts,
             "expected.hidden and expected.visible_posts must cover every post, only posts")
    return exp


def parse(obj: Any) -> Vector:
    """Validate a decoded vector strictly and return it."""
    top = _keys(obj, _TOP_KEYS, "the vector")
    _require(top["format"] == FORMAT, f"format must be {FORMAT!r}")
    name = _str(top["name"], "name")
    _require(_NAME.fullmatch(name) is not None, "name must look like 01-some-words")
    description = _str(top["description"], "description")
    _require(len(description) > 0, "description is empty")
    owner = _did(top["owner"], "owner")
    raw_nodes = top["nodes"]
    _require(isinstance(raw_nodes, list) and len(raw_nodes) > 0, "nodes must be a list")
    nodes = tuple(_node(n, f"nodes[{i}]") for i, n in enumerate(raw_nodes))
    causal_pasts(nodes)  # repeated ids, dangling deps, cycles
    for n in nodes:
        _require(node_id(n.author, n.deps, n.op) == n.id, f"node {n.id}: id is not derived")
    ulids = [n.op["ulid"] for n in nodes if n.kind == "mod"]
    _require(len(set(ulids)) == len(ulids), "a ulid is used twice")
    return Vector(name, description, owner, nodes, _expected(top["expected"], nodes))


# --- the reference run ------------------------------------------------------------------


def mod_event(node: Node) -> mod.ModEvent:
    op = node.op
    return mod.ModEvent(bytes.fromhex(node.id), op["ulid"], node.author, op["action"],
                        op["target"], op["value"], op["on"], op["reason"], op["ts"])


def evaluate(owner: str, nodes: Sequence[Node],
             mod_order: Sequence[int] | None = None) -> dict[str, Any]:
    """The ``expected`` object for this DAG, computed by p2pchat's fold.

    ``nodes`` may come in any order; ``mod_order`` (a permutation of the moderation
    nodes' positions) reorders the events handed to the fold."""
    pasts = causal_pasts(nodes)
    by_env = {bytes.fromhex(nid): frozenset(bytes.fromhex(p) for p in past)
              for nid, past in pasts.items()}

    def in_past(a: bytes, b: bytes) -> bool:
        return a in by_env[b]

    authors = {bytes.fromhex(n.id): n.author for n in nodes}

    def wrote_before(did: str, b: bytes) -> bool:
        return any(authors[a] == did for a in by_env[b])

    events = [mod_event(n) for n in nodes if n.kind == "mod"]
    if mod_order is not None:
        events = [events[i] for i in mod_order]
    state = mod.fold(owner, events, in_past)
    hidden = {}
    for n in nodes:
        if n.kind == "post":
            why = mod.hidden_by(n.author, bytes.fromhex(n.id), state, in_past, wrote_before)
            if why:
                hidden[n.id] = why
    return {
        "moderators": sorted(state.moderators),
        "banned": sorted(state.banned),
        "muted": sorted(state.muted),
        "kicked": sorted(state.kicked),
        "modes": {m: state.modes[m] for m in mod.MODES},
        "topic": state.topic,
        "verdicts": {env.hex(): {"applied": v.applied, "why": v.why}
                     for env, v in sorted(state.verdicts.items())},
        "hidden": dict(sorted(hidden.items())),
        "visible_posts": sorted(n.id for n in nodes if n.kind == "post" and n.id not in hidden),
    }
