"""`framestream run`: the whole pipeline on this machine.

``--runner processes`` starts each stage as its own OS process (`stream.stages.runner`); the Ray
runner sits beside it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from stream.adapters.redis_server import RedisServer
from stream.errors import FramestreamError
from stream.settings import Settings, load_settings

__all__ = ["Runner", "print_report", "run"]

console = Console(stderr=True)


class Runner(StrEnum):
    processes = "processes"
    ray = "ray"


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
    runner: Runner = typer.Option(
        Runner.ray, "--runner", help="ray: one Ray Serve application (default); processes: OS processes"
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to attach to (ray runner); default: start a local Ray"
    ),
    config: Path | None = typer.Option(None, "--config", help="settings YAML file"),
    timeout_s: float | None = typer.Option(None, "--timeout", help="give up after this many seconds"),
    loop: bool = typer.Option(
        False, "--loop", help="play the sources over and over, until --timeout or Ctrl-C"
    ),
) -> None:
    """Run the pipeline until every finite source is fully processed, then print a summary."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s run %(levelname)s %(message)s")
    try:
        settings = load_settings(config)
        if runner is Runner.ray:
            _run_ray(settings, source, model, results, redis, address, timeout_s, loop)
            return
        models = model or [settings.models.default]
        _check_models(settings, models)
        with tempfile.TemporaryDirectory(prefix="framestream-demo-") as tmp:
            from stream.stages.sources import SourceSpec

            sources = [SourceSpec(uri=s, loop=loop) for s in source or [_demo_source(Path(tmp))]]
            report = _run_processes(
                settings, redis or settings.redis.url, sources, models, results, timeout_s, loop
            )
    except FramestreamError as e:
        console.print(f"[red]framestream run: {e}[/red]")
        raise typer.Exit(2) from e
    print_report(report)
    if results:
        console.print(f"results: {results}")
    if any(r.error for r in report.rows):
        raise typer.Exit(1)


def _run_ray(settings: Settings, sources, models, results, redis, address, timeout_s, loop) -> None:
    """The Ray runner (`deployments.runner`): it prints its own progress and summary."""
    from deployments.runner import RunOptions, run_ray

    options = RunOptions(
        sources=list(sources),
        models=list(models),
        results=results,
        redis_url=redis,
        address=address,
        timeout_s=timeout_s,
        loop=loop,
    )
    run_ray(options, settings, Console())
    if results:
        console.print(f"results: {results}")


def _run_processes(settings: Settings, url: str, sources, models, results, timeout_s, loop=False):
    """With `loop` the sources never end: the run stops at `timeout_s` (or Ctrl-C) and drains."""
    from stream.stages.runner import run_processes

    async def main(redis_url: str):
        stop = asyncio.Event()
        events = asyncio.get_running_loop()
        events.add_signal_handler(signal.SIGINT, stop.set)
        events.add_signal_handler(signal.SIGTERM, stop.set)
        if loop and timeout_s is not None:
            events.call_later(timeout_s, stop.set)
        with console.status("running") as status:

            def progress(ledger) -> None:
                done = sum(t.results for t in ledger.tracks.values())
                status.update(f"running: {done} results")

            return await run_processes(
                settings,
                redis_url=redis_url,
                sources=sources,
                models=models,
                results_path=results,
                timeout_s=None if loop else timeout_s,
                stop=stop,
                on_progress=progress,
            )

    if url != "auto":
        return asyncio.run(main(url))
    server = RedisServer(
        aof=settings.redis.aof, password=settings.redis.password, maxmemory_mb=settings.redis.maxmemory_mb
    )
    with server:
        return asyncio.run(main(server.url))


def _check_models(settings: Settings, models: list[str]) -> None:
    """Fail fast with the zoo's message when a model has no weights; warn loudly about synthetic ones."""
    from stream.zoo.descriptors import load_spec
    from stream.zoo.store import locate_model, resolve_weights_dir

    for name in models:
        location = locate_model(
            load_spec(name),
            weights_dir=resolve_weights_dir(settings.models.weights_dir),
            cache_dir=settings.models.cache_dir,
            allow_synthetic=True,
        )
        if location.synthetic:
            console.print(
                f"[bold yellow]WARNING: {name} runs a synthetic stand-in with random weights: "
                "its labels mean nothing[/bold yellow]"
            )


def _demo_source(directory: Path) -> str:
    from stream.adapters.video import write_demo_clip

    return str(write_demo_clip(directory / "demo.mp4"))


def print_report(report) -> None:
    """The summary table: frames in/out, dead letters, drops, latency."""
    out = Console()
    table = Table(title="framestream run")
    for col in (
        "source",
        "model",
        "frames in",
        "results",
        "duplicates",
        "skipped",
        "p50 ms",
        "p99 ms",
        "max ms",
        "error",
    ):
        names = [getattr(r, col) for r in report.rows] if col in ("source", "model") else []
        table.add_column(  # names are what a user types next: never cut them
            col,
            justify="left" if col in ("source", "model", "error") else "right",
            no_wrap=bool(names),
            min_width=max((len(n) for n in names), default=None),
        )
    for r in report.rows:
        table.add_row(
            r.source,
            r.model,
            "-" if r.frames is None else str(r.frames),
            str(r.results),
            str(r.duplicates),
            str(r.skipped),
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            _ms(r.max_ms),
            r.error or "",
        )
    out.print(table)
    batch = f"{report.mean_batch_size:.1f}" if report.mean_batch_size else "-"
    out.print(
        f"{report.results} results in {report.wall_s:.1f} s ({report.frames_per_s:.1f} frames/s), "
        f"dead-lettered {report.dead_letters}, dropped {report.dropped}, mean batch {batch}, "
        f"latency p50 {_ms(report.p50_ms)} ms / p99 {_ms(report.p99_ms)} ms / max {_ms(report.max_ms)} ms"
        + (" (interrupted)" if report.interrupted else "")
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
