"""Prometheus metrics: a collector over the server's counters and a tiny HTTP endpoint.

The sans-IO service only counts (:class:`bootstrap.service.Stats`) and keeps state;
this adapter turns both into Prometheus metric families at scrape time, in its own
registry (not the process-global one), and serves them at ``GET /metrics`` from an
asyncio server on the event loop: no thread, nothing bound unless ``--metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from bootstrap.core import ServerCore
from bootstrap.service import CODES

PREFIX = "p2pchat_bootstrap"
#: Bytes of one HTTP request head we read before giving up on it.
MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0


class MetricsSource(Protocol):
    core: ServerCore
    bytes_in: int
    bytes_out: int

    def disk_bytes(self) -> int: ...


class ServerCollector(Collector):
    def __init__(self, source: MetricsSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        src = self.source
        core = src.core
        service = core.service
        stats = service.stats

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield gauge("connections", "Open links (handshaking or authenticated).",
                    core.connections())
        yield gauge("clients", "Authenticated links.", service.client_count)
        yield gauge("watches", "Topics watched, summed over links.", service.watch_count)
        yield counter("connections_refused", "Links refused (per-IP or total connection "
                      "limit).", core.connections_refused)
        yield counter("envelopes_in", "Envelopes accepted and stored.", stats.envelopes_in)
        yield counter("envelope_bytes_in", "Bytes of envelopes accepted and stored.",
                      stats.envelope_bytes_in)
        yield counter("envelopes_duplicate", "Uploaded envelopes ignored as duplicates.",
                      stats.duplicates)
        yield counter("envelopes_out", "Envelopes sent in stored frames.", stats.envelopes_out)
        yield counter("envelope_bytes_out", "Bytes of envelopes sent in stored frames.",
                      stats.envelope_bytes_out)
        yield counter("bytes_in", "Link payload bytes received.", src.bytes_in)
        yield counter("bytes_out", "Link payload bytes sent.", src.bytes_out)
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Requests by frame type.",
                                       labels=["request"])
        for name, value in (("announce", stats.announces), ("lookup", stats.lookups),
                            ("watch", stats.watches)):
            requests.add_metric([name], value)
        yield requests
        # every code of CODES is exported, 0 included (address-quota: the address budget)
        refusals = CounterMetricFamily(f"{PREFIX}_refusals", "Refused requests by code.",
                                       labels=["code"])
        for code in sorted(set(CODES) | set(stats.refusals)):
            refusals.add_metric([code], stats.refusals.get(code, 0))
        yield refusals
        pruned = CounterMetricFamily(f"{PREFIX}_retention_deleted",
                                     "Envelopes deleted by retention, by reason.",
                                     labels=["reason"])
        for reason in ("age", "size"):
            pruned.add_metric([reason], stats.pruned.get(reason, 0))
        yield pruned
        topics, envelopes, size = service.store_totals()
        yield gauge("store_topics", "Topics holding envelopes.", topics)
        yield gauge("store_envelopes", "Envelopes stored.", envelopes)
        yield gauge("store_bytes", "Bytes of envelopes stored.", size)
        yield gauge("db_file_bytes", "Size of the database files (db and WAL).",
                    src.disk_bytes())
        yield gauge("peer_records", "Peer records held.", service.record_count)
        blocks, fullest = service.block_totals()
        yield gauge("address_blocks", "Address blocks (IPv4 /24, IPv6 /56 by default) holding "
                    "stored bytes.", blocks)
        yield gauge("address_block_max_bytes", "Stored bytes of the fullest address block "
                    "(compare with limits.address_max_bytes).", fullest)


def make_registry(source: MetricsSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(source))
    return registry


class MetricsServer:
    """``GET /metrics`` over HTTP/1.x on the event loop; anything else is a 404."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            if len(head) > MAX_REQUEST_HEAD:
                raise ValueError("request head too large")
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method == "GET" and path == "/metrics":
                body = generate_latest(self.registry)
                status, ctype = "200 OK", CONTENT_TYPE_LATEST
            else:
                body, status, ctype = b"not found\n", "404 Not Found", "text/plain"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                         f"{len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
