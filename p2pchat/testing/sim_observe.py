"""The simulator's observations (:mod:`p2pchat.testing.sim`): replicas and their convergence.

Owns what a test reads of the channels the nodes hold: whether a node is synced,
its (cached) history, a channel's members, a comparable rendering of a replica,
and :meth:`_Views.assert_converged`, which fails with a diff and the seed.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterable

from p2pchat.channel.state import MessageView
from p2pchat.testing.sim_loop import SimLoop


class _Views:
    """A network's view of its replicas (see the module docstring)."""

    def __init__(self, net: SimLoop) -> None:
        self.net = net
        #: (node, channel) -> (what had happened when it was computed, its history)
        self._histories: dict[tuple[str, bytes],
                              tuple[tuple[int, int, int], list[MessageView]]] = {}

    def synced(self, name: str, channel: bytes) -> bool:
        """Whether ``name`` holds ``channel``, has its genesis and (with group keys) has been
        admitted: it holds a valid epoch, so it can post."""
        state = self.net.nodes[name].core.hub.channels.get(channel)
        if state is None or state.genesis_id is None:
            return False
        return not state.e2ee or self.net.nodes[name].did in state.group.view().members

    def history(self, name: str, channel: bytes) -> list[MessageView]:
        """``name``'s history of ``channel`` (computed once until anything happens: the
        assertions at the end of a run ask for every node's several times)."""
        state = self.net.nodes[name].core.hub.get(channel)
        stamp = (self.net.stats.events, len(state.log), id(state))
        cached = self._histories.get((name, channel))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        views = state.history()
        self._histories[(name, channel)] = (stamp, views)
        return views

    def members(self, channel: bytes) -> list[str]:
        """Names of live nodes that hold ``channel``."""
        return [n for n, node in sorted(self.net.nodes.items())
                if node.alive and channel in node.core.hub.channels]

    def replica_lines(self, name: str, channel: bytes) -> list[str]:
        """A readable, comparable rendering of one replica: history, vector, log, pending."""
        state = self.net.nodes[name].core.hub.get(channel)
        lines = [f"msg {m.id} {self.net._who(m.author)} {m.text!r} reply={m.reply_to or '-'} "
                 f"edited={m.edited} deleted={m.deleted} reactions={sorted(m.reactions.items())}"
                 for m in self.history(name, channel)]
        lines += [f"vector {self.net._who(author)}/{device.hex()[:8]} = {seq}"
                  for (author, device), seq in sorted(state.vector.items())]
        lines.append(f"envelopes {len(state.envs)} digest "
                     f"{hashlib.sha256(b''.join(sorted(state.envs))).hexdigest()[:16]}")
        lines.append(f"pending {len(state.pending)}")
        return lines

    def assert_converged(self, channel: bytes, names: Iterable[str] | None = None) -> None:
        """Every member holds the identical replica (:meth:`SimNetwork.assert_converged`)."""
        members = sorted(names) if names is not None else self.members(channel)
        if not members:
            raise self.net.fail(f"no node holds channel {channel.hex()[:12]}")
        missing = [n for n in members if channel not in self.net.nodes[n].core.hub.channels]
        if missing:
            raise self.net.fail(f"{', '.join(missing)} do not hold channel {channel.hex()[:12]}")
        reference = members[0]
        expected = self.replica_lines(reference, channel)
        problems: list[str] = []
        for name in members[1:]:
            actual = self.replica_lines(name, channel)
            if actual != expected:
                diff = list(difflib.unified_diff(expected, actual, reference, name, n=1,
                                                 lineterm=""))
                shown = diff[:60] + ([f"... {len(diff) - 60} more diff lines"]
                                     if len(diff) > 60 else [])
                problems.append("\n".join(shown))
        pending = [n for n in members if self.net.nodes[n].core.hub.get(channel).pending]
        if problems or pending:
            counts = ", ".join(f"{n}: {len(self.history(n, channel))} msgs" for n in members)
            raise self.net.fail(f"channel {channel.hex()[:12]} has not converged ({counts}; "
                            f"pending at {pending or 'none'}):\n" + "\n".join(problems))
