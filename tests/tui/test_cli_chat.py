"""``p2pchat chat`` with no node running starts one in this process, on a thread that
logs to the home's node.log, and stops it when the chat ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pchat.cli import main as cli_main
from p2pchat.control.client import call
from p2pchat.home import NodeHome
from tests.integration.conftest import short_tmp  # noqa: F401 (fixture)
from tests.integration.nodeproc import free_udp_port

pytestmark = pytest.mark.integration


def test_chat_starts_a_node_in_process_when_none_runs(short_tmp: Path,  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = short_tmp / "solo"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(f'[node]\nlisten = "127.0.0.1:{free_udp_port()}"\n')
    monkeypatch.setattr(cli_main.state, "home", NodeHome(home), raising=False)
    assert not cli_main._node_running()
    seen: list[str] = []
    monkeypatch.setattr("p2pchat.tui.app.run_chat",
                        lambda h, channel: seen.append(call(h, "status")["did"]))
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        cli_main.chat(None)  # the chat "runs" (a stand-in that asks the node for its DID)
    finally:
        for added in set(root.handlers) - set(handlers):
            root.removeHandler(added)
            added.close()
        root.setLevel(level)
    assert seen and seen[0].startswith("did:key:")
    assert "starting one in this process" in capsys.readouterr().out
    assert not cli_main._node_running()  # stopped when the chat ended
    assert "stopped" in (home / "node.log").read_text()
