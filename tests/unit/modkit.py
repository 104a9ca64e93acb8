"""A small world for moderation tests: one replica per person, offline edits, merges.

Each person authors on their own :class:`ChannelState`; ``sync`` copies what one lacks
from the other (both ways), so concurrency comes from who synced with whom, exactly as
on a partitioned network. ``envelopes()`` is the union of everything written; a fresh
observer can receive it in any order and must compute the same fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import ChannelState
from p2pchat.identity import Identity
from tests.unit.channelkit import T0, Kit, sync_into


class World:
    def __init__(self, seed: int, people: tuple[str, ...] = ("owner", "mod", "mod2", "user",
                                                                "user2")) -> None:
        self.kit = Kit(seed)
        self.ids: dict[str, Identity] = {p: self.kit.identity(p) for p in people}
        founder, self.genesis = self.kit.found(self.ids[people[0]])
        self.channel = founder.channel_id
        self.replicas: dict[str, ChannelState] = {people[0]: founder}
        for p in people[1:]:
            self.replicas[p] = self.kit.replica(self.channel, self.ids[p], self.genesis)
        self.now = T0
        self.labels: dict[str, str] = {}  # entry ulid -> label
        self.posts: dict[str, str] = {}  # label -> message id

    def did(self, person: str) -> str:
        return self.ids[person].did

    def tick(self) -> int:
        self.now += 1000
        return self.now

    def act(self, label: str, person: str, action: str, target: str = "", *, value: str = "",
            on: bool = True) -> Envelope:
        """``person`` publishes a moderation action (even one that will not count)."""
        written = self.replicas[person].moderate(
            action, self.tick(), self.kit.rb, target=self.did(target) if target else "",
            value=value, on=on, reason=label, check=False)
        self.labels[written.new_id] = label
        return written.envelope

    def post(self, label: str, person: str) -> None:
        """``person`` posts, even if their own replica knows they are banned or muted (a
        hostile or stale client): such a post is stored as refused or hidden everywhere."""
        state = self.replicas[person]
        state.writer.check_may_write = lambda posting=True: None  # type: ignore[method-assign]
        try:
            _, msg_id = state.post(label, self.tick(), self.kit.rb)
            self.posts[label] = msg_id
        except RuntimeError as exc:  # refused by its own replica: banned in its past
            assert "banned" in str(exc), exc
        finally:
            del state.writer.check_may_write

    def sync(self, *people: str) -> None:
        """Everyone in ``people`` ends up with what any of them has (a connected group)."""
        for _ in range(2):
            for a in people:
                for b in people:
                    if a != b:
                        sync_into(self.replicas[b], self.replicas[a], self.now)

    def sync_all(self) -> None:
        self.sync(*self.replicas)

    def envelopes(self) -> list[bytes]:
        raw: dict[bytes, bytes] = {}
        for state in self.replicas.values():
            raw.update(state.raw)
        return [raw[i] for i in sorted(raw)]

    def observer(self, order: list[bytes]) -> ChannelState:
        """A fresh replica that received ``order`` (duplicates and any order welcome)."""
        state = self.kit.replica(self.channel, self.kit.identity("observer"))
        for raw in order:
            state.receive(state.decode(raw), self.now)
        return state


@dataclass(frozen=True)
class Outcome:
    verdicts: dict[str, tuple[bool, str]]
    banned: frozenset[str]
    muted: frozenset[str]
    moderators: frozenset[str]
    modes: tuple[tuple[str, bool], ...]
    topic: str
    visible: tuple[str, ...]

    def applied(self, label: str) -> bool:
        return self.verdicts[label][0]


def outcome(world: World, state: ChannelState) -> Outcome:
    fold = state.moderation()
    names = {world.did(p): p for p in world.ids}
    verdicts = {world.labels[row["id"]]: (row["applied"], row["why"]) for row in state.modlog()}
    return Outcome(
        verdicts,
        frozenset(names.get(d, d) for d in fold.banned),
        frozenset(names.get(d, d) for d in fold.muted),
        frozenset(names.get(d, d) for d in fold.moderators),
        tuple(sorted(fold.modes.items())),
        fold.topic,
        tuple(v.text for v in state.history()),
    )


def summary(state: ChannelState) -> Any:
    """Everything the fold decides, as plain data (to compare replicas)."""
    return (state.modlog(), state.member_ranks(), [(v.id, v.text) for v in state.history()])
