"""`framestream run --runner processes`: every stage an OS process (`run_processes`), a private
redis-server unless told otherwise, a generated demo clip without sources, and the summary."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from stream.adapters.redis_server import RedisServer
from stream.adapters.source_registry import SourceSpec
from stream.errors import FramestreamError
from stream.runners import RunRequest
from stream.runners.processes import RunReport, run_processes
from stream.settings import Settings
from stream.stopping import on_stop_signal

__all__ = ["main", "print_report"]

console = Console(stderr=True)


def main(settings: Settings, request: RunRequest) -> int:
    """Play `request`; 0 when every source ended cleanly, 1 when one failed, 2 on an error."""
    models = request.models or [settings.models.default]
    try:
        _check_models(settings, models)
        with tempfile.TemporaryDirectory(prefix="framestream-demo-") as tmp:
            uris = request.sources or [_demo_source(Path(tmp))]
            sources = [SourceSpec(uri=s, loop=request.loop) for s in uris]
            url = request.redis or settings.redis.url
            report = _run(settings, url, sources, models, request.results, request.timeout_s, request.loop)
    except FramestreamError as e:
        console.print(f"[red]framestream run: {e}[/red]")
        return 2
    print_report(report)
    if request.results:
        console.print(f"results: {request.results}")
    return 1 if any(r.error for r in report.rows) else 0


def _run(settings: Settings, url: str, sources, models, results, timeout_s, loop=False):
    """With `loop` the sources never end: the run stops at `timeout_s` (or a stop signal,
    `stream.stopping`) and drains."""

    async def main(redis_url: str):
        stop = asyncio.Event()
        events = asyncio.get_running_loop()
        if loop and timeout_s is not None:
            events.call_later(timeout_s, stop.set)
        with (
            on_stop_signal(lambda: events.call_soon_threadsafe(stop.set)),
            console.status("running") as status,
        ):

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


def print_report(report: RunReport) -> None:
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
