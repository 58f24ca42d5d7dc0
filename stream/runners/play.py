"""`framestream run`, the same for every runner: models, Redis, demo clip, the run loop, the summary.

A runner says only where the stages run: it gives `play` a `StartStages`, an async context manager
factory that starts the stages (OS processes, or a Serve application on Ray), yields `Stages`
(replica counts for the progress view, a check that no stage died), and stops them on exit. The
rest is this module's: the models and their notice (`stream.runners.setup`), a private
redis-server unless ``--redis`` names one, the demo clip when no ``--source`` is given, the run
loop (`stream.runners.drive`), and the summary, as a table or with ``--json`` as one JSON document
on stdout (progress and notices go to stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console

from stream.adapters.redis.source_registry import SourceSpec
from stream.errors import FramestreamError
from stream.runners import RunRequest
from stream.runners.display import Summary, summary_dict, summary_table
from stream.runners.drive import DriveOptions, drive
from stream.runners.setup import choose_models, demo_clip, private_redis
from stream.settings import Settings

__all__ = ["StageSetup", "Stages", "StartStages", "play", "run_pipeline"]


class Stages(Protocol):
    """The stages of a run, wherever they run."""

    @property
    def logs_hint(self) -> str:
        """Where a user finds the stages' logs (named when the pipeline stalls)."""
        ...

    def replicas(self, model: str) -> dict[str, int]:
        """Running replicas per stage deployment (``Ingest``, ``Preprocess``, ...) for `model`."""
        ...

    def check(self) -> None:
        """Raise `FramestreamError` when a stage is gone for good."""
        ...

    @property
    def adds_models(self) -> bool:
        """Whether `add_model` can start a model beside the running ones (not when the stages
        are a cluster's own applications, which this run does not deploy)."""
        ...

    async def add_model(self, model: str) -> None:
        """Start serving `model` too, without touching the running models' stages; returns once
        its stages run (``POST /v1/models/{name}``, `stream.runners.more_models`)."""
        ...


@dataclass(frozen=True)
class StageSetup:
    """What a runner needs to start the stages."""

    settings: Settings
    redis_url: str
    models: list[str]
    console: Console


StartStages = Callable[[StageSetup], AbstractAsyncContextManager[Stages]]


def play(settings: Settings, request: RunRequest, start: StartStages, *, runner: str) -> int:
    """Play `request` with the stages `start` starts; print the summary. Exit code: 0 when every
    source ended cleanly, 1 when one failed, 2 when the run could not run."""
    console = Console(stderr=True)
    try:
        # whatever else prints while the run goes on (Ray's raylet notes) goes to stderr too: stdout
        # holds the summary alone, so `--json` output parses and a table redirected to a file is clean
        with contextlib.redirect_stdout(sys.stderr):
            summary = run_pipeline(settings, request, start, console, runner=runner)
    except FramestreamError as e:
        console.print(f"[red]framestream run: {e}[/red]")
        return 2
    if request.json:
        print(json.dumps(summary_dict(summary), indent=2))
    else:
        Console(soft_wrap=False).print(summary_table(summary))
    if request.results:
        console.print(f"results: {request.results}")
    if request.segments:
        console.print(f"segments: {request.segments}")
    return 1 if summary.failed else 0


def run_pipeline(
    settings: Settings, request: RunRequest, start: StartStages, console: Console, *, runner: str = ""
) -> Summary:
    """What `play` runs, for a caller that wants the `Summary` (the benchmarks)."""
    summary = asyncio.run(_play(settings, request, start, console, runner))
    summary.runner = runner
    return summary


async def _play(
    settings: Settings, request: RunRequest, start: StartStages, console: Console, runner: str
) -> Summary:
    with contextlib.ExitStack() as stack:
        redis_url = request.redis or settings.redis.url
        if redis_url == "auto":
            server = stack.enter_context(private_redis(settings))
            redis_url = server.url
            console.print(f"redis-server (private) at 127.0.0.1:{server.port}")
        models, synthetic = choose_models(list(request.models), settings, console)
        sources: list[str | SourceSpec] = list(request.sources)
        if not sources:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="framestream-run-")))
            sources.append(demo_clip(tmp, console))
        async with start(StageSetup(settings, redis_url, models, console)) as stages:
            options = DriveOptions(
                models=models,
                synthetic=synthetic,
                replicas=stages.replicas,
                check_stages=stages.check,
                logs_hint=stages.logs_hint,
                results=request.results,
                segments=request.segments,
                timeout_s=request.timeout_s,
                loop=request.loop,
                # a plugin runner's stages may lack `adds_models`: they add no model
                add_model=stages.add_model if getattr(stages, "adds_models", False) else None,
                runner=runner,
            )
            played = await drive(options, settings, redis_url, sources, console)
        return played.summary
