"""The server runtime: one asyncio pump around :class:`~bootstrap.core.ServerCore`.

Transport callbacks and store answers become core events; ``handle`` runs
synchronously and its effects are carried out in order (p2pchat's node runtime
does the same, :mod:`p2pchat.runtime.node`).

* **Store writes** (and id checks) go through one ordered queue; the writer takes
  whatever is queued, runs it in one transaction (group commit) and only then
  feeds the answers back, in order. So an ``uploaded`` answer, produced by the
  ``AppendDone`` answer, always follows the commit.
* **Backfill reads** run as one task each on the store's reader connection. A
  read waits while its link's send backlog (bytes aioquic holds unacknowledged
  plus bytes queued for it) is above BACKFILL_HIGH_WATER: aioquic has no
  backpressure (DESIGN §12), so without this pacing a large backlog would fill a
  slow link's buffer until the transport drops it. Other links are not affected.
* One timer handle tracks :meth:`ServerCore.next_deadline` (link keepalives,
  retention, record expiry).
* Shutdown: the core closes every link with a reason, the transport stops, the
  writer finishes what is queued, the database is checkpointed and closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO, assert_never

from bootstrap.config import ServerConfig
from bootstrap.core import ServerCore
from bootstrap.events import (
    AppendEnvelopes,
    CheckIds,
    DeleteRecords,
    Note,
    PruneOlder,
    ReadStored,
    SaveRecord,
    ServerEffect,
    ServerEvent,
    StoreWrite,
    TrimTopic,
)
from bootstrap.logs import event
from bootstrap.metrics import MetricsServer, make_registry
from bootstrap.store import ServerStore
from p2pchat import __version__
from p2pchat.channel.envelope import Envelope
from p2pchat.core.channels import verify_in_order
from p2pchat.core.driver import Driver
from p2pchat.core.events import (
    Address,
    ChannelAnswer,
    CloseLink,
    ConnectFinished,
    DataReceived,
    Dial,
    DisconnectFinished,
    ForgetEpochKey,
    ForgetPeer,
    IndexMessages,
    LinkEstablished,
    LinkLost,
    PeerConnected,
    PeerDisconnected,
    PersistChannel,
    PersistCursor,
    PersistEnvelopes,
    PersistEpochKey,
    PersistPrekey,
    PersistSnapshot,
    PingFinished,
    SavePeer,
    ShutdownRequested,
    SyncChanged,
    TimerExpired,
    Transmit,
    format_address,
)
from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.identity import Identity
from p2pchat.transport.quic import QuicTransport

log = logging.getLogger("bootstrap")
AGENT = f"p2pchat-bootstrap/{__version__}"
LOCK_FILE = "bootstrap.lock"
#: A backfill read waits while its link has more than this many bytes unsent/unacked.
BACKFILL_HIGH_WATER = 1024 * 1024
#: How often a waiting backfill read looks at its link's backlog again (seconds).
BACKFILL_POLL = 0.01
#: Threads that check upload signatures of large batches (libsodium releases the GIL).
VERIFY_THREADS = 2
#: Batches smaller than this are checked on the event loop's thread.
PARALLEL_VERIFY_MIN = 16


def wall_ms() -> int:
    return int(time.time() * 1000)


class _SystemRandom(random.SystemRandom):
    """CSPRNG for link nonces and jitter."""


class BootstrapServer:
    """A running server: core + QUIC transport + SQLite store. One event loop."""

    def __init__(self, identity: Identity, config: ServerConfig, store: ServerStore) -> None:
        self.identity = identity
        self.config = config
        self.store = store
        self._loop = asyncio.get_running_loop()
        self._verifier = ThreadPoolExecutor(max_workers=VERIFY_THREADS,
                                            thread_name_prefix="bootstrap-verify")
        self.core = ServerCore(identity, config, _SystemRandom(), self._loop.time(),
                               agent=AGENT, verify_batch=self._verify_batch)
        self.transport = QuicTransport(identity, self,
                                       handshake_timeout=config.link.handshake_timeout,
                                       idle_timeout=config.link.idle_timeout)
        self.listen_address: Address | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._timer: asyncio.TimerHandle | None = None
        #: the shared driver loop (p2pchat.core.driver) around the server core
        self._driver: Driver[ServerEvent, ServerEffect] = Driver(
            _WallClocked(self.core), self._execute, self._arm, TimerExpired, self._spun)
        self._writes: asyncio.Queue[StoreWrite | None] = asyncio.Queue()
        self._writer = self._loop.create_task(self._write_loop())
        self._reads: set[asyncio.Task[None]] = set()
        self._stopped = False

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str, port: int) -> Address:
        loaded = await self.store.load(wall_ms())
        self._dispatch(loaded)
        topics, envelopes, size = self.core.service.store_totals()
        event(log, "info", "store-loaded", path=self.store.path, topics=topics,
              envelopes=envelopes, bytes=size, records=self.core.service.record_count)
        self.listen_address = await self.transport.listen(host, port)
        return self.listen_address

    async def stop(self, reason: str = "bootstrap server shutting down") -> None:
        if self._stopped:
            return
        self._dispatch(ShutdownRequested(reason))
        self._stopped = True
        await self.transport.stop()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._reads):
            task.cancel()
        await asyncio.gather(*self._reads, return_exceptions=True)
        await self._writes.put(None)
        await self._writer
        self._verifier.shutdown(wait=True)
        await self.store.close()

    def disk_bytes(self) -> int:
        return self.store.disk_bytes()

    def _verify_batch(self, envelopes: list[Envelope]) -> list[bool]:
        if len(envelopes) < PARALLEL_VERIFY_MIN:
            return verify_in_order(envelopes)
        slices = [envelopes[i::VERIFY_THREADS] for i in range(VERIFY_THREADS)]
        results = [f.result() for f in [self._verifier.submit(verify_in_order, s)
                                        for s in slices]]
        verdicts = [False] * len(envelopes)
        for i, result in enumerate(results):
            verdicts[i::VERIFY_THREADS] = result
        return verdicts

    # --- LinkEvents (called by the transport) -------------------------------------------

    def established(self, link_id: int, outbound: bool, address: Address,
                    cert_fingerprint: bytes, peer_cert_key: bytes | None,
                    dial_id: int | None) -> None:
        self._dispatch(LinkEstablished(link_id, outbound, address, cert_fingerprint,
                                       peer_cert_key, dial_id))

    def data(self, link_id: int, data: bytes) -> None:
        self.bytes_in += len(data)
        self._dispatch(DataReceived(link_id, data))

    def lost(self, link_id: int, reason: str) -> None:
        self._dispatch(LinkLost(link_id, reason))

    # --- the pump ------------------------------------------------------------------------

    def _dispatch(self, ev: ServerEvent) -> None:
        if self._stopped:
            return
        self._driver.dispatch(ev, self._loop.time())
        self.transport.flush()

    def _on_timer(self) -> None:
        self._timer = None
        if not self._stopped:
            self._driver.fire(self._loop.time())
            self.transport.flush()

    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    @staticmethod
    def _spun(what: str) -> None:
        log.warning("server core timer: %s", what)

    def _execute(self, effect: ServerEffect) -> None:
        match effect:
            case Transmit():
                self.bytes_out += len(effect.data)
                self.transport.send(effect.link_id, effect.data)
            case CheckIds() | AppendEnvelopes() | PruneOlder() | TrimTopic() | SaveRecord() \
                    | DeleteRecords():
                self._writes.put_nowait(effect)
            case ReadStored():
                task = self._loop.create_task(self._read(effect))
                self._reads.add(task)
                task.add_done_callback(self._reads.discard)
            case Note():
                event(log, effect.level, effect.event, effect.fields)
            case CloseLink():
                event(log, "info", "link-closed", link=effect.link_id, code=effect.code.name,
                      reason=effect.reason)
                self.transport.close(effect.link_id, effect.code, effect.reason)
            case PeerConnected():
                event(log, "info", "link-open", link=effect.link_id, did=effect.did,
                      address=format_address(effect.address))
            case PeerDisconnected():
                event(log, "info", "link-lost", link=effect.link_id, did=effect.did,
                      reason=effect.reason)
            case Dial() | ConnectFinished() | PingFinished() | DisconnectFinished() \
                    | ForgetPeer() | SavePeer() | PersistCursor() | PersistPrekey() \
                    | PersistEpochKey() | ForgetEpochKey() | PersistChannel() \
                    | PersistEnvelopes() | PersistSnapshot() | IndexMessages() \
                    | SyncChanged() | ChannelAnswer():
                # a server dials no one and holds no channels: the node's own bookkeeping
                log.debug("ignored effect %s", type(effect).__name__)
            case _:
                assert_never(effect)

    # --- store -------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            item = await self._writes.get()
            await asyncio.sleep(0)  # group commit: let work that is already runnable queue up
            batch = [item]
            while not self._writes.empty():
                batch.append(self._writes.get_nowait())
            effects = [e for e in batch if e is not None]
            if effects:
                for answer in await self.store.execute(effects):
                    if answer is not None:
                        self._dispatch(answer)
            if None in batch:
                return

    def _backlog(self, link_id: int) -> int | None:
        """Bytes a link has not had acknowledged or not yet handed to aioquic (None: gone)."""
        return self.transport.backlog(link_id)

    async def _read(self, effect: ReadStored) -> None:
        while True:  # polled: the transport has no "drained" callback to wait on
            backlog = self._backlog(effect.link_id)
            if backlog is None or backlog <= BACKFILL_HIGH_WATER:
                break
            await asyncio.sleep(BACKFILL_POLL)
        answer = await self.store.read(effect)  # also for a gone link: the core forgets it
        self._dispatch(answer)


class _WallClocked:
    """The server core as a driver machine: each event also gets the wall clock."""

    def __init__(self, core: ServerCore) -> None:
        self.core = core

    def handle(self, event: ServerEvent, now: float, /) -> list[ServerEffect]:
        return self.core.handle(event, now, wall_ms())

    def next_deadline(self) -> float | None:
        return self.core.next_deadline()


@contextlib.contextmanager
def server_lock(home: Path) -> Iterator[None]:
    """Hold an exclusive flock on the home for the process lifetime (freed on kill)."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalError(f"a bootstrap server is already running at {home}") from None
        yield
    finally:
        os.close(fd)


async def run_server(home: Path, config: ServerConfig, db: Path, out: TextIO = sys.stdout
                     ) -> None:
    """``p2pchat-bootstrap serve``: run until SIGINT/SIGTERM."""
    os.umask(0o077)  # identity, database and WAL are for the server's user only
    node_home = NodeHome(home)
    node_home.ensure()
    with server_lock(home):
        identity, created = node_home.load_or_create_identity()
        if created:
            event(log, "info", "identity-created", did=identity.did, home=home)
        store = await ServerStore.open(db)
        server = BootstrapServer(identity, config, store)
        metrics: MetricsServer | None = None
        try:
            address = await server.start(*config.listen)
            if config.metrics is not None:
                metrics = MetricsServer(make_registry(server))
                host, port = config.metrics
                try:
                    metrics_at = await metrics.start(host, port)
                except OSError as exc:
                    raise LocalError(f"cannot serve metrics on {format_address(config.metrics)}:"
                                     f" {exc.strerror or exc}") from exc
        except BaseException:
            if metrics is not None:
                await metrics.close()
            await server.stop()
            raise
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if metrics is not None:
            print(f"p2pchat-bootstrap metrics on http://{format_address(metrics_at)}/metrics",
                  file=out, flush=True)
        event(log, "info", "started", did=identity.did, listen=format_address(address),
              db=db, metrics=format_address(metrics_at) if metrics is not None else "off")
        print(f"p2pchat-bootstrap {identity.did} listening on {format_address(address)} "
              f"(home {home})", file=out, flush=True)
        try:
            await stop.wait()
        finally:
            event(log, "info", "shutting-down")
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            if metrics is not None:
                await metrics.close()
            await server.stop()
            event(log, "info", "stopped")
