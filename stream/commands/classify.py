"""`framestream classify`."""

from __future__ import annotations

import typer


def classify() -> None:
    """Not built yet."""
    typer.echo("framestream classify: not built yet", err=True)
    raise typer.Exit(2)
