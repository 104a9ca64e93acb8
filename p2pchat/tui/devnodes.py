"""Throwaway ``p2pchat run`` processes on loopback, for the screenshot script and the
TUI benchmark (tests use ``tests/integration/nodeproc.py``, which this mirrors).

Each node gets a fresh home with short timers (like the tests' ``FAST_CONFIG``),
its output goes to files in that home, and readiness is the node's own
``p2pchat node DID listening on ADDRESS`` line, polled with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2pchat.errors import LocalError

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
READY = re.compile(r"^p2pchat node (did:key:\S+) listening on (\S+) ", re.MULTILINE)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("P2PCHAT_HOME", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class DevNode:
    """A ``p2pchat --home HOME run --listen 127.0.0.1:PORT`` child process."""

    def __init__(self, home: Path, name: str = "", port: int = 0) -> None:
        self.home = home
        self.name = name
        self.port = port
        self.did = ""
        self.address = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None,
            timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "p2pchat", "--home", str(self.home), *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout,
                              env=_env(), check=False)

    def cli_json(self, *args: str) -> Any:
        result = self.cli(*args, "--json")
        if result.returncode != 0:
            raise LocalError(f"p2pchat {' '.join(args)} failed: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def start(self, timeout: float = 20.0) -> DevNode:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = self.home / "config.toml"
        if not config.exists():
            config.write_text(FAST_CONFIG)
            if self.name:
                init = self.cli("init", "--name", self.name)
                if init.returncode != 0:
                    raise LocalError(f"p2pchat init failed: {init.stderr.strip()}")
        out = self.home / "run.out"
        with out.open("wb") as stdout, (self.home / "run.err").open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "p2pchat", "--home", str(self.home), "run",
                 "--listen", f"127.0.0.1:{self.port}"],
                stdout=stdout, stderr=stderr, env=_env())
        deadline = time.monotonic() + timeout
        while True:
            found = READY.search(out.read_text(errors="replace"))
            if found:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = (self.home / "run.err").read_text(errors="replace")[-2000:]
                self.stop()
                raise LocalError(f"node at {self.home} did not start: {err}")
            time.sleep(0.05)
        self.did, self.address = found.group(1), found.group(2)
        self.port = int(self.address.rsplit(":", 1)[1])
        return self

    def wait_synced(self, channel: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            listed = self.cli_json("channel", "list")
            if any(c["channel"] == channel and c["synced"] for c in listed):
                return
            if time.monotonic() > deadline:
                raise LocalError(f"{self.home} did not sync {channel} within {timeout} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
