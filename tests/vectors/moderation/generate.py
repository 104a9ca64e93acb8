"""Write the moderation conformance vectors (docs/protocol.md §11).

Each vector's DAG is declared by hand below; its ``expected`` fold is computed by
p2pchat's own :func:`~p2pchat.channel.moderation.fold` and ``hidden_by``. The
descriptions say in words what the rules (the docstring of
``p2pchat/channel/moderation.py``) give, and ``tests/unit/test_moderation_vectors.py``
asserts those facts independently, so a wrong fold is not silently blessed.

    python -m tests.vectors.moderation.generate
    python tests/vectors/moderation/generate.py        # the same

rewrites every ``*.json`` here (and removes stale ones). Regenerate after changing the
fold on purpose, and review the diff.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from p2pchat.channel.ulid import make_ulid
from tests.vectors.moderation.kit import (
    DIRECTORY,
    Node,
    Vector,
    dumps,
    evaluate,
    node_id,
    parse,
)

#: The people of every vector: did:key of ``Identity(secret_key_from_seed(bytes([i]) * 32))``
#: for i = 1..5 (checked by the tests). ``owner`` founded the channel.
SEEDS = {"owner": 1, "mod": 2, "mod2": 3, "user": 4, "user2": 5}
PEOPLE = {
    "owner": "did:key:z6Mkon3Necd6NkkyfoGoHxid2znGc59LU3K7mubaRcFbLfLX",
    "mod": "did:key:z6Mko9hTggMwjSTEaJaPUfE6tqcy2xvU6BnNq3e3o8qVBiyH",
    "mod2": "did:key:z6MkvRXNYcE7MMduynWTgeKbDaT1iijDSC8pZqXZc8rHPrf2",
    "user": "did:key:z6Mkt6316e2PN3mZdB6N9CrzomJYUd1s5yBZi1XYHmwT9TUP",
    "user2": "did:key:z6MkmtWtY63GQVBrpMyRJWEzsnxfsGkemu6CtMDwGTv4RYj2",
}
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms; node k is written at T0 + k s


class GenerationError(AssertionError):
    """The DAG does not have a property its description relies on."""


class Dag:
    """A vector's DAG, declared node by node; each node is labelled (its reason or text)."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = " ".join(description.split())
        self.nodes: list[Node] = []
        self.ids: dict[str, str] = {}

    def _add(self, label: str, author: str, after: Sequence[str], op: dict[str, Any]) -> str:
        if label in self.ids:
            raise GenerationError(f"{self.name}: label {label!r} used twice")
        deps = sorted(self.ids[a] for a in after)
        nid = node_id(PEOPLE[author], deps, op)
        self.nodes.append(Node(nid, PEOPLE[author], tuple(deps), op))
        self.ids[label] = nid
        return label

    def mod(self, label: str, author: str, action: str, target: str = "", *,
            after: Sequence[str] = (), value: str = "", on: bool = True,
            ts: int | None = None) -> str:
        """``author`` writes a moderation entry (reason = ``label``) on top of ``after``."""
        ts = T0 + 1000 * (len(self.nodes) + 1) if ts is None else ts
        rand = hashlib.blake2b(f"{self.name}/{label}".encode(), digest_size=10).digest()
        return self._add(label, author, after, {
            "kind": "mod", "ulid": make_ulid(ts, rand), "ts": ts, "action": action,
            "target": PEOPLE[target] if target else "", "value": value, "on": on,
            "reason": label})

    def post(self, label: str, author: str, *, after: Sequence[str] = ()) -> str:
        """``author`` posts the text ``label`` on top of ``after``."""
        return self._add(label, author, after, {"kind": "post", "text": label})

    def env(self, label: str) -> bytes:
        return bytes.fromhex(self.ids[label])

    def require(self, ok: bool, why: str) -> None:
        if not ok:
            raise GenerationError(f"{self.name}: {why}")

    def vector(self) -> Vector:
        owner = PEOPLE["owner"]
        vector = Vector(self.name, self.description, owner, tuple(self.nodes),
                        evaluate(owner, self.nodes))
        return parse(vector.to_json())  # what we write must load


def concurrent_ban_unban() -> Dag:
    d = Dag("01-concurrent-ban-unban", """
        A moderator bans user while the owner, concurrently, unbans user. Both entries are
        valid (the moderator outranks a member, the owner everyone); resolving the flag, both
        are in the frontier and the revocation wins: user is banned. The post user wrote
        before both stays visible; the post user wrote after seeing both is hidden (banned in
        its causal past).""")
    d.mod("op mod", "owner", "op", "mod")
    d.post("before", "user", after=["op mod"])
    d.mod("ban", "mod", "ban", "user", after=["before"])
    d.mod("unban", "owner", "unban", "user", after=["before"])
    d.post("after both", "user", after=["ban", "unban"])
    return d


def unban_after_ban() -> Dag:
    d = Dag("02-unban-after-ban", """
        A moderator bans user; the owner, having seen the ban, unbans: the unban causally
        follows the ban, so it alone is the frontier and user is not banned. The post user
        wrote concurrently with the ban stays hidden (strong removal: it did not see the
        ban, so it could be back-dated); the post written after the unban is visible.""")
    d.mod("op mod", "owner", "op", "mod")
    d.post("unseen", "user", after=["op mod"])
    d.mod("ban", "mod", "ban", "user", after=["op mod"])
    d.mod("unban", "owner", "unban", "user", after=["ban"])
    d.post("restored", "user", after=["unseen", "unban"])
    return d


def revoked_moderator() -> Dag:
    d = Dag("03-revoked-moderator", """
        The owner makes mod a moderator, mutes user2, then deops mod. Concurrently with the
        deop, mod bans user and unmutes user2: both are invalid (a valid owner revocation of
        the author is concurrent: strong removal), although mod was a moderator in their
        past. So nobody is banned, user2 stays muted, and user2's post written after (and
        relying on) the invalid unmute is hidden; user's post after the invalid ban is
        visible. mod is no longer a moderator.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("mute user2", "owner", "mute", "user2", after=["op mod"])
    d.mod("deop", "owner", "deop", "mod", after=["mute user2"])
    d.mod("ban by mod", "mod", "ban", "user", after=["mute user2"])
    d.mod("unmute by mod", "mod", "unmute", "user2", after=["ban by mod"])
    d.post("after unmute", "user2", after=["unmute by mod"])
    d.post("after invalid ban", "user", after=["ban by mod"])
    return d


def back_dated_ban() -> Dag:
    d = Dag("04-back-dated-ban", """
        The owner deops mod. Later mod writes a ban of user whose deps omit the deop (and
        whose clock claims a time before it): the ban is concurrent with the deop, so it is
        invalid (strong removal) -- timestamps decide nothing. A ban mod writes after seeing
        the deop is invalid because mod is no longer a moderator in its past. Nobody is
        banned and user's post after the back-dated ban is visible.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("deop", "owner", "deop", "mod", after=["op mod"])
    d.mod("back-dated ban", "mod", "ban", "user", after=["op mod"], ts=T0 + 1500)
    d.mod("ban after deop", "mod", "ban", "user2", after=["deop", "back-dated ban"])
    d.post("user after back-dated ban", "user", after=["back-dated ban"])
    d.require(d.nodes[2].op["ts"] < d.nodes[1].op["ts"], "the ban claims an earlier time")
    return d


def mutual_bans() -> Dag:
    d = Dag("05-mutual-bans", """
        Two moderators ban each other concurrently: neither outranks the other, so both bans
        are invalid. Then the owner bans mod while mod, concurrently, bans the owner: the
        owner's ban is valid (the owner outranks a moderator) and mod's is invalid (a
        moderator does not outrank the owner). mod ends banned and, since a ban revokes
        rank, no longer a moderator; mod2 stays one. mod's post after the ban is hidden,
        mod2's is visible.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("op mod2", "owner", "op", "mod2", after=["op mod"])
    d.mod("mod bans mod2", "mod", "ban", "mod2", after=["op mod2"])
    d.mod("mod2 bans mod", "mod2", "ban", "mod", after=["op mod2"])
    d.mod("owner bans mod", "owner", "ban", "mod", after=["mod bans mod2", "mod2 bans mod"])
    d.mod("mod bans owner", "mod", "ban", "owner", after=["mod bans mod2", "mod2 bans mod"])
    d.post("mod after ban", "mod", after=["owner bans mod", "mod bans owner"])
    d.post("mod2 after ban", "mod2", after=["owner bans mod", "mod bans owner"])
    return d


def rank_rules() -> Dag:
    d = Dag("06-rank-rules", """
        Authority needs a strictly higher rank in the entry's causal past: a member promoting
        itself, a moderator granting moderator (only a rank above moderator may), a
        moderator deopping another moderator, a moderator banning the owner, a member
        banning a member, the owner banning itself and a moderator muting itself are all
        invalid. The one valid entry is a moderator muting a member: user ends muted, nobody
        is banned, mod and mod2 stay the moderators.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("op mod2", "owner", "op", "mod2", after=["op mod"])
    base = ["op mod2"]
    d.mod("self-promotion", "user", "op", "user", after=base)
    d.mod("mod grants mod", "mod", "op", "user", after=base)
    d.mod("mod deops mod2", "mod", "deop", "mod2", after=base)
    d.mod("mod bans owner", "mod", "ban", "owner", after=base)
    d.mod("member bans member", "user", "ban", "user2", after=base)
    d.mod("owner bans itself", "owner", "ban", "owner", after=base)
    d.mod("mod mutes itself", "mod", "mute", "mod", after=base)
    d.mod("mod mutes user", "mod", "mute", "user", after=base)
    return d


def posts_around_a_ban() -> Dag:
    d = Dag("07-posts-around-a-ban", """
        A moderator bans user. user's post in the ban's causal past stays visible; user's
        post concurrent with the ban is hidden (strong removal: it did not see the ban);
        user's post after the ban is hidden (banned in its past). The owner's and user2's
        posts are not affected.""")
    d.mod("op mod", "owner", "op", "mod")
    d.post("earlier", "user", after=["op mod"])
    d.mod("ban", "mod", "ban", "user", after=["earlier"])
    d.post("concurrent", "user", after=["earlier"])
    d.post("owner talks", "owner", after=["earlier"])
    d.post("bystander", "user2", after=["ban"])
    d.post("after", "user", after=["ban", "concurrent", "owner talks"])
    return d


def moderated_mode() -> Dag:
    d = Dag("08-moderated-mode", """
        A moderator sets the channel moderated; a member's attempt to set a mode is invalid
        (mode needs moderator). A member's post concurrent with the mode change stays
        visible (the mode was not in its past; modes are not a strong removal); the member's
        post after it is hidden, while a moderator's and the owner's are visible. The owner
        then clears the mode: the member's later post is visible again, and at the end the
        channel is not moderated.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("moderated", "mod", "mode", after=["op mod"], value="moderated")
    d.mod("member sets invite-only", "user", "mode", after=["op mod"], value="invite-only")
    d.post("before moderated", "user", after=["op mod"])
    d.post("member in moderated", "user", after=["moderated"])
    d.post("mod in moderated", "mod", after=["moderated"])
    d.post("owner in moderated", "owner", after=["moderated"])
    d.mod("unmoderated", "owner", "mode", value="moderated", on=False,
          after=["member in moderated", "mod in moderated", "owner in moderated"])
    d.post("member again", "user", after=["unmoderated"])
    return d


def invite_only() -> Dag:
    d = Dag("09-invite-only", """
        The owner sets invite-only; a moderator adds user. user2's post from before the mode
        is visible, and so is user2's post after it: someone who wrote before the channel
        became invite-only stays a member. After the mode, user's post (added) and the
        moderator's post (moderators need no add) are visible, and mod2's (never added,
        never wrote before) is hidden. Then a moderator kicks user while the owner,
        concurrently, adds user again: both are valid and the kick wins, so user's post
        after both is hidden. user is listed as kicked.""")
    d.mod("op mod", "owner", "op", "mod")
    d.post("open channel", "user2", after=["op mod"])
    d.mod("invite-only", "owner", "mode", after=["open channel"], value="invite-only")
    d.mod("add user", "mod", "add", "user", after=["invite-only"])
    d.post("mod in invite-only", "mod", after=["invite-only"])
    d.post("added", "user", after=["add user"])
    d.post("wrote before", "user2", after=["add user"])
    d.post("not added", "mod2", after=["add user"])
    d.mod("kick user", "mod", "kick", "user", after=["added", "not added", "wrote before"])
    d.mod("add user again", "owner", "add", "user", after=["added", "not added",
                                                          "wrote before"])
    d.post("after kick", "user", after=["kick user", "add user again"])
    return d


def concurrent_topics() -> Dag:
    d = Dag("10-concurrent-topics", """
        The owner and a moderator set the topic concurrently; a member's concurrent topic is
        invalid (topic needs moderator) and ignored although it has the greatest envelope
        id. Topic has no stronger side, so the frontier entry with the greatest envelope id
        (compared as bytes) wins: the moderator's, "mod's topic", although the owner's has
        the later clock and the greater ulid.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("topic by mod", "mod", "topic", after=["op mod"], value="mod's topic")
    d.mod("owner sets the topic", "owner", "topic", after=["op mod"], value="owner's topic")
    d.mod("topic by member", "user", "topic", after=["op mod"], value="member's topic")
    mod_, owner, member = (d.env(t) for t in ("topic by mod", "owner sets the topic",
                                              "topic by member"))
    d.require(owner < mod_ < member, "envelope ids: owner's < mod's < member's")
    d.require(d.nodes[1].op["ulid"] < d.nodes[2].op["ulid"], "the owner's ulid is greater")
    return d


def concurrent_modes() -> Dag:
    d = Dag("11-concurrent-modes", """
        A moderator clears moderated while the owner, concurrently and with a later clock,
        sets it: a mode has no stronger side and the owner's rank does not matter once both
        are valid, so the frontier entry with the greatest envelope id wins, here the
        moderator's clear -- the channel is not moderated and user's post after both is
        visible. For invite-only, the owner sets it and later clears it: the clear causally
        follows, so it wins although its envelope id is smaller; invite-only is off.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("mod clears moderated", "mod", "mode", after=["op mod"], value="moderated", on=False)
    d.mod("owner sets moderated", "owner", "mode", after=["op mod"], value="moderated")
    d.mod("owner sets invite-only", "owner", "mode", after=["op mod"], value="invite-only")
    d.mod("owner clears invite-only", "owner", "mode", after=["owner sets invite-only"],
          value="invite-only", on=False)
    d.post("after all", "user", after=["mod clears moderated", "owner sets moderated",
                                       "owner clears invite-only"])
    d.require(d.env("owner sets moderated") < d.env("mod clears moderated"),
              "the mod's clear has the greater id")
    d.require(d.env("owner clears invite-only") < d.env("owner sets invite-only"),
              "the later clear has the smaller id")
    return d


def rank_revocations() -> Dag:
    d = Dag("12-rank-revocations", """
        Moderator rank comes from the owner's op and is revoked by the owner's deop, ban or
        kick; a revocation beats a concurrent op. The owner kicks mod (rank gone: mod's ban
        after it is invalid), bans then unbans mod2 (unbanned, but the unban does not give
        the rank back: mod2's mute after it is invalid), and deops user2 while concurrently
        opping user2 again (the deop wins). Re-opping mod after the kick restores it: mod's
        mute after that is valid. In the end mod is the only moderator, user is muted,
        nobody is banned and mod is listed as kicked.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("op mod2", "owner", "op", "mod2", after=["op mod"])
    d.mod("op user2", "owner", "op", "user2", after=["op mod2"])
    d.mod("kick mod", "owner", "kick", "mod", after=["op user2"])
    d.mod("ban mod2", "owner", "ban", "mod2", after=["op user2"])
    d.mod("unban mod2", "owner", "unban", "mod2", after=["ban mod2"])
    d.mod("deop user2", "owner", "deop", "user2", after=["op user2"])
    d.mod("op user2 again", "owner", "op", "user2", after=["op user2"])
    d.mod("ban by kicked mod", "mod", "ban", "user", after=["kick mod"])
    d.mod("mute by unbanned mod2", "mod2", "mute", "user", after=["unban mod2"])
    d.mod("op mod again", "owner", "op", "mod", after=["kick mod"])
    d.mod("mute by mod again", "mod", "mute", "user", after=["op mod again"])
    return d


def removal_edges() -> Dag:
    d = Dag("13-removal-edges", """
        Three edges of removal. (1) The owner ops user while mod concurrently bans user
        (both valid): a banned member holds no rank, so user's mute written after seeing
        both is invalid, and user is banned, not a moderator. (2) In invite-only mode mod
        adds user2, then kicks user2 while user2 posts without seeing the kick: that post
        is hidden (strong removal, like a ban); the owner re-adds user2 after the kick and
        user2's next post is visible, and user2 is no longer listed as kicked. (3) In
        moderated mode the owner deops mod2 while mod2 posts without seeing it: hidden,
        although mod2 was a moderator in the post's own past.""")
    d.mod("op mod", "owner", "op", "mod")
    d.mod("op mod2", "owner", "op", "mod2", after=["op mod"])
    d.mod("op user", "owner", "op", "user", after=["op mod2"])
    d.mod("ban user", "mod", "ban", "user", after=["op mod2"])
    d.mod("mute by banned user", "user", "mute", "user2", after=["op user", "ban user"])
    d.mod("invite-only", "owner", "mode", value="invite-only", after=["op mod2"])
    d.mod("add user2", "mod", "add", "user2", after=["invite-only"])
    d.post("added and posting", "user2", after=["add user2"])
    d.mod("kick user2", "mod", "kick", "user2", after=["added and posting"])
    d.post("posted during the kick", "user2", after=["added and posting"])
    d.mod("add user2 again", "owner", "add", "user2", after=["kick user2"])
    d.post("back after the re-add", "user2", after=["add user2 again"])
    d.mod("moderated", "owner", "mode", value="moderated", after=["op mod2"])
    d.mod("deop mod2", "owner", "deop", "mod2", after=["moderated"])
    d.post("mod2 during the deop", "mod2", after=["moderated"])
    d.post("mod during moderated", "mod", after=["moderated"])
    return d


VECTORS: tuple[Callable[[], Dag], ...] = (
    concurrent_ban_unban, unban_after_ban, revoked_moderator, back_dated_ban, mutual_bans,
    rank_rules, posts_around_a_ban, moderated_mode, invite_only, concurrent_topics,
    concurrent_modes, rank_revocations, removal_edges,
)


def build() -> list[Vector]:
    return [make().vector() for make in VECTORS]


def render() -> dict[str, str]:
    """File name -> text of every vector."""
    return {f"{v.name}.json": dumps(v) for v in build()}


def main(directory: Path = DIRECTORY) -> None:
    files = render()
    for stale in sorted(directory.glob("*.json")):
        if stale.name not in files:
            stale.unlink()
            print(f"removed {stale.name}")
    for name, text in files.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {name}")
    print(f"{len(files)} vectors in {directory}")


if __name__ == "__main__":
    main()
