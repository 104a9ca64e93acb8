"""Requests of the node's API waiting for the core's answer effects.

Each request gets an id and a future; the core answers with an effect naming the id
(:class:`ConnectFinished`, :class:`PingFinished`, :class:`DisconnectFinished`,
:class:`ChannelAnswer`). An answer that depends on a store write is resolved only
once that write committed (``stored``): what the store refused is reported as a
failure, never as success.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from p2pchat.core.events import ChannelAnswer, ConnectFinished, DisconnectFinished, PingFinished
from p2pchat.errors import LocalError
from p2pchat.identity import short_did

log = logging.getLogger("p2pchat.node")
T = TypeVar("T")


class Answers:
    """The futures of requests in flight, by request id."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next = 1
        self._futures: dict[int, asyncio.Future[Any]] = {}

    def new(self) -> tuple[int, asyncio.Future[Any]]:
        """A fresh request id and the future its answer resolves."""
        self._next += 1
        future: asyncio.Future[Any] = self._loop.create_future()
        self._futures[self._next] = future
        return self._next, future

    def forget(self, request_id: int) -> None:
        self._futures.pop(request_id, None)

    def _waiting(self, request_id: int) -> asyncio.Future[Any] | None:
        future = self._futures.get(request_id)
        return None if future is None or future.done() else future

    def connected(self, effect: ConnectFinished, stored: bool) -> None:
        future = self._waiting(effect.request_id)
        if future is None:
            return
        if effect.did is not None and not stored:
            future.set_exception(LocalError(
                f"connected to {effect.did}, but the node could not store it as a peer to "
                "redial (database error, see the node log)"))
        elif effect.did is not None:
            log.info("connected to %s", short_did(effect.did))
            future.set_result(effect.did)
        else:
            future.set_exception(LocalError(effect.error or "connect failed"))

    def pinged(self, effect: PingFinished) -> None:
        future = self._waiting(effect.request_id)
        if future is None:
            return
        if effect.rtt is not None:
            future.set_result(effect.rtt)
        else:
            future.set_exception(LocalError(effect.error or "ping failed"))

    def disconnected(self, effect: DisconnectFinished, stored: bool) -> None:
        future = self._waiting(effect.request_id)
        if future is None:
            return
        if stored:
            future.set_result(effect)
        else:
            future.set_exception(LocalError(
                "disconnected, but the node could not forget the peer in its store "
                "(database error, see the node log)"))

    def answered(self, effect: ChannelAnswer, stored: bool) -> None:
        future = self._waiting(effect.request_id)
        if future is None:
            return
        if not stored:
            future.set_exception(LocalError("the node could not store this change (database "
                                            "error, see the node log); it was not sent"))
        elif effect.result is not None:
            future.set_result(effect.result)
        else:
            future.set_exception(LocalError(effect.error or "request failed"))

    def waits(self, request_id: int) -> bool:
        return request_id in self._futures
