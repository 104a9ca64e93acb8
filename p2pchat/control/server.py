"""Control server: serves :class:`~p2pchat.runtime.node.Node` over the home's socket.

The socket file is created with umask 077 and chmod 0600 in a 0700 home, so only
the user can connect. A stale socket from a killed node is removed; a live one
(another node on this home) is an error, though the home lock catches that first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from p2pchat.channel.group import POLICIES
from p2pchat.channel.invite import format_channel_id, parse_channel_id, parse_invite
from p2pchat.channel.state import MessageView
from p2pchat.channel.ulid import is_ulid
from p2pchat.control.protocol import MAX_CLIENTS, MAX_LINE, decode, encode, encode_answer
from p2pchat.core.events import format_address
from p2pchat.errors import LocalError
from p2pchat.home import parse_listen
from p2pchat.runtime.node import Node
from p2pchat.runtime.views import sync_json

log = logging.getLogger("p2pchat.control")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
#: Most messages one history or search request returns (a longer history is read in
#: pages, by cursor; an answer longer than a line is streamed in part lines).
MAX_HISTORY = 100_000
#: Requests one control connection may have in flight (pipelined) at once.
MAX_PIPELINED = 256


class ControlServer:
    def __init__(self, node: Node, path: Path, on_stop: Callable[[], None]) -> None:
        self.node = node
        self.path = path
        self._on_stop = on_stop
        self._server: asyncio.Server | None = None
        self._clients = asyncio.Semaphore(MAX_CLIENTS)
        self._handlers: dict[str, Handler] = {
            "status": self._status,
            "peers": self._peers,
            "connect": self._connect,
            "ping": self._ping,
            "disconnect": self._disconnect,
            "channel.create": self._channel_create,
            "channel.list": self._channel_list,
            "invite": self._invite,
            "join": self._join,
            "send": self._send,
            "dm": self._dm,
            "edit": self._edit,
            "delete": self._delete,
            "react": self._react,
            "history": self._history,
            "search": self._search,
            "members": self._members,
            "mod": self._mod,
            "doctor": self._doctor,
            "modlog": self._modlog,
            "stop": self._stop,
            "watch": self._watch_misplaced,
        }

    async def start(self) -> None:
        self._remove_stale()
        old = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _remove_stale(self) -> None:
        if not self.path.exists() and not self.path.is_symlink():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # left behind by a node that was killed
            return
        finally:
            probe.close()
        raise LocalError(f"a node is already running at {self.path.parent}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Requests on one connection may be pipelined: they start in the order they
        arrive (so sends keep their order) and are answered in that order."""
        async with self._clients:
            answers: asyncio.Queue[asyncio.Future[dict[str, Any]] | None] = asyncio.Queue(
                maxsize=MAX_PIPELINED)
            first = await self._first_line(reader)
            if first is not None and _is_watch(first):
                await self._watch(reader, writer)
                return
            replier = asyncio.get_running_loop().create_task(self._reply(answers, writer))
            if first is not None:
                await answers.put(asyncio.ensure_future(self._answer(first)))
            try:
                while not replier.done():
                    try:
                        line = await reader.readline()
                    except (ValueError, asyncio.LimitOverrunError):
                        too_large: asyncio.Future[dict[str, Any]] = \
                            asyncio.get_running_loop().create_future()
                        too_large.set_result({"ok": False, "error": "request too large"})
                        await answers.put(too_large)
                        break
                    if not line:
                        break
                    await answers.put(asyncio.ensure_future(self._answer(line)))
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(asyncio.QueueFull):
                    answers.put_nowait(None)
                with contextlib.suppress(Exception):
                    await replier
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _first_line(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            return b"\x00"  # too large: answered as a malformed request
        except (ConnectionError, OSError):
            return None
        return line or None

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``watch`` (the first request of its connection): answer, then write change
        events until the client closes the connection."""
        queue = self.node.watch()
        closed = asyncio.get_running_loop().create_task(reader.read())  # EOF: client gone
        try:
            writer.write(encode({"ok": True, "result": {"watching": True}}))
            await writer.drain()
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, closed},
                                             return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    getter.cancel()
                    return
                writer.write(encode(getter.result()))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.node.watchers.unwatch(queue)
            closed.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(self, answers: asyncio.Queue[asyncio.Future[dict[str, Any]] | None],
                     writer: asyncio.StreamWriter) -> None:
        while True:
            pending = await answers.get()
            if pending is None:
                return
            response = await pending
            for line in encode_answer(response):  # one line, or parts of a long answer
                writer.write(line)
                await writer.drain()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = decode(line)
            method = request.get("method")
            params = request.get("params", {})
            if not isinstance(params, dict):
                raise LocalError("params must be an object")
            handler = self._handlers.get(method) if isinstance(method, str) else None
            if handler is None:
                raise LocalError(f"unknown control method {method!r}")
            return {"ok": True, "result": await handler(params)}
        except LocalError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug must not kill the node; report and log it
            log.exception("control request failed")
            return {"ok": False, "error": f"internal error: {type(exc).__name__}"}

    # --- methods ------------------------------------------------------------------
    # (``watch`` is handled by ``_serve``: it turns its connection into an event stream)

    async def _watch_misplaced(self, params: dict[str, Any]) -> Any:
        raise LocalError("watch must be the first request on its own connection")

    async def _status(self, params: dict[str, Any]) -> Any:
        status = self.node.status()
        status["home"] = str(self.path.parent)
        return status

    async def _peers(self, params: dict[str, Any]) -> Any:
        return [p.to_json() for p in self.node.peers()]

    async def _connect(self, params: dict[str, Any]) -> Any:
        address = params.get("address")
        did = params.get("did")
        if not isinstance(address, str) or not (did is None or isinstance(did, str)):
            raise LocalError("connect needs an address string and an optional DID")
        peer = await self.node.connect(parse_listen(address), did)
        return {"did": peer, "address": address}

    async def _ping(self, params: dict[str, Any]) -> Any:
        did = params.get("did")
        if not isinstance(did, str):
            raise LocalError("ping needs a DID")
        rtt = await self.node.ping(did)
        return {"did": did, "rtt_ms": round(rtt * 1000, 3)}

    async def _disconnect(self, params: dict[str, Any]) -> Any:
        target = params.get("target")
        if not isinstance(target, str):
            raise LocalError("disconnect needs a DID or HOST:PORT")
        if target.startswith("did:"):
            from p2pchat.identity import public_key_from_did

            public_key_from_did(target)
            done = await self.node.disconnect(did=target)
        else:
            done = await self.node.disconnect(address=parse_listen(target))
        return {"closed": done.closed, "forgotten": [format_address(a) for a in done.forgotten]}

    # --- channels -------------------------------------------------------------------

    def _channel(self, params: dict[str, Any]) -> bytes:
        """CHANNEL: a channel id, a local name with or without '#', or the DID of a
        direct-message peer."""
        text = params.get("channel")
        if not isinstance(text, str) or not text:
            raise LocalError("missing channel")
        query = self.node.query
        if text.startswith("did:"):
            dm = query.dm_channel(text)
            if dm is None:
                raise LocalError(f"no direct messages with {text[:80]}")
            return dm
        if not text.startswith("#"):
            try:
                channel = parse_channel_id(text)
            except LocalError:
                channel = None
            if channel is not None:
                if not query.has_channel(channel):
                    raise LocalError(f"not a member of channel {text}")
                return channel
        name = text.removeprefix("#")
        matches = [c for c in query.channels() if query.name_of(c) == name]
        if not matches:
            raise LocalError(f"no channel named #{name}")
        if len(matches) > 1:
            raise LocalError(f"#{name} names {len(matches)} channels; use the channel id")
        return matches[0]

    def _text(self, params: dict[str, Any], key: str) -> str:
        value = params.get(key)
        if not isinstance(value, str):
            raise LocalError(f"missing {key}")
        return value

    def _limit(self, params: dict[str, Any], default: int) -> int:
        limit = params.get("limit", default)
        if type(limit) is not int or not 0 < limit <= MAX_HISTORY:
            raise LocalError(f"limit must be 1..{MAX_HISTORY}")
        return limit

    async def _channel_create(self, params: dict[str, Any]) -> Any:
        policy = params.get("policy", "history")
        if policy not in POLICIES:
            raise LocalError(f"policy must be one of {', '.join(POLICIES)}")
        result = await self.node.create_channel(self._text(params, "name"), policy)
        channel = result["channel"]
        return {"channel": format_channel_id(channel), "name": result["name"],
                "policy": result["policy"], "invite": self.node.make_invite(channel)}

    async def _channel_list(self, params: dict[str, Any]) -> Any:
        query = self.node.query
        out = []
        for channel in query.channels():
            state = query.channel(channel)
            keys = state.key_status()
            out.append({"channel": format_channel_id(channel), "name": query.name_of(channel),
                        "dm": state.dm_peer if state.founder == self.node.identity.did
                        else state.founder if state.dm_peer else "",
                        "synced": state.genesis_id is not None and keys in ("member", "static"),
                        "keys": keys, "policy": state.policy,
                        "sealed": state.sealed_count(),
                        "messages": state.message_count(),
                        "peers": len(query.shared_with(channel)),
                        "topic": state.moderation().topic,
                        "sync": sync_json(query.sync_progress(channel))})
        return sorted(out, key=lambda c: (c["name"], c["channel"]))

    async def _invite(self, params: dict[str, Any]) -> Any:
        channel = self._channel(params)
        peers = params.get("peers", True)
        if type(peers) is not bool:
            raise LocalError("peers must be true or false")
        return {"channel": format_channel_id(channel),
                "invite": self.node.make_invite(channel, with_peers=peers)}

    async def _join(self, params: dict[str, Any]) -> Any:
        invite = parse_invite(self._text(params, "invite"))
        result = await self.node.join(invite)
        out = {"channel": format_channel_id(invite.channel), "name": result["name"],
               "new": bool(result.get("new", True))}
        if "status" in result:  # a channel already held: a member, or back after a kick
            out["status"] = result["status"]
        if result.get("rejoined"):
            out["rejoined"] = True
        return out

    async def _dm(self, params: dict[str, Any]) -> Any:
        result = await self.node.dm(self._text(params, "did"), self._text(params, "text"))
        return {"channel": format_channel_id(result["channel"]), "id": result["id"],
                "new": result["new"], "status": result["status"]}

    async def _send(self, params: dict[str, Any]) -> Any:
        channel = self._channel(params)
        reply_to = params.get("reply_to", "")
        if not isinstance(reply_to, str):
            raise LocalError("reply_to must be a message id")
        result = await self.node.send(channel, self._text(params, "text"), reply_to)
        return {"id": result["id"], "channel": format_channel_id(channel)}

    async def _edit(self, params: dict[str, Any]) -> Any:
        return await self.node.message_op(self._channel(params), "edit", self._text(params, "id"),
                                          text=self._text(params, "text"))

    async def _delete(self, params: dict[str, Any]) -> Any:
        return await self.node.message_op(self._channel(params), "delete",
                                          self._text(params, "id"))

    async def _react(self, params: dict[str, Any]) -> Any:
        on = params.get("on", True)
        if type(on) is not bool:
            raise LocalError("on must be true or false")
        return await self.node.message_op(self._channel(params), "react",
                                          self._text(params, "id"),
                                          emoji=self._text(params, "emoji"), on=on)

    @staticmethod
    def _message(v: MessageView) -> dict[str, Any]:
        return {"id": v.id, "author": v.author, "text": v.text, "ts": v.ts,
                "reply_to": v.reply_to or None, "edited": v.edited, "deleted": v.deleted,
                "reactions": v.reactions, **({"hidden": v.hidden} if v.hidden else {})}

    @staticmethod
    def _cursor(params: dict[str, Any], key: str) -> str | None:
        value = params.get(key)
        if value is None:
            return None
        if not is_ulid(value.upper() if isinstance(value, str) else value):
            raise LocalError(f"{key} must be a message id (26 characters), not "
                             f"{str(value)[:40]!r}")
        return str(value).upper()

    async def _history(self, params: dict[str, Any]) -> Any:
        """A page of messages in display order: the newest ``limit`` (before the message
        ``before``), or the oldest ``limit`` after the message ``after``."""
        hidden = params.get("hidden", False)
        if type(hidden) is not bool:
            raise LocalError("hidden must be true or false")
        channel = self._channel(params)
        limit = self._limit(params, 100)
        before, after = self._cursor(params, "before"), self._cursor(params, "after")
        state = self.node.query.channel(channel)
        try:
            views = state.history_page(limit, before=before, after=after,
                                       now_ms=int(time.time() * 1000), with_hidden=hidden)
        except ValueError as exc:
            raise LocalError(str(exc)) from None
        return [self._message(v) for v in views]

    async def _search(self, params: dict[str, Any]) -> Any:
        channel = self._channel(params)
        limit = self._limit(params, 50)
        if self.node.store is None:
            raise LocalError("search needs the store")
        ids = await self.node.store.search(channel, self._text(params, "query"), limit)
        views = self.node.query.channel(channel).views_of(set(ids), int(time.time() * 1000))
        return [self._message(v) for v in views[-limit:]]

    async def _members(self, params: dict[str, Any]) -> Any:
        channel = self._channel(params)
        state = self.node.query.channel(channel)
        online = set(self.node.query.shared_with(channel)) | {self.node.identity.did}
        now_ms = int(time.time() * 1000)
        out = []
        for did, rank in state.member_ranks():
            prekey = state.prekey_of(did, now_ms)
            out.append({"did": did, "rank": rank, "online": did in online,
                        "prekey": prekey.prekey_id.hex() if prekey is not None else None})
        return out

    async def _mod(self, params: dict[str, Any]) -> Any:
        channel = self._channel(params)
        action = self._text(params, "action")
        on = params.get("on", True)
        if type(on) is not bool:
            raise LocalError("on must be true or false")
        reason = params.get("reason", "")
        if not isinstance(reason, str):
            raise LocalError("reason must be text")
        target = params.get("target", "")
        value = params.get("value", "")
        if not isinstance(target, str) or not isinstance(value, str):
            raise LocalError("target and value must be text")
        result = await self.node.moderate(channel, action, target=target, value=value, on=on,
                                          reason=reason)
        return {"id": result["id"], "action": action, "channel": format_channel_id(channel)}

    async def _doctor(self, params: dict[str, Any]) -> Any:
        node = self.node
        query = node.query
        peers = {p.did: p for p in node.peers()}
        servers = []
        for status in query.servers():
            peer = peers.get(status.did or "") if status.linked else None
            servers.append({
                "address": format_address(status.address), "did": status.did,
                "reachable": peer is not None,
                "rtt_ms": None if peer is None or peer.rtt_ms is None else round(peer.rtt_ms, 3),
                "last_error": status.last_error or None,
                "uploaded": status.uploaded, "acknowledged": status.acknowledged,
                "received": status.received})
        channels = []
        for channel in sorted(query.channels()):
            state = query.channel(channel)
            members = [did for did, rank in state.member_ranks()
                       if rank != "banned" and did != node.identity.did]
            linked = set(query.shared_with(channel))
            channels.append({
                "channel": format_channel_id(channel), "name": query.name_of(channel),
                "synced": state.genesis_id is not None
                and state.key_status() in ("member", "static"),
                "keys": state.key_status(), "sealed": state.sealed_count(),
                "members": len(members),
                "reachable": len([d for d in members if d in linked]),
                "linked_peers": len(linked),
                "bootstrap_servers": sum(1 for s in servers if s["reachable"])})
        mdns = node.mdns
        return {
            "did": node.identity.did,
            "listen": format_address(node.listen_address) if node.listen_address else None,
            "mdns": getattr(mdns, "status", "off") if mdns is not None else "off",
            "peers": len(peers),
            "bootstrap": servers,
            "channels": channels,
        }

    async def _modlog(self, params: dict[str, Any]) -> Any:
        return self.node.query.channel(self._channel(params)).modlog()

    async def _stop(self, params: dict[str, Any]) -> Any:
        asyncio.get_running_loop().call_soon(self._on_stop)
        return {"stopping": True}


def _is_watch(line: bytes) -> bool:
    try:
        return decode(line).get("method") == "watch"
    except LocalError:
        return False
