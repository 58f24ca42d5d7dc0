"""The `loadtest` command (also ``python -m loadtest``): record, replay, report, sweep, bench.

Exit codes: 0 = ran and every SLO held; 1 = ran but an SLO failed; 2 = could not run (bad
arguments, unreadable file, unreachable Redis, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from loadtest.bench.systems import ALL_SYSTEMS
from stream.errors import FramestreamError

__all__ = ["app", "main"]

app = typer.Typer(
    name="loadtest",
    help="Record frame streams, replay them open-loop into a framestream pipeline, report, sweep, bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
# in CI logs and pipes rich would wrap tables at 80 columns; keep rows on one line there
out = Console(width=None if sys.stdout.isatty() else 160)

REDIS_HELP = (
    "Attach to the pipeline at this Redis URL (default: FRAMESTREAM_REDIS__URL, else --embedded: a private "
    "redis-server and stage processes)."
)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


WEIGHTS_HELP = "Folder holding real model files (default: the settings' models.weights_dir)."


def _weights_dir(given: Path | None) -> Path | None:
    """--weights-dir, else the settings' ``models.weights_dir`` (FRAMESTREAM_MODELS__WEIGHTS_DIR)."""
    from stream.settings import load_settings

    return given if given is not None else load_settings().models.weights_dir


def _attached(url: str | None) -> str | None:
    """The Redis to attach to; None (or "auto", the settings' default) means embedded mode."""
    return None if not url or url == "auto" else url


def _pace(fps: float | None, speed: float, as_fast: bool) -> Any:
    from loadtest.schedule import Pace

    if as_fast and fps is not None:
        raise _fail("--max and --fps are exclusive")
    if as_fast:
        return Pace("max")
    if fps is not None:
        return Pace("fps", fps=fps)
    return Pace("original", speed=speed)


@app.command()
def record(
    source: str = typer.Argument(
        None, help="What to record: a video file, rtsp://..., webcam:N, an image folder or glob."
    ),
    output: Path = typer.Option(..., "--out", "-o", help="Replay file to write (.fsr)."),
    label: str | None = typer.Option(None, help="Ground-truth label for every frame."),
    labels: Path | None = typer.Option(None, help="Labels TSV: INDEX|FIRST-LAST|FILENAME<TAB>LABEL."),
    encoding: str = typer.Option("jpeg", help="Store frames as 'jpeg' or 'raw' (RGB)."),
    quality: int = typer.Option(90, min=1, max=100, help="JPEG quality when encoding frames."),
    max_frames: int | None = typer.Option(None, min=1, help="Stop after this many frames (live sources)."),
    every_nth: int = typer.Option(1, min=1, help="Keep one frame in N."),
    from_stream: bool = typer.Option(False, help="Record a pipeline's frames stream (XRANGE) instead."),
    redis: str | None = typer.Option(
        None, envvar="FRAMESTREAM_REDIS__URL", help="Redis URL for --from-stream."
    ),
    pipeline: str = typer.Option("p", help="Pipeline name (hash tag) for --from-stream."),
    source_id: list[str] = typer.Option([], help="With --from-stream: keep only these source ids."),
) -> None:
    """Capture a source, or an existing frames stream, into a replay file."""
    from loadtest.recorder import Labels, read_labels_tsv, record_source

    try:
        lab = read_labels_tsv(labels, default=label) if labels else Labels(default=label)
        if from_stream:
            if not redis:
                raise _fail("--from-stream needs --redis URL")
            rec = asyncio.run(
                _record_stream(redis, pipeline, output, set(source_id) or None, lab, max_frames)
            )
        else:
            if not source:
                raise _fail("give a SOURCE to record, or --from-stream --redis URL")
            rec = record_source(
                source, output, labels=lab, encoding=encoding, jpeg_quality=quality,
                max_frames=max_frames, every_nth=every_nth,
            )  # fmt: skip
    except FramestreamError as e:
        raise _fail(str(e)) from None
    out.print(
        f"recorded {rec.frames} frames ({rec.labelled} labelled, {rec.encoding}, "
        f"{rec.span_ms / 1000:.2f} s of source time) to {rec.path}",
        highlight=False,
    )


async def _record_stream(
    url: str, pipeline: str, output: Path, sources: set[str] | None, lab: Any, max_frames: int | None
) -> Any:
    from loadtest.recorder import record_stream
    from stream.adapters.redis.client import connect
    from stream.core.keys import PipelineKeys

    client = await connect(url)
    try:
        return await record_stream(
            client, PipelineKeys(pipeline), output, sources=sources, labels=lab, max_frames=max_frames
        )
    finally:
        await client.aclose()


@app.command()
def replay(
    files: list[Path] = typer.Argument(..., help="Replay files; source i plays file i % len(files)."),
    sources: int = typer.Option(1, "--sources", "-n", min=1, help="Concurrent sources (M)."),
    speed: float = typer.Option(1.0, help="Original timing sped up N times."),
    fps: float | None = typer.Option(None, help="Fixed rate per source instead of the original timing."),
    as_fast: bool = typer.Option(False, "--max", help="Send as fast as possible (not paced)."),
    duration: float | None = typer.Option(None, help="Loop the files until this many seconds."),
    loops: int = typer.Option(1, min=1, help="Passes over each file (without --duration)."),
    source_prefix: str | None = typer.Option(
        None, help="Source ids are PREFIX-0..M-1 (default lt-<random>)."
    ),
    redis: str | None = typer.Option(None, envvar="FRAMESTREAM_REDIS__URL", help=REDIS_HELP),
    embedded: bool = typer.Option(False, help="Start a private redis-server and the stage processes."),
    pipeline: str = typer.Option("p", help="Pipeline name (hash tag) to attach to."),
    model: str | None = typer.Option(None, help="Model (embedded mode runs it; attached, filters results)."),
    weights_dir: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    settle: float = typer.Option(5.0, help="After sending, wait this long without a new result."),
    timeout: float = typer.Option(120.0, help="After sending, wait at most this long for results."),
    p99_ms: float | None = typer.Option(None, help="SLO: fail if p99 end-to-end latency exceeds this."),
    min_fps: float | None = typer.Option(None, help="SLO: fail if result throughput is below this."),
    max_loss: float | None = typer.Option(None, help="SLO: fail if more than this fraction lacks a result."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the run's full result here."),
    report_dir: Path | None = typer.Option(None, "--report", help="Also write JSON+CSV+HTML here."),
) -> None:
    """Publish replay files open-loop into a pipeline and measure what comes out."""
    from loadtest.replayer import ReplayPlan
    from loadtest.session import replay_session

    pace = _pace(fps, speed, as_fast)
    try:
        plan = ReplayPlan(sources=sources, pace=pace, duration_s=duration, loops=loops)
        if source_prefix:
            plan = dataclasses.replace(plan, source_prefix=source_prefix)
        run = replay_session(
            files, plan, redis_url=None if embedded else _attached(redis), pipeline=pipeline, model=model,
            weights_dir=_weights_dir(weights_dir), settle_s=settle, timeout_s=timeout,
            slo={"max_p99_ms": p99_ms, "min_fps": min_fps, "max_loss": max_loss},
        )  # fmt: skip
    except (FramestreamError, ValueError) as e:
        raise _fail(str(e)) from None
    _finish(run, json_out, report_dir)


def _finish(run: dict[str, Any], json_out: Path | None, report_dir: Path | None) -> None:
    from loadtest.session import print_summary

    print_summary(run, out)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(run, indent=2, default=str))
    if report_dir is not None:
        from loadtest.report import write_report

        paths = write_report(run, report_dir)
        out.print(f"report: {paths['html']}", highlight=False)
    if not run["slo"]["passed"]:
        raise typer.Exit(1)


@app.command()
def report(
    run_json: Path = typer.Argument(..., help="A run written by `loadtest replay --json`."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Directory (default: next to RUN_JSON)."),
) -> None:
    """Turn a replay's JSON into summary.json, series.csv (per second) and report.html."""
    from loadtest.report import load_run, write_report

    try:
        run = load_run(run_json)
    except (OSError, ValueError) as e:
        raise _fail(str(e)) from None
    target = out_dir or run_json.with_suffix("")
    paths = write_report(run, target)
    for kind, path in paths.items():
        out.print(f"{kind}: {path}", highlight=False)


@app.command()
def sweep(
    files: list[Path] = typer.Argument(..., help="Replay files to play."),
    p99_ms: float = typer.Option(250.0, help="The SLO to hold: p99 end-to-end latency (ms)."),
    by: str = typer.Option("sources", help="'sources' (real-time sources at --source-fps) or 'fps'."),
    source_fps: float = typer.Option(30.0, help="Rate of each source when stepping --by sources."),
    start: float = typer.Option(1.0, help="First rate (sources, or fps)."),
    factor: float = typer.Option(2.0, help="Step up by this factor until the SLO fails, then bisect."),
    max_steps: int = typer.Option(8, min=1, help="At most this many rates."),
    confirm: int = typer.Option(1, min=0, help="Re-run a failing rate this many times before calling it."),
    step_duration: float = typer.Option(8.0, help="Seconds per run."),
    max_loss: float = typer.Option(0.0, help="A run also fails when more frames than this lack a result."),
    redis: str | None = typer.Option(None, envvar="FRAMESTREAM_REDIS__URL", help=REDIS_HELP),
    pipeline: str = typer.Option("p"),
    model: str | None = typer.Option(None),
    weights_dir: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    json_out: Path | None = typer.Option(None, "--json"),
    plot: Path | None = typer.Option(None, help="Write the latency-vs-offered-load plot (PNG) here."),
) -> None:
    """Find the highest open-loop rate that holds a p99 latency SLO."""
    from loadtest.sweep import run_sweep

    if by not in ("sources", "fps"):
        raise _fail(f"--by must be 'sources' or 'fps', got {by!r}")
    try:
        result = run_sweep(
            files, p99_ms=p99_ms, by=by, source_fps=source_fps, start=start, factor=factor,
            max_steps=max_steps, step_duration_s=step_duration, max_loss=max_loss, redis_url=_attached(redis),
            confirm=confirm, pipeline=pipeline, model=model, weights_dir=_weights_dir(weights_dir),
            console=out,
        )  # fmt: skip
    except (FramestreamError, ValueError) as e:
        raise _fail(str(e)) from None
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2, default=str))
    if plot is not None:
        from loadtest.sweep import plot_sweep

        plot.write_bytes(plot_sweep(result))
    if result.get("best") is None:
        raise typer.Exit(1)


@app.command()
def bench(
    clip: Path | None = typer.Option(None, help="Replay file or video to use (default: generate one)."),
    model: list[str] = typer.Option([], help="Models to bench (repeat); default: both real TFLite models."),
    weights_dir: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    frames: int = typer.Option(
        3000,
        min=10,
        help="Frames per measurement. framestream's figure is over the stretch while every stage is "
        "busy, which ends when ingest reads the last frame, up to ingest.high_water frames before "
        "the last result: below a few thousand frames a fast model's stretch lasts under a second.",
    ),
    systems: str = typer.Option("all", help="Comma-separated subset: " + ", ".join(ALL_SYSTEMS) + "."),
    repeat: int = typer.Option(1, min=1, help="Measure each system N times and keep the best."),
    json_out: Path | None = typer.Option(None, "--json"),
    markdown: Path | None = typer.Option(None, help="Write the markdown table here (docs/performance.md)."),
) -> None:
    """Measure framestream next to a naive loop, the best single-process loop, a plain Ray Serve
    deployment, benchmark_app on the bare model and the sum-of-parts ideal, on one clip."""
    from loadtest.bench.run import run_bench

    chosen = ALL_SYSTEMS if systems == "all" else tuple(s.strip() for s in systems.split(","))
    unknown = set(chosen) - set(ALL_SYSTEMS)
    if unknown:
        raise _fail(f"unknown systems {sorted(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    try:
        result = run_bench(
            clip=clip,
            models=model or None,
            weights_dir=_weights_dir(weights_dir),
            frames=frames,
            systems=chosen,
            console=out,
            repeat=repeat,
        )
    except (FramestreamError, ValueError) as e:
        raise _fail(str(e)) from None
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2, default=str))
    if markdown is not None:
        markdown.write_text(result["markdown"])


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
