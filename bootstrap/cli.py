"""``p2pchat-bootstrap``: the community relay.

So far it serves the authenticated link layer only (a stable DID endpoint nodes
can connect to, keepalive included); the rendezvous and store-and-forward
services are built on top of it next (see docs/design.md, roadmap).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from p2pchat.errors import LocalError
from p2pchat.home import NodeHome, parse_listen, resolve_home

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="p2pchat bootstrap server.")
DEFAULT_LISTEN = "127.0.0.1:7446"


@app.callback()
def _root() -> None:
    """p2pchat bootstrap server."""


@app.command()
def serve(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to serve QUIC on.")
                      ] = DEFAULT_LISTEN,
    home: Annotated[Path | None, typer.Option("--home", help="Server home (identity, socket, "
                                              "database).")] = None,
) -> None:
    """Serve authenticated p2pchat links until SIGINT/SIGTERM."""
    from p2pchat.runtime.serve import run_node

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address = parse_listen(listen)
        node_home = NodeHome(resolve_home(home) if home else
                             resolve_home(None).with_name("p2pchat-bootstrap"))
        asyncio.run(run_node(node_home, address))
    except LocalError as exc:
        typer.echo(f"p2pchat-bootstrap: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
