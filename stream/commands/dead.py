"""`framestream dead list | show ID | retry ID|--all`: the dead letters of every partition.

The Redis side is `stream.adapters.redis.dead_letters.DeadLetters`, which the HTTP API uses too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from stream.errors import DeadLetterError, FramestreamError
from stream.tables import Column, print_table

__all__ = ["app", "format_age"]

app = typer.Typer(help="List, show and retry dead letters (entries a stage could not handle).",
                  no_args_is_help=True)  # fmt: skip

_T = TypeVar("_T")

_REDIS = typer.Option(None, "--redis", help="redis:// URL (default: FRAMESTREAM_REDIS__URL)")
_CONFIG = typer.Option(None, "--config", help="settings YAML file")
_STAGE = typer.Option(None, "--stage", help="only dead letters of this stage (ingest, preprocess, ...)")

_COLUMNS = (
    Column("id", key=True),
    Column("stage"),
    Column("reason"),
    Column("source", key=True),
    Column("seq", justify="right"),
    Column("age", justify="right"),
)


def format_age(seconds: float) -> str:
    """A short age: 42s, 17m, 5h, 3d."""
    for unit, size, limit in (("s", 1, 90), ("m", 60, 90 * 60), ("h", 3600, 36 * 3600)):
        if seconds < limit:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds // 86_400)}d"


def _run(config: Path | None, redis: str | None, work: Callable[[Any], Awaitable[_T]]) -> _T:
    """Connect to the pipeline's Redis, call `work(DeadLetters)`, close; errors exit 2 with the reason."""
    from stream.adapters.redis.client import connect_settings
    from stream.adapters.redis.dead_letters import DeadLetters
    from stream.adapters.redis.partitions import recorded_keys
    from stream.settings import load_settings

    async def go() -> _T:
        settings = load_settings(config)
        url = redis or settings.redis.url
        if url == "auto":
            raise FramestreamError(
                "framestream dead needs the pipeline's Redis: pass --redis URL "
                "(or set FRAMESTREAM_REDIS__URL)"
            )
        client = await connect_settings(settings.redis, url)
        try:
            keys = await recorded_keys(client, settings.streams.pipeline)
            return await work(DeadLetters(client, keys))
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except DeadLetterError as e:
        typer.echo(f"framestream dead: {e}", err=True)
        raise typer.Exit(1) from e
    except (FramestreamError, ValueError) as e:
        typer.echo(f"framestream dead: {e}", err=True)
        raise typer.Exit(2) from e


@app.command("list")
def list_(
    stage: str | None = _STAGE,
    limit: int = typer.Option(100, "--limit", min=1, help="show the newest N"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per dead letter, a list"),
    redis: str | None = _REDIS,
    config: Path | None = _CONFIG,
) -> None:
    """The newest dead letters of every partition, oldest first: id, stage, reason, source, seq, age."""

    async def work(dead: Any) -> tuple[int, list[Any]]:
        return await dead.count(), await dead.newest(limit=limit, stage=stage)

    total, records = _run(config, redis, work)
    now = time.time() * 1000.0
    if as_json:
        typer.echo(json.dumps([r.summary(now) for r in records], indent=2))
        return
    if not records:
        typer.echo("no dead letters" + (f" of stage {stage}" if stage else ""))
        return
    rows = [
        [r.ref, r.stage, r.reason, r.source or "-", "-" if r.seq is None else str(r.seq),
         format_age(max(0.0, now - r.dead_ms) / 1000.0)]
        for r in records
    ]  # fmt: skip
    print_table(_COLUMNS, rows, title=f"{len(records)} of {total} dead letters")


@app.command("show")
def show(
    ref: str = typer.Argument(..., metavar="ID", help="a dead letter's id, as `list` shows it"),
    redis: str | None = _REDIS,
    config: Path | None = _CONFIG,
) -> None:
    """One dead letter in full, as JSON: origin, reason, the payload's header and size.

    A payload is decoded as a framestream message only (never unpickled), else summarised by size.
    """

    async def work(dead: Any) -> Any:
        return await dead.get(ref)

    record = _run(config, redis, work)
    typer.echo(json.dumps(record.detail(time.time() * 1000.0), indent=2))


@app.command("retry")
def retry(
    ref: str | None = typer.Argument(None, metavar="ID", help="the dead letter to retry"),
    all_: bool = typer.Option(False, "--all", help="retry every dead letter (of --stage)"),
    stage: str | None = _STAGE,
    redis: str | None = _REDIS,
    config: Path | None = _CONFIG,
) -> None:
    """Put dead letters back on the stream they came from; each is deleted once its copy is written.

    One still bad is dead-lettered again by its stage, with the reason.
    Exits 1 if any could not be retried.
    """
    if (ref is None) == (not all_) or (stage and not all_):
        typer.echo("framestream dead retry: give one ID, or --all [--stage S]", err=True)
        raise typer.Exit(2)

    async def work(dead: Any) -> list[Any]:
        return [await dead.retry(ref)] if ref is not None else await dead.retry_all(stage=stage)

    outcomes = _run(config, redis, work)
    for o in outcomes:
        if o.error is None:
            typer.echo(f"retried {o.ref} -> {o.stream} {o.new_id}")
        else:
            typer.echo(f"not retried {o.ref}: {o.error}", err=True)
    if all_:
        failed = sum(o.error is not None for o in outcomes)
        typer.echo(f"{len(outcomes) - failed} retried, {failed} not retried")
    if any(o.error is not None for o in outcomes):
        raise typer.Exit(1)
