"""``p2pchat chat``: a terminal chat client (Textual) on a node's control socket."""

from __future__ import annotations

from p2pchat.tui.app import ChatApp, run_chat, run_chat_async

__all__ = ["ChatApp", "run_chat", "run_chat_async"]
