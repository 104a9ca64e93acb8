"""The node's composition root (``p2pchat run``): home lock, identity, settings, store,
node runtime, control server and mDNS wired together; runs in the foreground until
SIGINT/SIGTERM or ``stop``. It sits above every adapter so no import runs up the layers."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from typing import TextIO

from p2pchat.control.server import ControlServer
from p2pchat.core.events import format_address
from p2pchat.discovery.mdns import MdnsDiscovery
from p2pchat.errors import LocalError
from p2pchat.home import NodeHome
from p2pchat.runtime import crashmark
from p2pchat.runtime.node import Node
from p2pchat.store import SqliteStore
from p2pchat.store.sqlite import translate

log = logging.getLogger("p2pchat.node")


@contextlib.contextmanager
def home_lock(home: NodeHome) -> Iterator[None]:
    """Hold an exclusive flock on the home for the process lifetime (freed on kill)."""
    fd = os.open(home.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalError(f"a node is already running at {home.path}") from None
        yield
    finally:
        os.close(fd)


async def run_node(home: NodeHome, listen: tuple[str, int] | None, out: TextIO = sys.stdout,
                   *, mdns: bool = True, bootstrap: tuple[tuple[str, int], ...] = (),
                   signals: bool = True) -> None:
    """Run a node until SIGINT/SIGTERM (``signals``: only in the main thread) or the
    control API's ``stop``."""
    os.umask(0o077)  # everything the node writes (db, WAL, socket) is user-only
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic logs every handshake at INFO
    logging.getLogger("aiosqlite").setLevel(logging.INFO)  # logs every statement at DEBUG
    logging.getLogger("zeroconf").setLevel(logging.INFO)  # logs every packet at DEBUG
    home.ensure()
    home.check_socket_path()
    with home_lock(home):
        settings = home.load_settings()  # a bad config.toml is refused before any write
        # a node.db without its identity.json is refused here, before a new key is made
        identity, created = home.load_or_create_identity()
        if created:
            log.info("created identity %s in %s", identity.did, home.path)
        host, port = listen or settings.listen
        store = await SqliteStore.open(home.db_path)  # a damaged file is refused here
        try:
            await store.claim(identity.did)  # another node's identity.json is refused here
        except BaseException as exc:
            await store.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(home.db_path, exc) from None
            raise
        node = Node(identity, settings.node, store, bootstrap=bootstrap or settings.bootstrap)
        node.head_unsure = crashmark.begin_run(home.path)  # design.md §10.5
        if node.head_unsure:
            log.warning("the last run did not stop cleanly and the machine restarted since: "
                        "own writes may be lost; each channel's next write before a peer "
                        "shows its head goes on as a new sub-device")
        stop = asyncio.Event()
        discovery: MdnsDiscovery | None = None
        try:
            try:
                address = await node.start(host, port)
            except sqlite3.Error as exc:  # damage quick_check did not see, met while loading
                raise translate(home.db_path, exc) from None
            if mdns and settings.mdns:
                discovery = MdnsDiscovery(node, address)
                await discovery.start()
            node.mdns = discovery
            control = ControlServer(node, home.socket_path, stop.set)
            await control.start()
        except BaseException:
            if discovery is not None:
                await discovery.close()
            await node.stop()
            raise
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM) if signals else ():
            loop.add_signal_handler(sig, stop.set)
        print(f"p2pchat node {identity.did} listening on {format_address(address)} "
              f"(home {home.path})", file=out, flush=True)
        try:
            await stop.wait()
        finally:
            log.info("shutting down")
            for sig in (signal.SIGINT, signal.SIGTERM) if signals else ():
                loop.remove_signal_handler(sig)
            await control.close()
            if discovery is not None:
                await discovery.close()
            await node.stop()
            crashmark.end_run(home.path)
            log.info("stopped")
