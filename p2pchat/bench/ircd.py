"""A classic IRC server for ``p2pchat bench --compare``: ngircd on loopback, and a client.

:class:`Ngircd` starts the ngircd binary from the OS packages (``ngircd -n -f
CONFIG``) as a subprocess on 127.0.0.1 and a free port, with a configuration
written to a temporary directory: no system file is read or touched (no MOTD
file, no PID file, no syslog; DNS, IDENT and PAM off, no connection limits).
Penalties (ngircd's flood protection, which would throttle the sender to a few
messages a second) are off (``MaxPenaltyTime = 0``): the comparison measures
the server's fan-out, not its anti-flood policy. It is stopped (SIGTERM, then
SIGKILL) when the benchmark is done, and its log is kept for error messages.
:func:`find_ngircd` returns None when the binary is not installed; the runner
then skips the comparison instead of failing.

:class:`IrcClient` speaks raw IRC lines over asyncio streams: ``NICK``/``USER``
(waits for the ``001`` welcome), ``JOIN`` (waits for the end of ``NAMES``),
``PRIVMSG``, and answers ``PING`` with ``PONG``. One task reads the socket in
large chunks and splits lines; a ``PRIVMSG`` line's text is fed to an armed
:class:`~p2pchat.bench.observed.Recorder` with the ``time.monotonic_ns()`` of
its arrival, so the benchmark text (sequence number and send time) gives the
one-way delivery latency exactly as a p2pchat receiver records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from p2pchat.bench.observed import Recorder
from p2pchat.core.events import Address
from p2pchat.errors import LocalError

HOST = "127.0.0.1"
#: Where Debian puts the binary (``/usr/sbin`` is not on every user's PATH).
NGIRCD_PATHS = ("/usr/sbin/ngircd", "/usr/local/sbin/ngircd")
#: How long ngircd may take to accept connections / to exit after SIGTERM.
NGIRCD_START_TIMEOUT = 10.0
NGIRCD_STOP_TIMEOUT = 5.0
#: Registration, JOIN and similar exchanges with the server.
IRC_REPLY_TIMEOUT = 10.0
#: Bytes read from the socket at a time, and the longest line accepted.
READ_CHUNK = 256 * 1024
MAX_IRC_LINE = 8192
#: ngircd does not set TCP_NODELAY, so Nagle's algorithm holds its second small write to
#: a client until the first is acknowledged, and the client's delayed ACK makes that up
#: to ~40 ms (p50 ~9 ms at 1,000 msg/s to 10 receivers here). Receivers acknowledge at
#: once instead (TCP_QUICKACK, Linux): the comparison measures the server's fan-out, not
#: that interplay.
QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
#: Attempts with a fresh free port if ngircd could not bind the one picked.
START_ATTEMPTS = 3

_CONFIG = """\
[Global]
Name = bench.p2pchat.invalid
Info = p2pchat bench (temporary)
AdminInfo1 = p2pchat bench
AdminInfo2 = loopback only
AdminEMail = nobody@invalid
Listen = {host}
Ports = {port}
MotdPhrase = p2pchat bench
HelpFile = {help}

[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxPenaltyTime = 0
PingTimeout = 600
PongTimeout = 600

[Options]
DNS = no
Ident = no
PAM = no
"""


def find_ngircd() -> str | None:
    """The ngircd binary, or None when it is not installed."""
    found = shutil.which("ngircd")
    if found:
        return found
    for path in NGIRCD_PATHS:
        if Path(path).is_file():
            return path
    return None


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (a small race; the caller retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Ngircd:
    """One ngircd process with a temporary configuration, listening on loopback."""

    def __init__(self, proc: asyncio.subprocess.Process, address: Address, workdir: Path,
                 version: str) -> None:
        self.proc = proc
        self.address = address
        self.version = version
        self._workdir = workdir

    @classmethod
    async def start(cls, binary: str) -> Ngircd:
        last = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            workdir, config = _write_config(port)
            log = (workdir / "ngircd.log").open("wb")
            try:
                proc = await asyncio.create_subprocess_exec(
                    binary, "--nodaemon", "--config", str(config),
                    stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)
            finally:
                log.close()
            server = cls(proc, (HOST, port), workdir, _version(binary))
            try:
                await server._wait_listening()
                return server
            except LocalError as exc:
                last = str(exc)
                await server.stop()
        raise LocalError(f"ngircd did not start: {last}")

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self._workdir / "ngircd.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + NGIRCD_START_TIMEOUT
        while True:
            if self.proc.returncode is not None:
                raise LocalError(f"ngircd exited with code {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection(*self.address)
            except OSError:
                if loop.time() > deadline:
                    raise LocalError(f"ngircd did not listen within {NGIRCD_START_TIMEOUT:g} s: "
                                     f"{self.log_tail()}") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def stop(self) -> None:
        """SIGTERM, SIGKILL if it lingers; remove the temporary directory."""
        try:
            if self.proc.returncode is None:
                self.proc.terminate()
                try:
                    async with asyncio.timeout(NGIRCD_STOP_TIMEOUT):
                        await self.proc.wait()
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
        except ProcessLookupError:
            pass
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)


def _write_config(port: int) -> tuple[Path, Path]:
    """A temporary directory with the configuration; returns it and the file."""
    workdir = Path(tempfile.mkdtemp(prefix="p2pchat-ngircd-"))
    config = workdir / "ngircd.conf"
    config.write_text(_CONFIG.format(host=HOST, port=port, help=workdir / "help.txt"))
    (workdir / "help.txt").write_text("p2pchat bench\n")
    # run as root, ngircd drops to "nobody": it must still be able to read its files
    workdir.chmod(0o755)
    for path in (config, workdir / "help.txt"):
        path.chmod(0o644)
    return workdir, config


def _version(binary: str) -> str:
    """``26.1`` from ``ngIRCd 26.1-IDENT+...`` (run synchronously, once)."""
    import subprocess

    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=NGIRCD_START_TIMEOUT, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.split("\n", 1)[0].split()
    return first[1].split("-", 1)[0] if len(first) > 1 else "unknown"


class IrcClient:
    """A minimal IRC client: register, join, send and receive ``PRIVMSG`` lines."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 nick: str) -> None:
        self.nick = nick
        self._reader = reader
        self._writer = writer
        #: non-PRIVMSG lines (numerics, JOIN echoes) for the setup exchanges
        self._lines: asyncio.Queue[bytes] = asyncio.Queue()
        self.recorder: Recorder | None = None
        self.closed: str | None = None
        self._pump = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, address: Address, nick: str) -> IrcClient:
        """Connect and register; returns after the server's ``001`` welcome."""
        try:
            reader, writer = await asyncio.open_connection(*address, limit=MAX_IRC_LINE)
        except OSError as exc:
            raise LocalError(f"IRC connection to {address[0]}:{address[1]} failed: "
                             f"{exc}") from None
        client = cls(reader, writer, nick)
        try:
            client.send_line(f"NICK {nick}")
            client.send_line(f"USER {nick} 0 * :p2pchat bench")
            await client._expect(lambda words: len(words) > 1 and words[1] == b"001")
        except BaseException:
            await client.close()
            raise
        return client

    def send_line(self, line: str) -> None:
        self._writer.write(line.encode() + b"\r\n")

    async def join(self, channel: str) -> None:
        """JOIN and wait for the end of the channel's NAMES list (366)."""
        self.send_line(f"JOIN {channel}")
        target = channel.encode()
        await self._expect(lambda w: len(w) > 3 and w[1] == b"366" and w[3] == target)

    async def privmsg(self, channel: str, text: str) -> None:
        self._writer.write(f"PRIVMSG {channel} :{text}\r\n".encode())
        await self._writer.drain()

    async def _expect(self, match: Callable[[list[bytes]], bool]) -> None:
        try:
            async with asyncio.timeout(IRC_REPLY_TIMEOUT):
                while True:
                    line = await self._lines.get()
                    if not line:
                        raise LocalError(f"IRC server closed {self.nick}'s connection: "
                                         f"{self.closed}")
                    words = line.split(b" ", 4)
                    if words[0].upper() == b"ERROR":
                        raise LocalError(f"IRC server: {line.decode(errors='replace')}")
                    if match(words):
                        return
        except TimeoutError:
            raise LocalError(f"no answer from the IRC server within "
                             f"{IRC_REPLY_TIMEOUT:g} s ({self.nick})") from None

    async def _read(self) -> None:
        pending = b""
        try:
            sock = self._writer.get_extra_info("socket")
            while chunk := await self._reader.read(READ_CHUNK):
                if QUICKACK is not None and sock is not None:
                    # Linux clears it again after a while: set it after every read
                    sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
                lines = (pending + chunk).split(b"\r\n")
                pending = lines.pop()
                if len(pending) > MAX_IRC_LINE:
                    raise LocalError("IRC line too long")
                now = time.monotonic_ns()
                for line in lines:
                    self._on_line(line, now)
            self.closed = "end of stream"
        except (OSError, LocalError) as exc:
            self.closed = str(exc) or type(exc).__name__
        finally:
            self._lines.put_nowait(b"")

    def _on_line(self, line: bytes, now_ns: int) -> None:
        at = line.find(b" PRIVMSG ")
        if at >= 0 and line.startswith(b":"):
            text_at = line.find(b" :", at + 9)
            recorder = self.recorder
            if recorder is not None and text_at >= 0:
                text = line[text_at + 2:].decode(errors="replace")
                recorder.feed((("", "", text, False),), now_ns)
            return
        if line.startswith(b"PING"):
            self._writer.write(b"PONG" + line[4:] + b"\r\n")
            return
        self._lines.put_nowait(line)

    async def close(self) -> None:
        if not self._writer.is_closing():
            with contextlib.suppress(OSError):
                self._writer.write(b"QUIT :done\r\n")
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
