"""`framestream run`."""

from __future__ import annotations

import typer


def run() -> None:
    """Not built yet."""
    typer.echo("framestream run: not built yet", err=True)
    raise typer.Exit(2)
