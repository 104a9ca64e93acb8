"""The ``p2pchat`` command line (typer)."""
