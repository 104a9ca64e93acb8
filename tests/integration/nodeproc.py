"""Real ``p2pchat`` processes for integration tests, synchronised on their output.

Nothing here sleeps and hopes: waits block on a condition variable that the
output reader threads signal, with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

#: Short timers so failures and reconnects happen within a test's patience.
FAST_CONFIG = """\
[node]
dial_timeout = 3.0
reconnect_base = 0.2
reconnect_max = 1.0

[link]
handshake_timeout = 2.0
keepalive_interval = 0.5
idle_timeout = 3.0
"""
READY = re.compile(r"^p2pchat node (did:key:\S+) listening on (\S+) ")

#: Every wait of the test helpers gives up after ``patience(timeout)``: SLACK times the
#: timeout its caller names, which is what the wait may take on an idle machine (with
#: room). A loaded machine (CI, other work, ``stress``) is several times slower; the
#: deadline only turns a hang into a failure, and a wait returns as soon as its event
#: is there. ``P2PCHAT_TEST_SLACK`` overrides the factor.
SLACK = float(os.environ.get("P2PCHAT_TEST_SLACK", "3"))


def patience(timeout: float) -> float:
    """How long a helper waits for an event its caller expects within ``timeout`` s."""
    return timeout * SLACK


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(home: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pchat", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, env=_env(), check=False,
    )


def cli_json(home: Path, *args: str) -> Any:
    result = cli(home, *args, "--json")
    assert 0 == result.returncode, result.stderr
    return json.loads(result.stdout)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("P2PCHAT_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Lines:
    def __init__(self, stream: Any, cond: threading.Condition) -> None:
        self.lines: list[str] = []
        self._cond = cond
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        stream.close()


class NodeProcess:
    """A ``p2pchat run`` child process on 127.0.0.1."""

    def __init__(self, home: Path, port: int = 0, config: str | None = FAST_CONFIG) -> None:
        self.home = home
        self.port = port
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if config is not None:
            (home / "config.toml").write_text(config)
        self.did = ""
        self.address = ""
        self.proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()

    def start(self, timeout: float = 20.0) -> NodeProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pchat", "--home", str(self.home), "run",
             "--listen", f"127.0.0.1:{self.port}", "--log-level", "debug"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        )
        self.out = _Lines(self.proc.stdout, self._cond)
        self.err = _Lines(self.proc.stderr, self._cond)
        line = self.wait_for(lambda: next((m for ln in self.out.lines if (m := READY.match(ln))),
                                          None), timeout, "ready line")
        self.did, self.address = line.group(1), line.group(2)
        self.port = int(self.address.rsplit(":", 1)[1])
        return self

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        timeout = patience(timeout)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                if self.proc is not None and self.proc.poll() is not None and not value:
                    # process exited: one last look, then fail with its output
                    value = predicate()
                    if value:
                        return value
                    raise AssertionError(f"node exited ({self.proc.returncode}) before {what}:\n"
                                         + "\n".join(self.err.lines[-30:]))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n"
                                         + "\n".join(self.err.lines[-30:]))
                self._cond.wait(remaining)

    def wait_log(self, text: str, timeout: float = 10.0, after: int = 0) -> str:
        return str(self.wait_for(
            lambda: next((ln for ln in self.err.lines[after:] if text in ln), None), timeout,
            f"log line containing {text!r}"))

    def log_mark(self) -> int:
        with self._cond:
            return len(self.err.lines)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return cli(self.home, *args)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
