"""`framestream stage`."""

from __future__ import annotations

import typer


def stage() -> None:
    """Not built yet."""
    typer.echo("framestream stage: not built yet", err=True)
    raise typer.Exit(2)
