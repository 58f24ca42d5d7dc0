"""`framestream run`: the whole pipeline, played by a runner chosen by name (`stream.runners`):
``ray`` (the default: one Ray Serve application, `deployments.local.runner`) or ``processes`` (each
stage its own OS process, `stream.runners.processes_cli`). Both play through `stream.runners.play`:
the runner only chooses where the stages run."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from stream.errors import FramestreamError
from stream.runners import RunRequest, load_runner
from stream.settings import load_settings
from stream.sinks.registry import check_sinks
from stream.stopping import exit_code, handle_stop_signals
from stream.watchdog import start_watchdog

__all__ = ["run"]

console = Console(stderr=True)


def run(
    source: list[str] = typer.Option(
        [], "--source", "-s", help="video file, image dir/glob, rtsp://, webcam:N, replay:FILE"
    ),
    model: list[str] = typer.Option(
        [], "--model", "-m", help="model name (repeat for several; default from settings)"
    ),
    results: Path | None = typer.Option(
        None, "--results", help="write one JSON object per frame to this JSONL file"
    ),
    redis: str | None = typer.Option(
        None, "--redis", help="redis:// URL, or 'auto' for a private redis-server"
    ),
    runner: str = typer.Option(
        "ray", "--runner", help="ray: one Ray Serve application (default); processes: OS processes"
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to attach to (ray runner); default: start a local Ray"
    ),
    config: Path | None = typer.Option(None, "--config", help="settings YAML file"),
    timeout_s: float | None = typer.Option(None, "--timeout", help="give up after this many seconds"),
    loop: bool = typer.Option(
        False, "--loop", help="play the sources over and over, until --timeout or Ctrl-C"
    ),
    json_summary: bool = typer.Option(
        False, "--json", help="print the summary as one JSON document on stdout (the rest goes to stderr)"
    ),
) -> None:
    """Run the pipeline until every finite source is fully processed, then print a summary.

    SIGINT (Ctrl-C) or SIGTERM stops the sources, drains and prints the summary (exit 0); a second
    one skips the drain (exit 130 / 143). What the run started stops with it, even on SIGKILL."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s run %(levelname)s %(message)s")
    request = RunRequest(
        sources=list(source),
        models=list(model),
        results=results,
        redis=redis,
        address=address,
        timeout_s=timeout_s,
        loop=loop,
        json=json_summary,
    )
    try:
        settings = load_settings(config)
        check_sinks(settings.sinks)  # an unknown kind is one clear error before anything starts
        play = load_runner(runner)
    except (FramestreamError, ValidationError) as e:
        console.print(f"[red]framestream run: {e}[/red]")
        raise typer.Exit(2) from e
    start_watchdog()  # before Redis or Ray start: it follows everything the run starts
    with handle_stop_signals():
        try:
            code = play(settings, request)
        except KeyboardInterrupt as e:  # a stop signal unwound the run; what it started is stopped
            code = exit_code(e)
            if code:
                console.print(f"[red]framestream run: stopped without draining ({e})[/red]")
            else:
                console.print(f"framestream run: stopped ({e}) before the pipeline started")
    if code:
        raise typer.Exit(code)
