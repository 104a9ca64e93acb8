"""``p2pchat-bootstrap``: the community relay (rendezvous and store-and-forward).

``serve`` runs the server in the foreground until SIGINT/SIGTERM; see
docs/operations.md ("Bootstrap server") for the home, ``bootstrap.toml`` and
operations, and docs/protocol.md §12 for what it serves.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from bootstrap.config import DB_FILE, load_config
from bootstrap.logs import LEVELS, setup
from p2pchat.errors import LocalError
from p2pchat.home import parse_listen, resolve_home

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="p2pchat bootstrap server.")


@app.callback()
def _root() -> None:
    """p2pchat bootstrap server."""


@app.command()
def serve(
    listen: Annotated[str | None, typer.Option(
        "--listen", help="HOST:PORT to serve QUIC on (default 127.0.0.1:7446, or "
        "server.listen in bootstrap.toml). Use 0.0.0.0:PORT to serve the network.")] = None,
    db: Annotated[Path | None, typer.Option(
        "--db", help="SQLite database file (default: server.db in the home).")] = None,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="HOST:PORT to serve Prometheus metrics at /metrics (off unless "
        "given here or as server.metrics).")] = None,
    home: Annotated[Path | None, typer.Option(
        "--home", help="Server home (identity, bootstrap.toml, database).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")
                         ] = "info",
) -> None:
    """Serve rendezvous and envelope storage until SIGINT/SIGTERM."""
    from bootstrap.runtime import run_server

    level = LEVELS.get(log_level.lower())
    if level is None:
        typer.echo(f"p2pchat-bootstrap: unknown log level {log_level!r}", err=True)
        raise typer.Exit(2)
    setup(level)
    try:
        server_home = resolve_home(home) if home else \
            resolve_home(None).with_name("p2pchat-bootstrap")
        config = load_config(server_home)
        changes: dict[str, object] = {}
        if listen is not None:
            changes["listen"] = parse_listen(listen)
        if metrics is not None:
            changes["metrics"] = parse_listen(metrics)
        if db is not None:
            changes["db"] = db.expanduser().absolute()
        config = dataclasses.replace(config, **changes)  # type: ignore[arg-type]
        asyncio.run(run_server(server_home, config, config.db or server_home / DB_FILE))
    except LocalError as exc:
        typer.echo(f"p2pchat-bootstrap: {exc}", err=True)
        raise typer.Exit(1) from None


def main() -> None:
    app()
