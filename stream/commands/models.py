"""`framestream models ...`."""

from __future__ import annotations

import typer

app = typer.Typer(help="List, fetch and check models.", no_args_is_help=True)
