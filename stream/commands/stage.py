"""`framestream stage NAME`: run one stage's consumer loop as a plain asyncio program (no Ray)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path

import typer

from stream.adapters.redis.client import connect_settings
from stream.adapters.redis.outage import REDIS_TRANSIENT
from stream.core.keys import PipelineKeys
from stream.errors import FramestreamError
from stream.settings import load_settings
from stream.stages import STAGES, StageLoop, build_stage
from stream.stages.base import run_resilient
from stream.stopping import exit_code, handle_stop_signals, on_stop_signal

__all__ = ["stage"]


def stage(
    name: str = typer.Argument(..., help=f"one of: {', '.join(STAGES)}, sinks (every configured sink)"),
    model: str | None = typer.Option(None, "--model", "-m", help="model of preprocess/infer/postprocess"),
    redis: str | None = typer.Option(None, "--redis", help="redis:// URL (default: FRAMESTREAM_REDIS__URL)"),
    consumer: str | None = typer.Option(None, "--consumer", help="consumer name (default: stage-host-pid)"),
    config: Path | None = typer.Option(None, "--config", help="settings YAML file"),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Run one stage until SIGTERM/SIGINT, then stop reading, drain, ack and exit 0; a second
    signal exits at once (130 / 143), leaving what it held pending for the others to reclaim."""
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {name} %(levelname)s %(message)s")
    try:
        settings = load_settings(config)
        url = redis or settings.redis.url
        if url == "auto":
            raise FramestreamError(
                "framestream stage needs a Redis the other stages share: pass --redis URL "
                "(or set FRAMESTREAM_REDIS__URL); `framestream run --redis auto` starts one for you"
            )
        who = consumer or f"{name}-{socket.gethostname()}-{os.getpid()}"
        with handle_stop_signals():
            processed = asyncio.run(_serve(name, settings, url, who, model))
    except FramestreamError as e:
        typer.echo(f"framestream stage {name}: {e}", err=True)
        raise typer.Exit(2) from e
    except KeyboardInterrupt as e:  # a stop signal before the loop ran, or a second one
        if code := exit_code(e):
            typer.echo(f"framestream stage {name}: stopped without draining ({e})", err=True)
            raise typer.Exit(code) from e
        return
    logging.getLogger(__name__).info("stopped after %d entries", processed)


def _build(name: str, settings, client, consumer: str, model: str | None) -> StageLoop:
    """The loop of stage `name`, or with ``sinks`` the delivery loop of every configured sink."""
    if name == "sinks":
        from stream.sinks.loop import SinkLoop

        return SinkLoop(settings, client, consumer=consumer)
    return build_stage(name, settings, client, consumer=consumer, model=model)


async def _serve(name: str, settings, url: str, consumer: str, model: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # a stop signal from here on drains: set before the loop runs, it ends as soon as it starts
    with on_stop_signal(lambda: loop.call_soon_threadsafe(stop.set)):
        client = await connect_settings(settings.redis, url)
        try:
            loop_ = _build(name, settings, client, consumer, model)
            keys = PipelineKeys(settings.streams.pipeline)
            start = getattr(loop_, "start", None)
            if start is not None:
                await start()  # groups, engine warm-up: done before we call ourselves ready
            await client.hset(keys.stage_ready, consumer, str(time.time() * 1000))  # the runner waits on this
            try:
                await run_resilient(loop_, stop, client)
                await loop_.leave_groups()  # drained: a stopped process is no consumer any more
            finally:
                with contextlib.suppress(*REDIS_TRANSIENT):  # a private Redis may be gone already
                    await client.hdel(keys.stage_ready, consumer)
            return loop_.processed
        finally:
            await client.aclose()
