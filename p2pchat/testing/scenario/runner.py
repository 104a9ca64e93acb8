"""Running a scenario: a :class:`~.model.Scenario` driven through a simulated network.

Owns :class:`Runner`, which builds a :class:`~p2pchat.testing.sim.SimNetwork` (real
``NodeCore`` s, simulated network and clock), sets up the channels, then executes the
steps in order: an action changes the network or writes, an assertion reads every
observer's replica and gives a :class:`~.model.Verdict`. Steps are dispatched with
``match`` over the variants of :data:`~.model.Action` and :data:`~.model.Assertion`,
ending in ``assert_never``. One seed decides everything: the network's faults and the
script's own choices (which node posts next with ``pick = "random"``, random partitions,
links and join trees) come from :func:`~p2pchat.testing.sim.derive_rng`, and nothing
iterates over a set or depends on ``hash()``.

Every assertion gets a verdict; a failing one does not stop the run. An action that
fails (a core error, a refused request not expected with ``fails``, a network that never
goes quiet) stops it and is returned as the run's error. The run configures every core
as the runtime does when nothing stores search rows or snapshots (``index_messages`` and
periodic snapshots off), and shares signature checks (:class:`SharedVerifier`) and the
pure steps of receiving an envelope (``SharedWork``) across the simulated nodes: each
node gets exactly the answer it would compute. Imports the model and the simulator.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import assert_never

from p2pchat.channel.envelope import Envelope
from p2pchat.channel.state import MessageView
from p2pchat.core import NodeCore
from p2pchat.core.channels import verify_in_order
from p2pchat.testing.scenario.model import (
    DEFAULT_EMOJI,
    DEFAULT_TEXT,
    MAX_VERIFY_CACHE,
    SETUP_TIMEOUT,
    Action,
    Advance,
    Assertion,
    Block,
    Break,
    CannotDecrypt,
    Converged,
    Delete,
    Deleted,
    Edit,
    Edited,
    FaultPreset,
    Fired,
    Heal,
    HiddenFrom,
    HistoryEqual,
    Hostile,
    Isolate,
    KeyStatus,
    Link,
    MessageAssertion,
    MessageCount,
    Moderate,
    Offline,
    Online,
    Order,
    Partition,
    Post,
    RankIs,
    React,
    Reactions,
    Reconnect,
    Repeat,
    Rotate,
    Scenario,
    ServerHolds,
    SetRate,
    Settle,
    Step,
    Unblock,
    Verdict,
    VisibleTo,
    describe,
)
from p2pchat.testing.shared import SharedWork
from p2pchat.testing.sim import Faults, SimError, SimNetwork, Uniform, derive_rng


class SharedVerifier:
    """Envelope signature checks memoized across every simulated node (a ``BatchVerifier``).

    A verdict is a pure function of the envelope (its fields are the memo key), so each
    node gets the answer it would compute itself; each distinct envelope is checked once
    per run instead of once per node that receives it.
    """

    def __init__(self) -> None:
        self._verdicts: dict[Envelope, bool] = {}

    def __call__(self, envelopes: list[Envelope]) -> list[bool]:
        missing = [env for env in envelopes if env not in self._verdicts]
        if missing:
            if len(self._verdicts) + len(missing) > MAX_VERIFY_CACHE:
                self._verdicts.clear()
            for env, ok in zip(missing, verify_in_order(missing), strict=True):
                self._verdicts[env] = ok
        return [self._verdicts[env] for env in envelopes]


@dataclass(frozen=True)
class _Posted:
    msg_id: str
    node: str
    channel: bytes


#: the actions that may take ``fails``
_Refusable = Post | Edit | Delete | React | Moderate | Rotate


class _StepFailed(Exception):
    """An action could not be carried out; the run stops."""


class Runner:
    """One run of a scenario with a seed: ``run()``, then read ``net``, ``verdicts``,
    ``markers`` (the script's steps in the trace) and ``posted``."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.seed = seed
        self.script = derive_rng(seed, "scenario-script")
        low, high = scenario.network.latency_ms
        self.latency = Uniform(low / 1000.0, high / 1000.0)
        self.net = SimNetwork(seed, faults=Faults.calm(self.latency),
                              clock_skew_ms=scenario.network.clock_skew_ms,
                              max_events=50_000_000)
        self.verifier = SharedVerifier()
        self.shared = SharedWork()
        self.net.on_new_core = self._configure
        self.net.server_verify = self.verifier
        for server in scenario.servers:  # first: their users dial them at start
            self.net.add_server(server.name)
        for name in scenario.nodes:
            self.net.add_node(name, servers=[s.name for s in scenario.servers
                                             if name in s.users])
        self.channels: dict[str, bytes] = {}
        self.labels: dict[str, list[_Posted]] = {}
        self.posted = 0
        self.verdicts: list[Verdict] = []
        self.markers: list[tuple[int, str]] = []

    def _configure(self, name: str, core: NodeCore) -> None:
        # as the runtime does when nothing stores search rows or snapshots (the simulator
        # keeps neither); signature checks and the pure steps of receiving an envelope
        # shared across nodes (see SharedVerifier and p2pchat.testing.shared)
        core.hub.index_messages = False
        core.hub.snapshot_every = 0
        core.hub.verify_batch = self.verifier
        core.hub.shared = self.shared

    def mark(self, text: str) -> None:
        self.markers.append((len(self.net.trace), f"== {text}"))

    # --- setup ---

    def setup(self) -> None:
        net = self.net
        joined: list[tuple[str, str]] = []
        for spec in self.scenario.channels:
            self.mark(f"setup: channel {spec.name!r} by {spec.founder}, "
                      f"{len(spec.members)} members join via {spec.via}")
            cid = net.create_channel(spec.founder, spec.name)
            self.channels[spec.name] = cid
            earlier = [spec.founder]
            for member in spec.members:
                if spec.via == "founder":
                    via = spec.founder
                elif spec.via == "chain":
                    via = earlier[-1]
                elif spec.via == "random":
                    via = earlier[self.script.randrange(len(earlier))]
                else:
                    via = spec.via if spec.via != member else spec.founder
                net.join(member, cid, via=via)
                joined.append((min(member, via), max(member, via)))
                earlier.append(member)
            everyone = [spec.founder, *spec.members]
            net.wait_for(functools.partial(self._all_synced, everyone, cid),
                         timeout=SETUP_TIMEOUT,
                         what=f"every member of {spec.name!r} to be admitted")
        linked = set(joined)
        for a, b in self.scenario.network.links:
            pair = (min(a, b), max(a, b))
            if pair not in linked:
                linked.add(pair)
                net.connect(a, b)
        names = list(self.scenario.nodes)
        wanted = self.scenario.network.random_links
        possible = len(names) * (len(names) - 1) // 2 - len(linked)
        for _ in range(min(wanted, possible)):
            while True:
                a, b = sorted(self.script.sample(names, 2))
                if (a, b) not in linked:
                    break
            linked.add((a, b))
            net.connect(a, b)
        net.run_until_quiet()
        self.mark(f"setup done at t={net.now:.3f}: {len(net.links())} links")

    def _all_synced(self, names: list[str], cid: bytes) -> bool:
        return all(self.net.synced(n, cid) for n in names)

    # --- steps ---

    def run(self) -> Verdict | None:
        try:
            self.setup()
        except SimError as exc:
            return Verdict(0, 0, "setup", False, str(exc), (), len(self.net.trace),
                           len(self.markers))
        return self.steps(self.scenario.steps, "")

    def steps(self, steps: Sequence[Step], prefix: str) -> Verdict | None:
        for step in steps:
            self.mark(f"{prefix}step {step.number} (line {step.line}) {describe(step)} "
                      f"t={self.net.now:.3f}")
            if isinstance(step, Repeat):
                for i in range(step.times):
                    failed = self.steps(step.steps, f"{prefix}[{i + 1}/{step.times}] ")
                    if failed is not None:
                        return failed
                continue
            if isinstance(step, Assertion):
                self.verdicts.append(self.check(step))
                continue
            try:
                self.act(step)
            except (_StepFailed, SimError) as exc:
                return Verdict(step.number, step.line, f"step {step.kind}", False, str(exc),
                               tuple(sorted(set(step.names()))), len(self.net.trace),
                               len(self.markers))
        return None

    def act(self, step: Action) -> None:
        net = self.net
        match step:
            case Post():
                self.post(step, self.channels[step.channel])
            case Edit() | Delete() | React():
                cid = self.channels[step.channel]
                (msg,) = self.labels[step.msg]
                text = step.text if isinstance(step, Edit) else ""
                emoji, on = (step.emoji, step.on) if isinstance(step, React) \
                    else (DEFAULT_EMOJI, True)
                self._expect(step, lambda: net.message_op(step.node, cid, step.kind,
                                                          msg.msg_id, text=text, emoji=emoji,
                                                          on=on))
            case Moderate():
                cid = self.channels[step.channel]
                self._alive(step.node)
                self._expect(step, lambda: net.moderate(step.node, cid, step.kind, step.target,
                                                        reason=step.reason))
            case Rotate():
                cid = self.channels[step.channel]
                self._alive(step.node)
                self._expect(step, lambda: net.rotate(step.node, cid))
            case Partition():
                groups: Sequence[Sequence[str]] = step.groups
                if step.random_groups:
                    names = list(self.scenario.nodes)
                    self.script.shuffle(names)
                    groups = [names[i::step.random_groups] for i in range(step.random_groups)]
                # a server no group names stays reachable from every side ("on the Internet")
                net.partition(*groups, mode=step.mode,
                              everywhere=[s.name for s in self.scenario.servers])
            case Heal():
                net.heal()
            case Isolate():
                for name in step.nodes:
                    net.isolate(name, step.mode)
            case Reconnect():
                for name in step.nodes:
                    net.reconnect(name)
            case Block():
                net.block(step.src, step.dst)
            case Unblock():
                net.unblock(step.src, step.dst)
            case Link():
                lat = step.latency_ms
                net.set_link(*step.between, loss=step.loss,
                             latency=None if lat is None else Uniform(lat[0] / 1000,
                                                                      lat[1] / 1000),
                             both_ways=not step.one_way)
            case Hostile():
                cid = self.channels[step.channel]
                self._alive(step.node)
                self.posted += 1
                text = _render(step.text or "hostile {node}-{n}", step.node, 1, self.posted)
                msg_id = net.hostile(step.node, cid, step.what, text=text, to=step.to,
                                     age_ms=step.age_ms)
                if step.label:
                    self.labels[step.label] = [_Posted(msg_id, step.node, cid)]
            case Offline():
                for name in step.nodes:
                    self._alive(name)
                    net.crash(name, lose_own_last=step.lose_own_last)
            case Online():
                for name in step.nodes:
                    if net.node(name).alive:
                        raise _StepFailed(f"{name} is not offline")
                    net.restart(name, lose_last=step.lose_last)
            case Advance():
                net.run_for(step.seconds)
            case Settle():
                net.run_until_quiet(timeout=step.timeout)
            case SetRate():
                net.faults = self._rate(net.faults, step)
            case FaultPreset():
                net.faults = Faults.chaos() if step.preset == "chaos" \
                    else Faults.calm(self.latency)
            case Break():
                net.break_link(*step.between, silent=step.silent)
            case _:
                assert_never(step)

    @staticmethod
    def _rate(faults: Faults, step: SetRate) -> Faults:
        match step.fault:
            case "drop":  # on a QUIC link a lost packet is a retransmission: a stall
                return dataclasses.replace(faults, stall_prob=step.rate)
            case "duplicate":
                return dataclasses.replace(faults, frame_duplicate=step.rate)
            case "reorder":
                return dataclasses.replace(faults, frame_reorder=step.rate)
            case _:
                assert_never(step.fault)

    def _alive(self, name: str) -> None:
        if not self.net.node(name).alive:
            raise _StepFailed(f"{name} is offline")

    def _expect(self, step: _Refusable, action: Callable[[], object]) -> None:
        """Run a request; with ``fails`` it must be refused with that text in the error."""
        try:
            action()
        except SimError as exc:
            message = str(exc).split("\n[sim seed=")[0]
            if step.fails and "failed:" in message and step.fails in message:
                return
            raise _StepFailed(message + (f" (expected an error with {step.fails!r})"
                                         if step.fails else "")) from None
        if step.fails:
            raise _StepFailed(f"{step.kind} succeeded, but it should fail with {step.fails!r}")


    def post(self, step: Post, cid: bytes) -> None:
        net = self.net
        done = 0
        turn = 0
        written: list[_Posted] = []
        while done < step.count:
            if step.all_nodes:
                candidates = self.writers(step.channel)
                if not candidates:
                    raise _StepFailed("no live member may write")
            else:
                candidates = list(step.nodes)
            name = candidates[turn % len(candidates)] if step.pick == "cycle" \
                else candidates[self.script.randrange(len(candidates))]
            turn += 1
            self._alive(name)
            burst = min(step.burst, step.count - done)
            texts = []
            for _ in range(burst):
                done += 1
                self.posted += 1
                texts.append(_render(step.text or DEFAULT_TEXT, name, done, self.posted))
            if step.fails:
                for text in texts:
                    self._expect(step, functools.partial(net.post, name, cid, text))
            else:
                try:  # a burst goes out as the runtime sends it: sealed together
                    ids = net.post_burst(name, cid, texts) if burst > 1 \
                        else [net.post(name, cid, texts[0])]
                except SimError as exc:
                    raise _StepFailed(str(exc).split("\n[sim seed=")[0]) from None
                if step.label:
                    written += [_Posted(msg_id, name, cid) for msg_id in ids]
            if step.interval and done < step.count:
                net.run_for(step.interval)
        if step.label:
            self.labels[step.label] = written


    def writers(self, channel: str) -> list[str]:
        """Live members that may write: not banned or removed in their own view."""
        cid = self.channels[channel]
        out = []
        for name in self.net.members(cid):
            state = self.net.core(name).hub.get(cid)
            me = self.net.did(name)
            if state.key_status() == "removed" or (state.mod_events
                                                    and me in state.moderation().banned):
                continue
            out.append(name)
        return out

    # --- assertions ---

    def good_standing(self, channel: str) -> list[str]:
        """Live holders of the channel, except those it banned or removed: they no longer
        get its content (the founder's replica decides, or the first live holder's)."""
        cid = self.channels[channel]
        holders = self.net.members(cid)
        if not holders:
            return []
        spec = next(c for c in self.scenario.channels if c.name == channel)
        reference = spec.founder if spec.founder in holders else holders[0]
        ref = self.net.core(reference).hub.get(cid)
        banned = ref.moderation().banned if ref.mod_events else set()
        return [n for n in holders if self.net.did(n) not in banned
                and self.net.core(n).hub.get(cid).key_status() != "removed"]

    def observers(self, step: Assertion) -> list[str]:
        if isinstance(step, Fired):  # about the network, not a channel
            return []
        if step.nodes:
            return list(step.nodes)
        if step.all_nodes:
            return self.net.members(self.channels[step.channel])
        return self.good_standing(step.channel)

    def check(self, step: Assertion) -> Verdict:
        nodes = self.observers(step)
        about = [*nodes, *step.names()]
        if isinstance(step, MessageAssertion):
            about += [p.node for p in self.labels.get(step.msg, [])]
        try:
            passed, detail = self._check(step, nodes)
        except SimError as exc:
            passed, detail = False, str(exc)
        return Verdict(step.number, step.line, step.kind, passed, detail,
                       tuple(sorted(set(about))), len(self.net.trace), len(self.markers))

    def _check(self, step: Assertion, nodes: list[str]) -> tuple[bool, str]:
        net = self.net
        if isinstance(step, Fired):
            return self._fired(step)
        cid = self.channels[step.channel]
        if isinstance(step, ServerHolds):
            held = net.server_holds(step.server, cid)
            return held >= step.at_least, \
                f"{step.server} stores {held} envelopes of {step.channel!r} " \
                f"(at least {step.at_least} expected)"
        offline = [n for n in nodes if not net.node(n).alive]
        if offline:
            return False, f"offline, cannot be asked: {', '.join(offline)}"
        if not nodes:
            return False, "no node to check"
        if isinstance(step, Converged):
            net.assert_converged(cid, nodes)
            count = len(net.history(nodes[0], cid))
            return True, f"{len(nodes)} nodes, {count} messages"
        missing = [n for n in nodes if cid not in net.core(n).hub.channels]
        match step:
            case HistoryEqual() | MessageCount() | Order() | KeyStatus() if missing:
                return False, f"{', '.join(missing)} do not hold the channel"
            case HistoryEqual():
                return self._history_equal(step, cid, nodes)
            case MessageCount() | Order() | KeyStatus():
                return self._per_node(step, cid, nodes)
            case RankIs():
                wrong = []
                for n in nodes:
                    ranks = dict(net.core(n).hub.get(cid).member_ranks()) \
                        if n not in missing else {}
                    rank = ranks.get(net.did(step.target), "absent")
                    if rank != step.rank:
                        wrong.append(f"{n} sees {rank}")
                if wrong:
                    return False, f"{step.target} is not {step.rank}: {'; '.join(wrong)}"
                return True, f"{step.target} is {step.rank} at {len(nodes)} nodes"
            case VisibleTo() | HiddenFrom() | CannotDecrypt() | Deleted() | Edited() \
                    | Reactions():
                return self._message(step, cid, nodes, missing)
            case _:
                assert_never(step)

    def _message(self, step: MessageAssertion, cid: bytes, nodes: list[str],
                 missing: list[str]) -> tuple[bool, str]:
        """The assertions about a labelled message, at each of ``nodes``."""
        posts = self.labels.get(step.msg, [])
        if not posts:
            return False, f"{step.msg!r} was never posted (its step failed or was skipped)"
        ids = {p.msg_id for p in posts}
        problems: list[str] = []
        for n in nodes:
            shown = {m.id: m for m in self.net.history(n, cid)} if n not in missing else {}
            match step:
                case VisibleTo():
                    absent = [p.msg_id for p in posts if p.msg_id not in shown]
                    if absent:
                        problems.append(f"{n} does not show {len(absent)} of {len(posts)}: "
                                        f"{', '.join(absent[:3])}")
                    elif step.text and any(shown[i].text != step.text for i in ids):
                        texts = sorted({shown[i].text for i in ids})
                        problems.append(f"{n} shows {texts[:3]}, not {step.text!r}")
                case HiddenFrom():
                    seen = sorted(ids & set(shown))
                    if seen:
                        problems.append(f"{n} shows {len(seen)} of {len(posts)}: "
                                        f"{', '.join(seen[:3])}")
                case Deleted() | Edited() | Reactions():
                    problems += self._message_state(step, n, posts, shown)
                case CannotDecrypt():
                    readable = self._readable(n, cid, posts)
                    if readable:
                        problems.append(f"{n} holds the key of {len(readable)} of "
                                        f"{len(posts)}: {', '.join(readable[:3])}")
                case _:
                    assert_never(step)
        if problems:
            return False, "; ".join(problems)
        what = {"visible_to": "shown at", "hidden_from": "hidden from",
                "cannot_decrypt": "unreadable at", "deleted": "deleted at",
                "edited": "edited at", "reactions": "with those reactions at"}[step.kind]
        return True, f"{len(posts)} message(s) {what} {len(nodes)} nodes"

    def _message_state(self, step: Deleted | Edited | Reactions, n: str, posts: list[_Posted],
                       shown: dict[str, MessageView]) -> list[str]:
        """What is wrong with a labelled message at ``n`` for deleted/edited/reactions."""
        problems = []
        for post in posts:
            m = shown.get(post.msg_id)
            if m is None:
                problems.append(f"{n} does not show {post.msg_id}")
                continue
            match step:
                case Deleted():
                    if not m.deleted:
                        problems.append(f"{n} shows {post.msg_id} not deleted: {m.text!r}")
                case Edited():
                    if m.edited is None or m.deleted:
                        problems.append(f"{n} shows {post.msg_id} "
                                        f"{'deleted' if m.deleted else 'never edited'}: "
                                        f"{m.text!r}")
                    elif step.text and m.text != step.text:
                        problems.append(f"{n} shows {post.msg_id} edited to {m.text!r}, not "
                                        f"{step.text!r}")
                case Reactions():
                    who = sorted(self._who(d) for d in m.reactions.get(step.emoji, ()))
                    if who != list(step.by):
                        problems.append(f"{n} shows {step.emoji!r} on {post.msg_id} by "
                                        f"{who or 'nobody'}, not {list(step.by) or 'nobody'}")
                case _:
                    assert_never(step)
        return problems

    def _per_node(self, step: MessageCount | Order | KeyStatus, cid: bytes, nodes: list[str]
                  ) -> tuple[bool, str]:
        """message_count, order and key_status: one reading per node."""
        problems = []
        for n in nodes:
            match step:
                case KeyStatus():
                    status = self.net.core(n).hub.get(cid).key_status()
                    if status != step.status:
                        problems.append(f"{n} is {status}")
                case MessageCount():
                    shown = len(self.net.history(n, cid))
                    if shown != step.messages:
                        problems.append(f"{n} shows {shown}")
                case Order():
                    problem = self._order_at(step, n, cid)
                    if problem:
                        problems.append(problem)
                case _:
                    assert_never(step)
        match step:
            case KeyStatus():
                expect = f"key status {step.status}"
            case MessageCount():
                expect = f"{step.messages} messages"
            case Order():
                expect = f"order {', '.join(step.msgs)}"
            case _:
                assert_never(step)
        if problems:
            return False, f"expected {expect}: {'; '.join(problems)}"
        return True, f"{expect} at {len(nodes)} nodes"

    def _order_at(self, step: Order, n: str, cid: bytes) -> str:
        """What is wrong with the order of ``step.msgs`` at ``n`` ("" if nothing)."""
        position = {m.id: i for i, m in enumerate(self.net.history(n, cid))}
        ids = [self.labels[label][0].msg_id if self.labels.get(label) else ""
               for label in step.msgs]
        absent = [label for label, i in zip(step.msgs, ids, strict=True) if i not in position]
        if absent:
            return f"{n} does not show {', '.join(absent)}"
        actual = sorted(step.msgs, key=lambda label: position[ids[step.msgs.index(label)]])
        if actual != list(step.msgs):
            return f"{n} shows them as {', '.join(actual)}"
        return ""

    def _fired(self, step: Fired) -> tuple[bool, str]:
        count = self.net.fired(step.fault, step.between)
        where = f" between {step.between[0]} and {step.between[1]}" if step.between else ""
        bound = f"at least {step.at_least}" + (f" and at most {step.at_most}"
                                                if step.at_most is not None else "")
        passed = count >= step.at_least and (step.at_most is None or count <= step.at_most)
        return passed, f"{step.fault} fired {count} times{where} ({bound} expected)"

    def _readable(self, name: str, cid: bytes, posts: list[_Posted]) -> list[str]:
        """Messages of ``posts`` whose epoch secret ``name`` holds (or shows in clear)."""
        state = self.net.core(name).hub.channels.get(cid)
        if state is None:
            return []
        out = []
        shown = {m.id for m in state.history()}
        for post in posts:
            epoch = self._epoch(post)
            if post.msg_id in shown or epoch is None or epoch in state.group.secrets:
                out.append(post.msg_id)
        return out

    def _epoch(self, post: _Posted) -> bytes | None:
        """The epoch ``post`` was written under, from a live replica that holds it."""
        names = [post.node, *self.net.members(post.channel)]
        for name in names:
            node = self.net.node(name)
            if not node.alive or post.channel not in node.core.hub.channels:
                continue
            state = node.core.hub.get(post.channel)
            for record in state.claims(post.msg_id):
                if record.author == node.did or name != post.node:
                    return state.epoch_of(record.env)
        return None

    def _history_equal(self, step: HistoryEqual, cid: bytes, nodes: list[str]
                       ) -> tuple[bool, str]:
        net = self.net

        def rows(name: str) -> list[str]:
            out = []
            for m in net.history(name, cid):
                reactions = {e: sorted(self._who(d) for d in dids)
                             for e, dids in sorted(m.reactions.items())}
                out.append(f"{self._who(m.author)}: {m.text!r} edited={m.edited is not None} "
                           f"deleted={m.deleted} reactions={reactions} [{m.id}]")
            return out

        reference = rows(nodes[0])
        for name in nodes[1:]:
            other = rows(name)
            if other != reference:
                diff = _first_difference(reference, other)
                return False, (f"{nodes[0]} ({len(reference)} messages) and {name} "
                               f"({len(other)}) differ: {diff}")
        if step.texts is not None:
            texts = [m.text for m in net.history(nodes[0], cid)]
            if texts != list(step.texts):
                return False, (f"{nodes[0]} shows {texts[:10]}{' …' if len(texts) > 10 else ''}"
                               f", expected {list(step.texts)[:10]}")
        return True, f"{len(nodes)} nodes show the same {len(reference)} messages"

    def _who(self, did: str) -> str:
        try:
            return self.net.name_of(did)
        except KeyError:
            return did[:20]


def _first_difference(a: list[str], b: list[str]) -> str:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"at message {index + 1}: {x} / {y}"
    longer, which = (a, "first") if len(a) > len(b) else (b, "second")
    common = min(len(a), len(b))
    return f"the {which} has {len(longer) - common} more, from {longer[common]}"


def _render(template: str, node: str, index: int, number: int) -> str:
    values = {"node": node, "i": str(index), "n": str(number)}
    return re.sub(r"\{(\w*)\}", lambda m: values.get(m.group(1), m.group(0)), template)

